//! The bindings: every class, method and function Python sees of `firebreak._native`, and the
//! host callback (py/host.rs: host.rs `Host` with pyo3, `PyHost` and `Remote`). Its types are in engine/firebreak/_native.pyi,
//! checked against the built module by tests/unit/native/test_native_stub.py.

mod core;
mod host;
mod rootcause;
mod router;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

// The native decoder refuses an event (Python's decoder gives the reason): a ValueError of its
// own, so that callers tell it apart from errors raised while writing records.
pyo3::create_exception!(_native, EventRefused, PyValueError);

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    crate::tune_allocator();
    m.add_class::<core::Core>()?;
    m.add_class::<core::FedLines>()?;
    m.add_class::<core::TakenRouted>()?;
    m.add_class::<core::FedOne>()?;
    m.add_class::<core::Life>()?;
    m.add_class::<core::Snapshot>()?;
    m.add_class::<core::Memory>()?;
    m.add_class::<router::RoutedBatch>()?;
    m.add_class::<router::NativeRouter>()?;
    m.add_class::<rootcause::PyColumns>()?;
    m.add("EventRefused", m.py().get_type::<EventRefused>())?;
    m.add("PLAN_VERSION", crate::plan::PLAN_VERSION)?;
    m.add("SNAPSHOT_VERSION", crate::snapshot::SNAPSHOT_VERSION)?;
    Ok(())
}
