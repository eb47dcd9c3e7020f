//! The host: what the engine asks of Python (the lifecycle and its records, p-values, `str()`
//! of unusual values), with the GIL held throughout (`Host`) or taken for each call (`Remote`).

use crate::json::J;
use pyo3::prelude::*;

/// What the Python side does for the native engine: the lifecycle and its records,
/// p-values (the exact arithmetic of significance.py), and `str()` of unusual values.
pub struct Host<'py> {
    pub py: Python<'py>,
    pub obj: &'py Bound<'py, PyAny>,
}

/// The host as the engine's functions ask for it: with the GIL held throughout (`Host`), or
/// taking it only for each call into Python (`Remote`: an engine running on a thread of its
/// own while another runs other rules, `Engine::feed_split`).
pub trait HostLike {
    fn with<R>(&self, f: impl FnOnce(&Host) -> R) -> R;
    fn py_str(&self, value: &J) -> String {
        self.with(|h| h.py_str(value))
    }
}

impl HostLike for Host<'_> {
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&Host) -> R) -> R {
        f(self)
    }
    fn py_str(&self, value: &J) -> String {
        Host::py_str(self, value)
    }
}

/// The host object of a thread that holds the GIL only while it calls into Python.
pub struct Remote<'a>(pub &'a Py<PyAny>);

impl HostLike for Remote<'_> {
    fn with<R>(&self, f: impl FnOnce(&Host) -> R) -> R {
        Python::with_gil(|py| {
            let obj = self.0.bind(py);
            f(&Host { py, obj })
        })
    }
}

/// A record and where it goes among the records of one feed: (event sequence number, step
/// time, rule index) — the core's order, by which the records of engines that ran disjoint
/// rules side by side are merged.
pub type Rec = (u64, i64, u32, PyObject);

impl<'py> Host<'py> {
    pub fn py_str(&self, value: &J) -> String {
        let text = serde_json::to_vec(&value.to_value()).unwrap_or_default();
        self.obj
            .call_method1("py_str", (pyo3::types::PyBytes::new(self.py, &text),))
            .and_then(|s| s.extract::<String>())
            .unwrap_or_default()
    }
}
