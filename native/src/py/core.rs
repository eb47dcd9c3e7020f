//! `Core` for Python: one rule set's engine (engine.rs), fed lines in batches, on one thread or
//! split over two (`Split`), and the worker's entry points (`take_routed`, `advance`).

use super::EventRefused;
use super::host::{PyHost, Remote};
use crate::engine::{self, Rec as Record};
use crate::host::{Calls, Host};
use crate::{event, plan, route, snapshot};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

/// The engine with Python objects for its host's handles (lifecycles, group values, records).
type Engine = engine::Engine<PyObject>;
type Rec = Record<PyObject>;


fn blank(raw: &[u8]) -> bool {
    raw.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
}

#[pyclass(module = "firebreak._native")]
pub struct Core {
    engine: Engine,
    host: PyObject,
    split: Option<Split>,
}

/// Batches of at least this many lines run on two threads when the rules are split.
const SPLIT_LINES: usize = 16;

/// The rules split over two threads for `feed` (docs/native.md, Threads): the rules of some
/// `by` lists stay in the engine, the others move to ``twin`` for the time of one batch, each
/// engine looking only at its own rules (a mask) and every event; their records are merged
/// in the core's order (`Rec`). Rules are independent until the lifecycle, and the lifecycle
/// of one group touches nothing of another's, so the records are the same as on one thread
/// — however the lists are split, which `rebalance` changes between batches.
struct Split {
    side: Vec<usize>,   // per `by` list: 0 the engine, 1 the twin
    weight: Vec<f64>,   // per `by` list: its rules' weight (`Split::new`)
    mask: [engine::RuleMask; 2], // the rules of the engine, of the twin
    rules: Vec<usize>,  // the twin's rules
    tables: Vec<usize>, // the twin's key tables (`by` lists)
    twin: Engine,       // the twin's rules while a batch runs; blank states in between
    cpu: [f64; 2],      // CPU seconds of each side's thread in `feed` so far
    recent: [f64; 2],   // ... since `rebalance` last looked
    batches: usize,     // batches since `rebalance` last looked
    moves: usize,       // `by` lists moved by `rebalance` so far
    policy: Rebalance,
}

/// When `Split::rebalance` moves a `by` list: it looks every `every` batches, moves one when a
/// side took `gap` (a share of both sides' CPU) more than the other, `moves` times at most.
/// (Tests: a negative `gap` moves one at every look, whatever the CPU says.)
#[derive(Clone, Copy)]
struct Rebalance {
    every: usize,
    gap: f64,
    moves: usize,
}

const REBALANCE: Rebalance = Rebalance { every: 16, gap: 0.04, moves: 6 };

/// CPU seconds of the calling thread.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given, nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

impl Split {
    /// Rules weigh 1, rules grouped by a `user` field 8 (many groups, cold buckets: the
    /// costly ones); whole `by` lists go to the lighter side, heaviest first. `rebalance`
    /// then moves lists by the CPU each side takes.
    fn new(plans: &[plan::Plan], engine: &Engine, lateness_ms: i64) -> Option<Split> {
        let rules = &engine.rules;
        if rules.len() < 2 || rules.len() > engine::RuleMask::BITS as usize {
            return None;
        }
        let lists = engine.key_tables.len();
        let mut weight = vec![0.0f64; lists];
        for state in rules {
            let user = state.plan.by.iter().any(|p| p.last().is_some_and(|f| f == "user"));
            weight[state.plan.by_id] += if user { 8.0 } else { 1.0 };
        }
        let mut order: Vec<usize> = (0..lists).filter(|&t| weight[t] > 0.0).collect();
        order.sort_by(|&a, &b| weight[b].total_cmp(&weight[a]).then(a.cmp(&b)));
        let mut load = [0.0f64; 2];
        let mut side = vec![0usize; lists];
        for t in order {
            let s = if load[1] < load[0] { 1 } else { 0 };
            side[t] = s;
            load[s] += weight[t];
        }
        if load[1] == 0.0 {
            return None;
        }
        let mut split = Split {
            side,
            weight,
            mask: [0; 2],
            rules: Vec::new(),
            tables: Vec::new(),
            twin: Engine::new(plans.to_vec(), lateness_ms),
            cpu: [0.0; 2],
            recent: [0.0; 2],
            batches: 0,
            moves: 0,
            policy: REBALANCE,
        };
        split.twin.max_skew_ms = engine.max_skew_ms;
        split.assign(engine);
        Some(split)
    }

    /// The masks and the twin's lists from `side` (between batches: the engine holds all).
    fn assign(&mut self, engine: &Engine) {
        self.mask = [0; 2];
        self.rules.clear();
        for (i, state) in engine.rules.iter().enumerate() {
            let s = self.side[state.plan.by_id];
            self.mask[s] |= 1 << i;
            if s == 1 {
                self.rules.push(i);
            }
        }
        self.tables = (0..self.side.len()).filter(|&t| self.side[t] == 1).collect();
    }

    /// After a batch: every `policy.every` batches, when one side took `policy.gap` more CPU
    /// than the other, move to the lighter side the `by` list whose estimated cost (its
    /// weight, priced at what a unit of weight cost on its side) comes nearest half the gap
    /// without passing the whole of it. Each side also decodes every line, a cost no move
    /// changes: the price is an overestimate, so moves err short. Never a side's last list.
    fn rebalance(&mut self, engine: &Engine) {
        let policy = self.policy;
        self.batches += 1;
        if self.batches < policy.every || self.moves >= policy.moves {
            return;
        }
        let [a, b] = std::mem::take(&mut self.recent);
        self.batches = 0;
        let forced = policy.gap < 0.0;
        if !forced && (a + b <= 0.0 || (a - b).abs() / (a + b) < policy.gap) {
            return;
        }
        let (heavy, gap) = if a > b { (0, a - b) } else { (1, b - a) };
        let on_heavy: Vec<usize> = (0..self.side.len())
            .filter(|&t| self.side[t] == heavy && self.weight[t] > 0.0)
            .collect();
        if on_heavy.len() < 2 {
            return;
        }
        let units: f64 = on_heavy.iter().map(|&t| self.weight[t]).sum();
        let price = [a, b][heavy] / units;
        let off = |t: usize| (self.weight[t] * price - gap / 2.0).abs();
        let best = on_heavy
            .iter()
            .copied()
            .filter(|&t| forced || self.weight[t] * price < gap)
            .min_by(|&x, &y| off(x).total_cmp(&off(y)).then(x.cmp(&y)));
        if let Some(t) = best {
            self.side[t] = 1 - heavy;
            self.moves += 1;
            self.assign(engine);
        }
    }

    /// Move the twin's rules and key tables to it, and the engine's clock.
    fn enter(&mut self, engine: &mut Engine) {
        self.swap(engine);
        let twin = &mut self.twin;
        twin.watermark = engine.watermark;
        twin.max_ts = engine.max_ts;
        twin.seq = engine.seq;
        twin.ahead_run = engine.ahead_run;
    }

    /// Bring them back; the incidents the twin opened count in the engine.
    fn leave(&mut self, engine: &mut Engine) {
        self.swap(engine);
        for (name, count) in std::mem::take(&mut self.twin.opened) {
            *engine.opened.entry(name).or_insert(0) += count;
        }
        let twin = &mut self.twin;
        (twin.events, twin.late, twin.changes) = (0, 0, 0);
    }

    fn swap(&mut self, engine: &mut Engine) {
        for &i in &self.rules {
            std::mem::swap(&mut engine.rules[i], &mut self.twin.rules[i]);
        }
        for &t in &self.tables {
            std::mem::swap(&mut engine.key_tables[t], &mut self.twin.key_tables[t]);
        }
    }
}

/// Two threads that stay (a thread made per batch would start with a fresh allocator heap:
/// new pages to fault in at every batch). A forked child has none of its parent's threads:
/// it makes its own pool (the parent's is left, never to be used there).
fn pool() -> &'static rayon_core::ThreadPool {
    static POOL: std::sync::Mutex<Option<(u32, &'static rayon_core::ThreadPool)>> =
        std::sync::Mutex::new(None);
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    match *pool {
        Some((owner, made)) if owner == pid => made,
        _ => {
            let made: &'static rayon_core::ThreadPool = Box::leak(Box::new(
                rayon_core::ThreadPoolBuilder::new()
                    .num_threads(2)
                    .thread_name(|i| format!("firebreak-native-{i}"))
                    .build()
                    .expect("two threads"),
            ));
            *pool = Some((pid, made));
            made
        }
    }
}

/// Events taken one behind (`Engine::route`, `Engine::process_routed`): an event's rules
/// and group keys are found, and its groups asked for, before the event ahead of it is added
/// — so that those cache misses overlap that event's work instead of stalling this one's.
/// Routing changes nothing but the key tables, so the records are the same.
struct Behind<'a> {
    pending: Option<(usize, event::Event<'a>, Vec<(usize, u32)>)>,
    spare: Vec<(usize, u32)>,
}

impl<'a> Behind<'a> {
    fn new() -> Behind<'a> {
        Behind { pending: None, spare: Vec::new() }
    }

    /// Route ``event`` (batch index ``index``), then add the one before it. Returns the
    /// events taken (0 or 1); the late ones go to ``late`` when given.
    #[allow(clippy::too_many_arguments)]
    fn push<H: Host<Obj = PyObject, Error = PyErr>>(
        &mut self,
        engine: &mut Engine,
        index: usize,
        event: event::Event<'a>,
        host: &H,
        mask: Option<engine::RuleMask>,
        late: &mut Option<&mut Vec<(usize, i64, i64)>>,
        out: &mut Vec<Rec>,
    ) -> PyResult<usize> {
        let mut routed = std::mem::take(&mut self.spare);
        if engine.is_late(event.ts) {
            routed.clear(); // late now, late when its turn comes: nothing to look up
        } else {
            engine.route(&event, host, mask, false, &mut routed);
        }
        let taken = self.flush(engine, host, late, out)?;
        self.pending = Some((index, event, routed));
        Ok(taken)
    }

    /// Add the event routed last, if any.
    fn flush<H: Host<Obj = PyObject, Error = PyErr>>(
        &mut self,
        engine: &mut Engine,
        host: &H,
        late: &mut Option<&mut Vec<(usize, i64, i64)>>,
        out: &mut Vec<Rec>,
    ) -> PyResult<usize> {
        let Some((index, event, routed)) = self.pending.take() else {
            return Ok(0);
        };
        let taken = if engine.is_late(event.ts) {
            if let Some(late) = late.as_mut() {
                late.push((index, event.ts, engine.watermark.unwrap_or(0)));
            }
            0
        } else if engine.is_ahead(event.ts) {
            // refused as too far ahead: given back as a late one with the latest event
            // time in place of the watermark (drive.py `late_text` tells them apart)
            if let Some(late) = late.as_mut() {
                late.push((index, event.ts, engine.max_ts.unwrap_or(0)));
            }
            0
        } else {
            engine.process_routed(&event, &routed, host, out)?;
            1
        };
        self.spare = routed;
        Ok(taken)
    }
}

/// A batch of lines for `run_lines`: ``lines`` (``offset``: the index of the first), a line
/// longer than ``max_bytes`` left to Python, only the rules of ``mask`` (None: every rule).
#[derive(Clone, Copy)]
struct Batch<'a> {
    lines: &'a [&'a [u8]],
    offset: usize,
    max_bytes: Option<usize>,
    mask: Option<engine::RuleMask>,
}

/// ``batch`` through ``engine``, each line decoded here (both threads decode every line: the
/// event is in this core's cache when its rules read it) up to the first line the native
/// decoder does not accept. Returns (the events taken, that line's index); the late ones go to
/// ``late`` when given.
fn run_lines<H: Host<Obj = PyObject, Error = PyErr>>(
    engine: &mut Engine,
    batch: &Batch<'_>,
    host: &H,
    late: Option<&mut Vec<(usize, i64, i64)>>,
    out: &mut Vec<Rec>,
) -> PyResult<(usize, Option<usize>)> {
    // keys are renumbered only once no event routed ahead holds their ids
    engine.routing_ahead = true;
    let result = run_behind(engine, batch, host, late, out);
    engine.routing_ahead = false;
    engine.forget_keys();
    result
}

fn run_behind<H: Host<Obj = PyObject, Error = PyErr>>(
    engine: &mut Engine,
    batch: &Batch<'_>,
    host: &H,
    mut late: Option<&mut Vec<(usize, i64, i64)>>,
    out: &mut Vec<Rec>,
) -> PyResult<(usize, Option<usize>)> {
    let Batch { lines, offset, max_bytes, mask } = *batch;
    let mut taken = 0;
    let mut behind = Behind::new();
    for (i, raw) in lines.iter().enumerate() {
        let index = offset + i;
        if blank(raw) {
            continue;
        }
        let event = if max_bytes.is_some_and(|m| raw.len() > m) {
            None
        } else {
            event::decode(raw, None)
        };
        let Some(event) = event else {
            taken += behind.flush(engine, host, &mut late, out)?;
            return Ok((taken, Some(index)));
        };
        taken += behind.push(engine, index, event, host, mask, &mut late, out)?;
    }
    taken += behind.flush(engine, host, &mut late, out)?;
    Ok((taken, None))
}

/// Two record lists, each in the core's order, as one.
fn merge(a: Vec<Rec>, b: Vec<Rec>) -> Vec<Rec> {
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => (x.0, x.1, x.2) <= (y.0, y.1, y.2),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.push(if take_a { a.next() } else { b.next() }.unwrap());
    }
    out
}

fn to_list<'py>(py: Python<'py>, records: Vec<Rec>) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, records.into_iter().map(|r| r.3))
}

#[pymethods]
impl Core {
    /// ``plans``: the JSON list of rule plans; ``host``: firebreak.native's helper object.
    /// ``threads``: 2 to split the rules over two threads in `feed` (when they split).
    #[new]
    /// ``max_skew_ms``: how far ahead of the latest event time an event may be (None: no bound).
    #[pyo3(signature = (plans, lateness_ms, host, threads=1, max_skew_ms=Some(engine::DEFAULT_MAX_SKEW_MS)))]
    fn new(
        plans: &[u8],
        lateness_ms: i64,
        host: PyObject,
        threads: usize,
        max_skew_ms: Option<i64>,
    ) -> PyResult<Core> {
        let plans = plan::parse_plans(plans).map_err(PyValueError::new_err)?;
        let mut engine = Engine::new(plans.clone(), lateness_ms);
        engine.max_skew_ms = max_skew_ms;
        let split = if threads >= 2 {
            Split::new(&plans, &engine, lateness_ms)
        } else {
            None
        };
        Ok(Core {
            engine,
            host,
            split,
        })
    }

    /// CPU seconds each of the two threads spent in `feed` so far (the engine's rules, the
    /// twin's); None on one thread.
    #[getter]
    fn split_cpu(&self) -> Option<(f64, f64)> {
        self.split.as_ref().map(|s| (s.cpu[0], s.cpu[1]))
    }

    /// How the split moves `by` lists between the threads (`Rebalance`); (tests).
    fn set_rebalance(&mut self, every: usize, gap: f64, moves: usize) {
        if let Some(split) = self.split.as_mut() {
            split.policy = Rebalance { every: every.max(1), gap, moves };
        }
    }

    /// `by` lists moved between the threads so far (None on one thread).
    #[getter]
    fn split_moves(&self) -> Option<usize> {
        self.split.as_ref().map(|s| s.moves)
    }

    /// The threads `feed` runs on (1 or 2).
    #[getter]
    fn threads(&self) -> usize {
        if self.split.is_some() {
            2
        } else {
            1
        }
    }

    /// Why a compiled plan (dsl/plan.py) cannot run here (None: it can).
    #[staticmethod]
    fn check_plan(plan: &[u8]) -> Option<String> {
        plan::parse_plans(plan).err()
    }

    /// Feed ``lines[start:]``; stop at the first line the native decoder does not accept.
    /// Returns a `FedLines` (that line's index or None, records, late, events taken).
    #[pyo3(signature = (lines, start, max_bytes=None))]
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        lines: &Bound<'py, PyList>,
        start: usize,
        max_bytes: Option<usize>,
    ) -> PyResult<FedLines> {
        let (stop, records, late, events) = self.feed_lines(py, lines, start, max_bytes)?;
        Ok(FedLines { stop, records: records.unbind(), late, events })
    }

    /// One event the Python decoder accepted (``ts`` its time).
    fn feed_one(&mut self, py: Python<'_>, raw: &[u8], ts: i64) -> PyResult<FedOne> {
        let mut out = Vec::new();
        let event = event::decode(raw, Some(ts))
            .ok_or_else(|| EventRefused::new_err("the native decoder refuses this event"))?;
        let late = if self.engine.is_late(event.ts) {
            Some((event.ts, self.engine.watermark.unwrap_or(0)))
        } else if self.engine.is_ahead(event.ts) {
            Some((event.ts, self.engine.max_ts.unwrap_or(0)))
        } else {
            None
        };
        if late.is_none() {
            let host_obj = self.host.bind(py);
            self.engine.process(&event, &PyHost { py, obj: host_obj }, &mut out, None)?;
        }
        Ok(FedOne { records: to_list(py, out)?.unbind(), late })
    }

    /// Aggregate only the (rule, group) pairs of shard ``shard`` of ``shards`` (the worker).
    fn set_owner(&mut self, shard: u32, shards: u32) {
        let owners = route::Owners::new(self.engine.rules.len(), shards);
        self.engine.owner = Some(route::Owner { shard, owners });
    }

    /// A routed message's body (after its header: the rows, rows.rs, as one zstd frame, frame.rs —
    /// decompressed here), then,
    /// when ``watermark`` is given, `advance` to it — in one call that lets go of the GIL (a
    /// worker's shard takes its routed messages on a feeder thread). ``next``: per input
    /// partition, the next offset to take (those before it were taken already). ``masks``: look
    /// only at the rules each line's mask names (stage 1 had these rules). Returns a
    /// `TakenRouted` (``next`` after the body, events taken, late, duplicates, records).
    #[pyo3(signature = (body, next, masks, watermark))]
    #[allow(clippy::type_complexity)]
    fn take_routed<'py>(
        &mut self,
        py: Python<'py>,
        body: &[u8],
        mut next: std::collections::HashMap<i64, i64>,
        masks: bool,
        watermark: Option<i64>,
    ) -> PyResult<TakenRouted> {
        let (engine, host) = (&mut self.engine, &self.host);
        let mut out = Vec::new();
        let (taken, late, duplicates) = py.allow_threads(|| -> PyResult<(usize, usize, usize)> {
            let remote = Remote(host);
            let fed = crate::frame::unpacked(body, |rows| engine.take_payload(rows, &mut next, masks, &remote))
                .map_err(PyValueError::new_err)?;
            if let Some(watermark) = watermark {
                engine.advance(watermark, &remote, &mut out)?;
            }
            Ok(fed)
        })?;
        let records = to_list(py, out)?.unbind();
        Ok(TakenRouted { next, taken, late, duplicates, records })
    }

    /// Evaluate every step up to ``watermark``. Lets go of the GIL while it evaluates (a worker's
    /// shards evaluate on threads side by side); each record takes it back to be made.
    fn advance<'py>(&mut self, py: Python<'py>, watermark: i64) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::new();
        let (engine, host) = (&mut self.engine, &self.host);
        py.allow_threads(|| engine.advance(watermark, &Remote(host), &mut out))?;
        to_list(py, out)
    }

    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::new();
        let host_obj = self.host.bind(py);
        self.engine.finish(&PyHost { py, obj: host_obj }, &mut out)?;
        to_list(py, out)
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

    /// Every pending or firing group, rules in order, groups in the core's order.
    /// A group restored from a snapshot has no values object until its first evaluation: made
    /// here from its key, as that evaluation would.
    fn lives(&self, py: Python<'_>) -> PyResult<Vec<Life>> {
        let host = PyHost { py, obj: self.host.bind(py) };
        let mut out = Vec::new();
        for (index, state) in self.engine.rules.iter().enumerate() {
            let table = &self.engine.key_tables[state.plan.by_id];
            let mut keys: Vec<u32> =
                state.groups.iter().filter(|(_, g)| g.life.is_some()).map(|(k, _)| k).collect(); // only these are listed: sort only them
            keys.sort_by_cached_key(|key| table.order(*key));
            for key in keys {
                let group = state.groups.get(key).unwrap();
                if let Some(life) = &group.life {
                    let dict = match &group.dict {
                        Some(dict) => dict.clone_ref(py),
                        None => host.group_values(&state.plan.by, &table.parts(key))?,
                    };
                    out.push(Life { rule: index, group: dict, life: life.clone_ref(py) });
                }
            }
        }
        Ok(out)
    }

    /// The state as JSON in the Python core's snapshot layout (rules as a list, in order;
    /// each group's `life` the index of its Lifecycle in the second value, or null).
    fn snapshot(&self, py: Python<'_>) -> PyResult<Snapshot> {
        let (json, lives) = snapshot::write(&self.engine, &mut |life: &PyObject| life.clone_ref(py));
        Ok(Snapshot { json: PyBytes::new(py, &json).unbind(), lives: PyList::new(py, lives)?.unbind() })
    }

    /// `NativeEngine.snapshot()` as JSON bytes in one call (snapshot.rs `write_layout`):
    /// ``fingerprints`` {rule name: fingerprint}, ``idle_life`` the JSON of a group without a
    /// Lifecycle, ``opened`` the JSON of the incidents opened.
    fn snapshot_layout<'py>(
        &self,
        py: Python<'py>,
        fingerprints: std::collections::HashMap<String, String>,
        idle_life: &[u8],
        opened: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let dumps = py.import("orjson")?.getattr("dumps")?;
        let mut life_json = |life: &PyObject| -> Result<serde_json::Value, String> {
            let json = life.bind(py).call_method0("to_json").and_then(|j| dumps.call1((j,))).map_err(|e| e.to_string())?;
            let bytes = json.downcast::<PyBytes>().map_err(|e| e.to_string())?;
            serde_json::from_slice(bytes.as_bytes()).map_err(|e| e.to_string())
        };
        let json = snapshot::write_layout(&self.engine, &mut life_json, &fingerprints, idle_life, opened)
            .map_err(PyValueError::new_err)?;
        Ok(PyBytes::new(py, &json))
    }

    /// Restore from `snapshot`'s layout; rules missing from it (or changed: left out by the
    /// caller) start afresh.
    fn restore(&mut self, py: Python<'_>, json: &[u8], lives: Vec<PyObject>) -> PyResult<()> {
        let host_obj = self.host.bind(py);
        snapshot::read(&mut self.engine, json, lives, &PyHost { py, obj: host_obj })
            .map_err(PyValueError::new_err)
    }

    /// The group keys each key table holds now, alive or not yet forgotten (`forget_keys`).
    fn key_counts(&self) -> Vec<usize> {
        self.engine.key_tables.iter().map(|t| t.len()).collect()
    }

    /// The state now held: groups, buckets, estimated bytes.
    fn memory(&self) -> Memory {
        let (groups, buckets, bytes) = snapshot::memory(&self.engine);
        Memory { groups, buckets, bytes }
    }

    /// `memory` by part: estimated bytes and counts by name (snapshot::memory_parts).
    fn memory_parts(&self) -> std::collections::BTreeMap<&'static str, usize> {
        snapshot::memory_parts(&self.engine)
    }
}

/// What `Core.feed` returns.
#[pyclass(module = "firebreak._native", frozen, get_all)]
pub struct FedLines {
    /// The index of the first line the native decoder did not accept (Python's to read), or None.
    pub stop: Option<usize>,
    pub records: Py<PyList>,
    /// (line index, event time, watermark) of each late event.
    pub late: Vec<(usize, i64, i64)>,
    /// Events taken.
    pub events: usize,
}

/// What `Core.feed_one` returns.
#[pyclass(module = "firebreak._native", frozen, get_all)]
pub struct FedOne {
    pub records: Py<PyList>,
    /// (event time, watermark) when the event is late; (event time, the latest event time)
    /// when it is refused as too far ahead; None when it was taken.
    pub late: Option<(i64, i64)>,
}

/// A pending or firing group (`Core.lives`).
#[pyclass(module = "firebreak._native", frozen, get_all)]
pub struct Life {
    /// The rule's index in the plan.
    pub rule: usize,
    /// The group's values as records show them.
    pub group: PyObject,
    /// Its incidents.Lifecycle.
    pub life: PyObject,
}

/// What `Core.snapshot` returns.
#[pyclass(module = "firebreak._native", frozen, get_all)]
pub struct Snapshot {
    /// The state in the Python core's snapshot layout (rules as a list, in order; each
    /// group's `life` the index of its Lifecycle in ``lives``, or null).
    pub json: Py<PyBytes>,
    pub lives: Py<PyList>,
}

/// What `Core.memory` returns: the state held (buckets with their sketches and evidence,
/// interned keys, the schedule; docs/native.md, Memory).
#[pyclass(module = "firebreak._native", frozen, get_all)]
pub struct Memory {
    pub groups: usize,
    pub buckets: usize,
    /// Estimated bytes.
    pub bytes: usize,
}

/// What `Core.take_routed` returns.
#[pyclass(module = "firebreak._native", frozen, get_all)]
pub struct TakenRouted {
    /// Per input partition, the next offset to take after the body.
    pub next: std::collections::HashMap<i64, i64>,
    pub taken: usize,
    pub late: usize,
    pub duplicates: usize,
    pub records: Py<PyList>,
}

type Fed<'py> = (
    Option<usize>,
    Bound<'py, PyList>,
    Vec<(usize, i64, i64)>,
    usize,
);

impl Core {
    /// `feed`'s work: on two threads when the rules are split and the batch is large enough.
    fn feed_lines<'py>(
        &mut self,
        py: Python<'py>,
        lines: &Bound<'py, PyList>,
        start: usize,
        max_bytes: Option<usize>,
    ) -> PyResult<Fed<'py>> {
        if self.split.is_some()
            && self.engine.owner.is_none()
            && lines.len() >= start + SPLIT_LINES
        {
            if let Some(result) = self.feed_split(py, lines, start, max_bytes)? {
                return Ok(result);
            }
        }
        // the bytes objects held for the batch: its events borrow from them (`Behind`)
        let mut held: Vec<Bound<'py, PyBytes>> = Vec::with_capacity(lines.len().saturating_sub(start));
        for index in start..lines.len() {
            held.push(lines.get_item(index)?.downcast_into::<PyBytes>()?);
        }
        let raw: Vec<&[u8]> = held.iter().map(|b| b.as_bytes()).collect();
        let mut out = Vec::new();
        let host_obj = self.host.bind(py);
        let host = PyHost { py, obj: host_obj };
        let mut late = Vec::new();
        let batch = Batch { lines: &raw, offset: start, max_bytes, mask: None };
        let (events, stop) = run_lines(&mut self.engine, &batch, &host, Some(&mut late), &mut out)?;
        Ok((stop, to_list(py, out)?, late, events))
    }

    /// `feed` on two threads: every line decoded on both, and each event through the engine
    /// (its rules) and the twin (the others) side by side, each taking the GIL only to call
    /// into Python. None: lines that are not all bytes (`feed` says why).
    fn feed_split<'py>(
        &mut self,
        py: Python<'py>,
        lines: &Bound<'py, PyList>,
        start: usize,
        max_bytes: Option<usize>,
    ) -> PyResult<Option<Fed<'py>>> {
        // the bytes objects held for the batch: nothing can free them while the GIL is let go
        let mut held: Vec<Bound<'py, PyBytes>> = Vec::with_capacity(lines.len() - start);
        for index in start..lines.len() {
            match lines.get_item(index)?.downcast_into::<PyBytes>() {
                Ok(bytes) => held.push(bytes),
                Err(_) => return Ok(None),
            }
        }
        let raw: Vec<&[u8]> = held.iter().map(|b| b.as_bytes()).collect();
        let split = self.split.as_mut().unwrap();
        let cpu_before = split.cpu;
        split.enter(&mut self.engine);
        let (engine, twin) = (&mut self.engine, &mut split.twin);
        let (mask, host) = (split.mask, &self.host);
        let mut late = Vec::new();
        let (mut out, mut out_twin) = (Vec::new(), Vec::new());
        let (batch, batch_twin) = (
            Batch { lines: &raw, offset: start, max_bytes, mask: Some(mask[0]) },
            Batch { lines: &raw, offset: start, max_bytes, mask: Some(mask[1]) },
        );
        // each side keeps a Python thread state for the batch (with_gil), and lets the GIL go
        // but for its calls into Python (Remote)
        let [cpu_a, cpu_b] = &mut split.cpu;
        let (result, twin_result) = py.allow_threads(|| {
            pool().join(
                || {
                    Python::with_gil(|py| {
                        py.allow_threads(|| {
                            let began = thread_cpu();
                            let late = Some(&mut late);
                            let r = run_lines(engine, &batch, &Remote(host), late, &mut out);
                            *cpu_a += thread_cpu() - began;
                            r
                        })
                    })
                },
                || {
                    Python::with_gil(|py| {
                        py.allow_threads(|| {
                            let began = thread_cpu();
                            let r = run_lines(twin, &batch_twin, &Remote(host), None, &mut out_twin);
                            *cpu_b += thread_cpu() - began;
                            r
                        })
                    })
                },
            )
        });
        split.leave(&mut self.engine);
        split.recent[0] += split.cpu[0] - cpu_before[0];
        split.recent[1] += split.cpu[1] - cpu_before[1];
        split.rebalance(&self.engine);
        let (taken, stop) = result?;
        twin_result?;
        let records = to_list(py, merge(out, out_twin))?;
        Ok(Some((stop, records, late, taken)))
    }
}

