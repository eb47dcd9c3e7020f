//! The host callback in Python: the engine's `Host` (host.rs) implemented with pyo3 over the
//! Python host object (firebreak/native `_Host`: `step`, `p_value`, `py_str`), with the GIL
//! held throughout (`PyHost`) or taken for each batch of calls (`Remote`: an engine running on
//! a thread of its own, `Core::feed_split`, or without the GIL, `Core::advance`).

use crate::host::Status;
use crate::host::{Calls, Host, Step, Stepped, Text};
use crate::json::J;
use crate::value::{KeyPart, Num, Path};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

/// The Python host object with the GIL held.
pub struct PyHost<'py> {
    pub py: Python<'py>,
    pub obj: &'py Bound<'py, PyAny>,
}

/// The host object of a thread that holds the GIL only while it calls into Python.
pub struct Remote<'a>(pub &'a Py<PyAny>);

fn py_str(py: Python, obj: &Bound<PyAny>, value: &J) -> String {
    let text = serde_json::to_vec(&value.to_value()).unwrap_or_default();
    obj.call_method1("py_str", (PyBytes::new(py, &text),))
        .and_then(|s| s.extract::<String>())
        .unwrap_or_default()
}

impl Text for PyHost<'_> {
    fn py_str(&self, value: &J) -> String {
        py_str(self.py, self.obj, value)
    }
}

impl Host for PyHost<'_> {
    type Obj = PyObject;
    type Error = PyErr;
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&dyn Calls<PyObject, PyErr>) -> R) -> R {
        f(self)
    }
}

impl Text for Remote<'_> {
    fn py_str(&self, value: &J) -> String {
        Python::with_gil(|py| py_str(py, self.0.bind(py), value))
    }
}

impl Host for Remote<'_> {
    type Obj = PyObject;
    type Error = PyErr;
    fn with<R>(&self, f: impl FnOnce(&dyn Calls<PyObject, PyErr>) -> R) -> R {
        Python::with_gil(|py| f(&PyHost { py, obj: self.0.bind(py) }))
    }
}

pub fn num_py(py: Python, n: Num) -> PyObject {
    match n {
        Num::Int(i) => i.into_pyobject(py).unwrap().into_any().unbind(),
        Num::Float(x) => x.into_pyobject(py).unwrap().into_any().unbind(),
    }
}

impl Calls<PyObject, PyErr> for PyHost<'_> {
    fn group_values(&self, names: &[Path], parts: &[KeyPart]) -> PyResult<PyObject> {
        let py = self.py;
        let dict = PyDict::new(py);
        for (path, part) in names.iter().zip(parts) {
            let value: PyObject = match part {
                KeyPart::None => py.None(),
                KeyPart::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
                KeyPart::Num(n) => num_py(py, *n),
                KeyPart::Str(s) => s.into_pyobject(py)?.into_any().unbind(),
            };
            dict.set_item(path.join("."), value)?;
        }
        Ok(dict.into_any().unbind())
    }

    fn step(&self, step: Step<'_, PyObject>, records: &mut Vec<PyObject>) -> PyResult<Stepped<PyObject>> {
        let py = self.py;
        // ids; for a rule with scope dimensions (id, [its event's values of them])
        let evidence: PyObject = if !step.scoped {
            let ids: Vec<&str> = step.evidence.iter().map(|e| e.id()).collect();
            ids.into_pyobject(py)?.into_any().unbind()
        } else {
            let items: Vec<(&str, Vec<Option<&str>>)> = step
                .evidence
                .iter()
                .map(|e| {
                    let values = e.text.scope().map(|s| s.collect()).unwrap_or_default();
                    (e.id(), values)
                })
                .collect();
            items.into_pyobject(py)?.into_any().unbind()
        };
        let args = (
            step.rule,
            step.group.clone_ref(py),
            step.life.map(|l| l.clone_ref(py)),
            step.at,
            step.value.map(|v| num_py(py, v)),
            step.limit,
            step.baseline,
            step.holds,
            (step.p_value, step.reference),
            (
                step.n,
                step.hits,
                step.vn,
                step.total,
                step.lo.map(|v| num_py(py, v)),
                step.hi.map(|v| num_py(py, v)),
                step.sq,
            ),
            step.users.to_vec(),
            evidence,
        );
        let result = self.obj.call_method1("step", args)?;
        let result = result.downcast::<PyTuple>()?;
        for record in result.get_item(0)?.downcast::<PyList>()?.iter() {
            records.push(record.unbind());
        }
        let status: String = result.get_item(1)?.extract()?;
        Ok(Stepped {
            status: status_of(&status),
            opened: result.get_item(2)?.extract()?,
            frozen_baseline: result.get_item(3)?.extract()?,
            life: result.get_item(4)?.unbind(),
            ended: result.get_item(5)?.extract()?,
        })
    }

    fn p_value(&self, rule: usize, k: i64, n: i64, reference: f64) -> PyResult<f64> {
        self.obj.call_method1("p_value", (rule, k, n, reference))?.extract()
    }

    fn p_value_two(&self, rule: usize, k: i64, n: i64, k_ref: i64, exposure_ref: f64) -> PyResult<f64> {
        self.obj
            .call_method1("p_value_two", (rule, k, n, k_ref, exposure_ref))?
            .extract()
    }

    fn p_value_mean(&self, rule: usize, vn: i64, total: i128, sq: i128, limit: f64) -> PyResult<f64> {
        self.obj
            .call_method1("p_value_mean", (rule, vn, total, sq, limit))?
            .extract()
    }

    fn life_state(&self, life: &PyObject) -> Result<(Status, Option<f64>), String> {
        let bound = life.bind(self.py);
        let status: String = bound.getattr("status").and_then(|s| s.extract()).map_err(|e| e.to_string())?;
        let frozen = bound.getattr("frozen_baseline").and_then(|s| s.extract()).map_err(|e| e.to_string())?;
        Ok((status_of(&status), frozen))
    }

    fn share(&self, obj: &PyObject) -> PyObject {
        obj.clone_ref(self.py)
    }
}

fn status_of(name: &str) -> Status {
    match name {
        "pending" => Status::Pending,
        "firing" => Status::Firing,
        _ => Status::Inactive,
    }
}
