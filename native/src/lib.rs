//! engine._native: Firebreak's native detection core, loaded by engine/native.
//!
//! `Core` takes rule plans (engine/native/plan.py) and raw JSON lines in batches, and
//! gives back the records of the Python core, byte for byte. See docs/native.md.

mod engine;
mod event;
mod groups;
mod json;
mod plan;
mod route;
mod schedule;
mod sketch;
mod smallstr;
mod snapshot;
mod value;
mod window;

use engine::{Engine, Host};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

// Many small short-lived allocations (decoded events) beside many small long-lived ones
// (buckets, evidence): mimalloc's per-size free lists serve both faster than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn blank(raw: &[u8]) -> bool {
    raw.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
}

#[pyclass(module = "engine._native", unsendable)]
struct Core {
    engine: Engine,
    host: PyObject,
}

#[pymethods]
impl Core {
    /// ``plans``: the JSON list of rule plans; ``host``: engine.native's helper object.
    #[new]
    fn new(plans: &[u8], lateness_ms: i64, host: PyObject) -> PyResult<Core> {
        let plans = plan::parse_plans(plans).map_err(PyValueError::new_err)?;
        Ok(Core {
            engine: Engine::new(plans, lateness_ms),
            host,
        })
    }

    /// Why a plan cannot run here (None: it can).
    #[staticmethod]
    fn check_plan(plan: &[u8]) -> Option<String> {
        let value = event::parse_json(plan)?;
        plan::Plan::parse(&value).err()
    }

    /// Feed ``lines[start:]``; stop at the first line the native decoder does not accept.
    /// Returns (that line's index or None, records, late [(index, ts, watermark)], events taken).
    #[pyo3(signature = (lines, start, max_bytes=None))]
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        lines: &Bound<'py, PyList>,
        start: usize,
        max_bytes: Option<usize>,
    ) -> PyResult<(
        Option<usize>,
        Bound<'py, PyList>,
        Vec<(usize, i64, i64)>,
        usize,
    )> {
        let out = PyList::empty(py);
        let host_obj = self.host.bind(py);
        let host = Host { py, obj: host_obj };
        let mut late = Vec::new();
        let mut events = 0;
        for index in start..lines.len() {
            let item = lines.get_item(index)?;
            let raw = item.downcast::<PyBytes>()?.as_bytes();
            if blank(raw) {
                continue;
            }
            if max_bytes.is_some_and(|m| raw.len() > m) {
                return Ok((Some(index), out, late, events));
            }
            let Some(event) = event::decode(raw, None) else {
                return Ok((Some(index), out, late, events));
            };
            if self.engine.is_late(event.ts) {
                late.push((index, event.ts, self.engine.watermark.unwrap_or(0)));
                continue;
            }
            events += 1;
            self.engine.process(&event, &host, &out)?;
        }
        Ok((None, out, late, events))
    }

    /// One event the Python decoder accepted (``ts`` its time). Returns (records, late?:
    /// (ts, watermark) or None).
    fn feed_one<'py>(
        &mut self,
        py: Python<'py>,
        raw: &[u8],
        ts: i64,
    ) -> PyResult<(Bound<'py, PyList>, Option<(i64, i64)>)> {
        let out = PyList::empty(py);
        let event = event::decode(raw, Some(ts))
            .ok_or_else(|| PyValueError::new_err("the native decoder refuses this event"))?;
        if self.engine.is_late(event.ts) {
            return Ok((out, Some((event.ts, self.engine.watermark.unwrap_or(0)))));
        }
        let host_obj = self.host.bind(py);
        self.engine
            .process(&event, &Host { py, obj: host_obj }, &out)?;
        Ok((out, None))
    }

    /// Aggregate only the (rule, group) pairs of shard ``shard`` of ``shards`` (the worker).
    fn set_owner(&mut self, shard: u32, shards: u32) {
        let owners = route::Owners::new(self.engine.rules.len(), shards);
        self.engine.owner = Some(route::Owner { shard, owners });
    }

    /// The events of a routed payload (the lines after its header), without moving time;
    /// those before ``min_offset`` (of their input partition) were taken already. ``masks``:
    /// look only at the rules each line's mask names (stage 1 had the same rules). Returns
    /// (the next input offset to take, events taken, late, duplicates).
    #[pyo3(signature = (body, min_offset, masks=true))]
    fn feed_routed(
        &mut self,
        py: Python<'_>,
        body: &[u8],
        min_offset: i64,
        masks: bool,
    ) -> PyResult<(i64, usize, usize, usize)> {
        let host_obj = self.host.bind(py);
        route::feed_payload(
            &mut self.engine,
            body,
            min_offset,
            masks,
            &Host { py, obj: host_obj },
        )
    }

    fn advance<'py>(&mut self, py: Python<'py>, watermark: i64) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let host_obj = self.host.bind(py);
        self.engine
            .advance(watermark, &Host { py, obj: host_obj }, &out)?;
        Ok(out)
    }

    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let host_obj = self.host.bind(py);
        self.engine.finish(&Host { py, obj: host_obj }, &out)?;
        Ok(out)
    }

    #[getter]
    fn watermark(&self) -> Option<i64> {
        self.engine.watermark
    }

    #[getter]
    fn max_ts(&self) -> Option<i64> {
        self.engine.max_ts
    }

    #[setter]
    fn set_max_ts(&mut self, max_ts: Option<i64>) {
        self.engine.max_ts = max_ts;
    }

    #[getter]
    fn opened<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (k, v) in &self.engine.opened {
            dict.set_item(k, v)?;
        }
        Ok(dict)
    }

    /// (rule index, group dict, Lifecycle) of every pending or firing group, rules in
    /// order, groups in the core's order.
    fn lives<'py>(&self, py: Python<'py>) -> Vec<(usize, PyObject, PyObject)> {
        let mut out = Vec::new();
        for (index, state) in self.engine.rules.iter().enumerate() {
            let table = &self.engine.key_tables[state.plan.by_id];
            let mut keys: Vec<u32> = state
                .groups
                .iter()
                .filter(|(_, g)| g.life.is_some() && g.dict.is_some())
                .map(|(k, _)| k)
                .collect(); // only these are listed: sort only them
            keys.sort_by(|a, b| {
                table.info[*a as usize]
                    .order
                    .cmp(&table.info[*b as usize].order)
            });
            for key in keys {
                let group = state.groups.get(key).unwrap();
                if let (Some(life), Some(dict)) = (&group.life, &group.dict) {
                    out.push((index, dict.clone_ref(py), life.clone_ref(py)));
                }
            }
        }
        out
    }

    /// The state as JSON in the Python core's snapshot layout (rules as a list, in order;
    /// each group's `life` the index of its Lifecycle in the second value, or null).
    fn snapshot<'py>(&self, py: Python<'py>) -> (Bound<'py, PyBytes>, Vec<PyObject>) {
        let (json, lives) = snapshot::write(&self.engine, py);
        (PyBytes::new(py, &json), lives)
    }

    /// Restore from `snapshot`'s layout; rules missing from it (or changed: left out by the
    /// caller) start afresh.
    fn restore(&mut self, py: Python<'_>, json: &[u8], lives: Vec<PyObject>) -> PyResult<()> {
        let host_obj = self.host.bind(py);
        snapshot::read(&mut self.engine, json, lives, &Host { py, obj: host_obj })
            .map_err(PyValueError::new_err)
    }

    /// Bytes of state per (rule, group) now held: (groups, buckets, estimated bytes).
    fn memory(&self) -> (usize, usize, usize) {
        snapshot::memory(&self.engine)
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_class::<route::NativeRouter>()?;
    m.add("PLAN_VERSION", plan::PLAN_VERSION)?;
    m.add("SNAPSHOT_VERSION", snapshot::SNAPSHOT_VERSION)?;
    Ok(())
}
