//! The host: what the engine asks of whoever runs it — the lifecycle and its records, p-values,
//! `str()` of unusual values — as traits with their own handle type (`Host::Obj`), so that the
//! engine, routing and snapshots know nothing of Python. The bindings implement them with pyo3
//! (py/host.rs); the crate's unit tests with a small host of their own (engine.rs tests).

use crate::json::J;
use crate::value::{KeyPart, Num, Path};
use crate::window::Evidence;

/// `str()` of a value that is not a string (a group-key part), as the host writes it: all that
/// routing asks of the host (route.rs, keys.rs).
pub trait Text {
    fn py_str(&self, value: &J) -> String;
}

/// The host as the engine's functions ask for it. ``with`` readies it for several calls in a
/// row (Python: the GIL held for them, taken once — `Remote` takes it only then).
pub trait Host: Text {
    /// A host object the engine holds for it: a group's lifecycle, a group's values, a record.
    type Obj;
    type Error;
    fn with<R>(&self, f: impl FnOnce(&dyn Calls<Self::Obj, Self::Error>) -> R) -> R;
}

/// A group's lifecycle status (incidents.Lifecycle `status`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Status {
    Inactive,
    Pending,
    Firing,
}

/// One evaluation step of a group whose reading holds, or that is pending or firing, as the
/// lifecycle (incidents.evaluate_group) is asked it.
pub struct Step<'a, O> {
    pub rule: usize,
    pub group: &'a O,       // the group's values (`Calls::group_values`)
    pub life: Option<&'a O>, // its lifecycle while pending or firing
    pub at: i64,
    pub value: Option<Num>,
    pub limit: Option<f64>,
    pub baseline: Option<f64>,
    pub holds: bool,
    pub p_value: Option<f64>,
    /// The measured reference's counts the test compared the window with: (observed,
    /// exposure, least) — `incidents.Counts`.
    pub reference: Option<(i64, f64, i64)>,
    pub n: i64,
    pub hits: i64,
    pub vn: i64,
    pub total: i128,
    pub sq: i128, // the values' sum of squares, for a rule that keeps them (else 0)
    pub lo: Option<Num>,
    pub hi: Option<Num>,
    pub users: &'a [u64],
    /// The window's evidence: ids; for a rule with scope dimensions (``scoped``) also its
    /// event's values of them.
    pub evidence: &'a [Evidence],
    pub scoped: bool,
}

/// What the lifecycle decided at a step (its records go to the `records` of `Calls::step`).
pub struct Stepped<O> {
    pub status: Status,
    pub opened: bool,
    pub frozen_baseline: Option<f64>,
    pub life: O,
    /// The span an incident that ended covered: (start, end, its baseline at onset).
    pub ended: Option<(i64, i64, Option<f64>)>,
}

/// The calls of a readied host (`Host::with`).
pub trait Calls<O, E> {
    /// The group's values as records show them (`by` paths joined with dots → key parts).
    fn group_values(&self, names: &[Path], parts: &[KeyPart]) -> Result<O, E>;
    /// The lifecycle at one step; its records are pushed to ``records``.
    fn step(&self, step: Step<'_, O>, records: &mut Vec<O>) -> Result<Stepped<O>, E>;
    /// The one-sided p-value of the rule's significance test (significance.py).
    fn p_value(&self, rule: usize, k: i64, n: i64, reference: f64) -> Result<f64, E>;
    /// The two-sample p-value of a window (``k`` counted of ``n`` events) against a measured
    /// reference's ``k_ref`` (at least its `least`) over ``exposure_ref`` (incidents.reference_p_value).
    fn p_value_two(&self, rule: usize, k: i64, n: i64, k_ref: i64, exposure_ref: f64) -> Result<f64, E>;
    /// The one-sided p-value of a window's mean against ``limit``: Student's t from its
    /// ``vn`` values' sum ``total`` and sum of squares ``sq`` (significance.mean_p_value).
    fn p_value_mean(&self, rule: usize, vn: i64, total: i128, sq: i128, limit: f64) -> Result<f64, E>;
    /// A lifecycle restored from a snapshot: its status and frozen baseline.
    fn life_state(&self, life: &O) -> Result<(Status, Option<f64>), String>;
    /// Another handle to the same object.
    fn share(&self, obj: &O) -> O;
}

/// A record and where it goes among the records of one feed: (event sequence number, step
/// time, rule index) — the core's order, by which the records of engines that ran disjoint
/// rules side by side are merged.
pub type Rec<O> = (u64, i64, u32, O);
