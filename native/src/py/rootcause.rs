//! `Columns` for Python: the root-cause tallies of rootcause.rs (engine/firebreak/investigate/rootcause.py).

use crate::rootcause::{Columns, Tally};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

#[pyclass(name = "Columns", module = "firebreak._native")]
pub struct PyColumns(Columns);

#[pymethods]
impl PyColumns {
    /// ``codes``: one column per dimension (a code per event, -1 for none); ``cards``: the
    /// number of codes of each dimension; ``now``: the event is in the incident period;
    /// ``weight``: its anomaly mass.
    #[new]
    fn new(codes: Vec<Vec<i32>>, cards: Vec<usize>, now: Vec<bool>, weight: Vec<f64>) -> PyResult<Self> {
        Columns::new(codes, cards, now, weight).map(PyColumns).map_err(PyValueError::new_err)
    }

    /// Dimension ``d``'s codes mapped through ``mapping`` (old code → new code or -1).
    fn recode(&mut self, d: usize, mapping: Vec<i32>, card: usize) -> PyResult<()> {
        self.0.recode(d, mapping, card).map_err(PyValueError::new_err)
    }

    /// The tally of the remaining events carrying every pair of ``pattern``.
    fn tally(&self, pattern: Vec<(usize, i32)>) -> PyResult<Tally> {
        self.0.tally(pattern).map_err(PyValueError::new_err)
    }

    /// Per dimension, per code: the tally of the remaining events carrying ``pattern`` and
    /// that code.
    fn marginals(&self, pattern: Vec<(usize, i32)>) -> PyResult<Vec<Vec<Tally>>> {
        self.0.marginals(pattern).map_err(PyValueError::new_err)
    }

    /// The remaining events carrying ``pattern`` are explained: no longer counted.
    fn remove(&mut self, pattern: Vec<(usize, i32)>) -> PyResult<()> {
        self.0.remove(pattern).map_err(PyValueError::new_err)
    }

    /// Every event counted again.
    fn reset(&mut self) {
        self.0.reset()
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }
}
