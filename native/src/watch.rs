//! The live worker's traffic watch, kept by the router (route.rs) for every event it routes:
//! the tallies of engine/firebreak/adapters/traffic_check.py `_Tallies`, counted natively over
//! every event rather than over a sample read in Python (benchmarks/README.md, tenth pass).
//!
//! Python lays the tallies out (`_Tallies.native_spec`: per event type the paths read, the
//! path tallies, and each way of counting — a rule whose plan gives the label and `where`, the
//! `by` fields, per step length and metric field the per-(group, step) counts), the router
//! counts each routed event into them, and Python takes them once when the watch is due
//! (`_Tallies.load_native`): the same `TrafficReport` and warnings follow.
//!
//! Groups are the router's own interned keys (`Router::targets` looks each up once per `by`
//! list anyway), so the watch hashes no key of its own.
//!
//! Bounded: distinct values per path up to `MAX_VALUES` (as `_PathTally`; kept as 64-bit hashes of
//! their bytes, so a long value costs 8 bytes — two values whose hashes collide count as one), the first
//! `MAX_GROUPS` group keys of each `by` list (beyond, groups are not counted and the counts that
//! met one are marked capped: no `min N events` verdict), per-(group, step) counts only until
//! the watch is taken (one hour of event time) — then all of it is freed.

use crate::event::{self, Event, Kind};
use crate::host::Text;
use crate::json::J;
use crate::num::Num;
use crate::plan::Plan;
use crate::value::{get, Path};
use serde_json::Value;
use rustc_hash::{FxHashSet, FxHasher};
use std::hash::{Hash, Hasher};
use std::collections::HashSet;

/// traffic_check.MAX_VALUES: distinct values kept per path.
pub const MAX_VALUES: usize = 1_000;
/// Distinct groups kept per way of counting (the Python watch states this cap too).
pub const MAX_GROUPS: usize = 100_000;

struct PathTally {
    field: Option<usize>, // the value's index in the event's field values; None: a report label
    label: String,
    present: u64,
    true_: u64,
    numeric: u64,
    // every value but booleans, by a 64-bit hash of its bytes: 8 bytes a value however long
    // (a value's bytes kept would let 1,000 events of 256 KiB strings hold 256 MB per path)
    values: FxHashSet<u64>,
    bools: u8,                  // booleans seen: bit 0 false, bit 1 true
}

impl PathTally {
    fn distinct(&self) -> usize {
        self.values.len() + self.bools.count_ones() as usize
    }
}

/// The groups of one `by` list (every count grouped alike shares them), by the key ids the router
/// interned for the event (`Router::targets`, `KeyTable`: the engine's groups, the Python watch's
/// `_key_part`): per key, the per-step counts of every (count, steps) of the list (`slots`, side
/// by side per key: an event touches one place per `by` list, not one per rule), and in each
/// count's first slot whether the key is one of its groups (`Slot::group`).
#[derive(Default)]
struct ByTable {
    width: usize, // slots per key: every (count, steps) of the list
    keys: usize,  // key ids with slots: 0..keys
    slots: Vec<Slot>,
}

/// One group's events behind one metric, per step: the step counted last (`start`, `n`) and the
/// ones before it (`before`, sorted, all earlier: events come nearly in time order, so an event
/// most often adds to `n`).
#[derive(Default)]
struct Slot {
    start: i64,
    n: u32,
    group: bool, // in a count's first slot: the key is one of the count's groups
    before: Vec<(i64, u32)>,
}

impl Slot {
    fn add(&mut self, start: i64) {
        if self.n > 0 && start == self.start {
            self.n += 1;
        } else if self.n == 0 || start > self.start {
            if self.n > 0 {
                self.before.push((self.start, self.n)); // every earlier step is before it
            }
            self.start = start;
            self.n = 1;
        } else {
            // an event of an earlier step (out of order): near the end
            let before = &mut self.before;
            let mut i = before.len();
            while i > 0 && before[i - 1].0 > start {
                i -= 1;
            }
            if i > 0 && before[i - 1].0 == start {
                before[i - 1].1 += 1;
            } else {
                before.insert(i, (start, 1));
            }
        }
    }
}

/// An event type's paths read on the stack by `Watch::observe` (more: a vector per event).
const PATHS_ON_STACK: usize = 48;

/// The first events whose times' median tells whether the first one is an outlier (`Watch::start`).
pub const STARTS: usize = 63;
/// A first event this far from that median (half the watch's hour) does not start the hour.
const OUTLIER_MS: u64 = 1_800_000;

struct Counted {
    rule: usize, // the plan whose label and `where` it counts by (`Router::targets` evaluated them)
    by: usize,   // its `ByTable`
    slot: usize, // its first slot among the list's
    passed: u64,
    groups: usize,
    capped: bool,
    steps: Vec<(i64, Option<usize>)>, // (step ms, metric field or None)
}

struct KindWatch {
    kind: Kind,
    paths: Vec<Path>,
    tallies: Vec<PathTally>,
    counts: Vec<Counted>,
}

/// One watch's tallies (from Python's spec), counted per event by `observe`.
pub struct Watch {
    kinds: Vec<KindWatch>,
    /// (kind index, count index, steps index, window ms) per rule: its busiest window.
    rules: Vec<(usize, usize, usize, i64)>,
    pub first: Option<i64>,
    pub last: Option<i64>,
    /// The times of the first `STARTS` events observed: how long the watch has watched is
    /// measured from the first of them (`start`), not from `first` (the smallest time seen) — an
    /// old but valid event (event time 0 is accepted) would otherwise end the hour at once — and
    /// from their median when the first is far from it (a crafted first event: stage 1 checks an
    /// input partition's first event against no earlier time).
    starts: Vec<i64>,
    pub inference: u64,
    pub reports: u64,
    scratch: Vec<u8>,
    bys: Vec<ByTable>, // per `by` list of the router (`Plan::by_id`)
    epoch: Option<u64>, // the router's key tables' (`Router::key_epoch`) when the watch began
    /// Batch indexes observed in a batch's second call (events only Python's decoder read at first).
    pub again_seen: HashSet<usize>,
}

fn err<T>(what: &str) -> Result<T, String> {
    Err(format!("watch spec: {what}"))
}

fn index(v: &Value) -> Result<Option<usize>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_u64().map(|i| Some(i as usize)).ok_or_else(|| "watch spec: index".to_string()),
        _ => err("index"),
    }
}

impl Watch {
    /// From `_Tallies.native_spec` (JSON), for ``plans`` (the router's, in the rules' order).
    pub fn from_spec(spec: &[u8], plans: &[Plan]) -> Result<Watch, String> {
        let doc: Value = serde_json::from_slice(spec).map_err(|e| format!("watch spec: {e}"))?;
        let mut kinds = Vec::new();
        let mut bys: Vec<ByTable> = Vec::new();
        for k in doc["kinds"].as_array().map_or(&[][..], |v| v) {
            let kind = match k["kind"].as_str() {
                Some("inference") => Kind::Inference,
                Some("report") => Kind::Report,
                _ => return err("kind"),
            };
            let mut paths = Vec::new();
            for p in k["paths"].as_array().map_or(&[][..], |v| v) {
                let parts: Vec<String> =
                    p.as_array().map_or(&[][..], |v| v).iter().filter_map(|s| s.as_str().map(String::from)).collect();
                paths.push(Path::new(parts).ok_or("watch spec: empty path")?);
            }
            let mut tallies = Vec::new();
            for t in k["tallies"].as_array().map_or(&[][..], |v| v) {
                let field = index(&t["field"])?;
                if field.is_some_and(|f| f >= paths.len()) {
                    return err("field index");
                }
                let label = t["label"].as_str().unwrap_or("").to_string();
                let values = FxHashSet::default();
                tallies.push(PathTally { field, label, present: 0, true_: 0, numeric: 0, values, bools: 0 });
            }
            let mut counts = Vec::new();
            for c in k["counts"].as_array().map_or(&[][..], |v| v) {
                let rule = index(&c["rule"])?.ok_or("watch spec: rule")?;
                if rule >= plans.len() {
                    return err("rule index");
                }
                let by = plans[rule].by_id; // the rule's `by`: the count's
                if bys.len() <= by {
                    bys.resize_with(by + 1, ByTable::default);
                }
                let mut steps = Vec::new();
                for s in c["steps"].as_array().map_or(&[][..], |v| v) {
                    let step_ms = s[0].as_i64().filter(|s| *s > 0).ok_or("watch spec: step")?;
                    let field = index(&s[1])?;
                    if field.is_some_and(|f| f >= paths.len()) {
                        return err("metric field index");
                    }
                    steps.push((step_ms, field));
                }
                if steps.is_empty() {
                    return err("a count with no steps");
                }
                let table = &mut bys[by];
                let slot = table.width;
                table.width += steps.len();
                counts.push(Counted { rule, by, slot, passed: 0, groups: 0, capped: false, steps });
            }
            kinds.push(KindWatch { kind, paths, tallies, counts });
        }
        let mut rules = Vec::new();
        for r in doc["rules"].as_array().map_or(&[][..], |v| v) {
            let at = |i: usize| r[i].as_u64().map(|x| x as usize).ok_or("watch spec: rule tally");
            let window = r[3].as_i64().ok_or("watch spec: window")?;
            let (k, c, s) = (at(0)?, at(1)?, at(2)?);
            if k >= kinds.len() || c >= kinds[k].counts.len() || s >= kinds[k].counts[c].steps.len() {
                return err("rule tally out of range");
            }
            rules.push((k, c, s, window));
        }
        Ok(Watch {
            kinds,
            rules,
            first: None,
            last: None,
            starts: Vec::with_capacity(STARTS),
            inference: 0,
            reports: 0,
            scratch: Vec::new(),
            bys,
            epoch: None,
            again_seen: HashSet::new(),
        })
    }

    /// Where the watch's hour starts: the first observed event's time, unless it lies more than
    /// `OUTLIER_MS` from the median time of the first `STARTS` events (the upper one of an even
    /// count) — a crafted or stray first event — then that median. None before any event.
    pub fn start(&self) -> Option<i64> {
        let first = *self.starts.first()?;
        let mut times = self.starts.clone();
        times.sort_unstable();
        let median = times[times.len() / 2];
        Some(if first.abs_diff(median) > OUTLIER_MS { median } else { first })
    }

    /// Count one valid event (`_Tallies.observe` and `TrafficWatch.observe`); ``passes``: per
    /// plan, whether the event is of its type and passes its label and `where`; ``keys``: per `by`
    /// list, the event's key id where a plan of it passes; ``epoch``: the key tables' (all as
    /// `Router::targets` left them).
    #[inline(never)]
    pub fn observe<H: Text>(&mut self, event: &Event, passes: &[bool], keys: &[Option<u32>], epoch: u64, host: &H) {
        match event.kind {
            Kind::Inference => self.inference += 1,
            Kind::Report => self.reports += 1,
            _ => return,
        }
        let ts = event.ts;
        if self.first.is_none_or(|f| ts < f) {
            self.first = Some(ts);
        }
        if self.last.is_none_or(|l| ts > l) {
            self.last = Some(ts);
        }
        if self.starts.len() < STARTS {
            self.starts.push(ts);
        }
        let Some(watch) = self.kinds.iter_mut().find(|k| k.kind == event.kind) else {
            return;
        };
        // the paths' values, on the stack for up to PATHS_ON_STACK paths (no allocation per event)
        let mut stack: [Option<&J>; PATHS_ON_STACK] = [None; PATHS_ON_STACK];
        let heap: Vec<Option<&J>>;
        let values: &[Option<&J>] = if watch.paths.len() <= PATHS_ON_STACK {
            for (slot, path) in stack.iter_mut().zip(&watch.paths) {
                *slot = get(event, path);
            }
            &stack[..watch.paths.len()]
        } else {
            heap = watch.paths.iter().map(|p| get(event, p)).collect();
            &heap
        };
        let scratch = &mut self.scratch;
        for tally in watch.tallies.iter_mut() {
            let value = match tally.field {
                Some(at) => values[at],
                None => event::has_label(event, &tally.label).then_some(&J::Bool(true)),
            };
            let Some(value) = value else { continue };
            tally.present += 1;
            if matches!(value, J::Bool(true)) {
                tally.true_ += 1;
            }
            if is_number(Some(value)) {
                tally.numeric += 1;
            }
            if let J::Bool(b) = value {
                if tally.bools & (1 << *b as u8) == 0 && tally.distinct() < MAX_VALUES {
                    tally.bools |= 1 << *b as u8;
                }
            } else if tally.distinct() < MAX_VALUES {
                scratch.clear();
                encode(scratch, Some(value), host);
                let mut hasher = FxHasher::default();
                scratch.as_slice().hash(&mut hasher);
                tally.values.insert(hasher.finish());
            }
        }
        // the router's key ids stand for the same groups while its tables are not started afresh
        let same_keys = *self.epoch.get_or_insert(epoch) == epoch;
        for counted in watch.counts.iter_mut() {
            if !passes.get(counted.rule).copied().unwrap_or(false) {
                continue;
            }
            counted.passed += 1;
            let key = match keys.get(counted.by).copied().flatten() {
                Some(key) if same_keys && (key as usize) < MAX_GROUPS => key,
                _ => {
                    counted.capped = true; // past the cap (or the router's keys renumbered): not counted
                    continue;
                }
            };
            let table = &mut self.bys[counted.by];
            let at = key as usize;
            if at >= table.keys {
                table.keys = at + 1;
                table.slots.resize_with(table.keys * table.width, Slot::default);
            }
            let slots = &mut table.slots[at * table.width + counted.slot..];
            if !slots[0].group {
                slots[0].group = true;
                counted.groups += 1;
            }
            for (slot, &(step_ms, field)) in slots.iter_mut().zip(&counted.steps) {
                if field.is_none_or(|f| is_number(values[f])) {
                    slot.add(ts - ts.rem_euclid(step_ms));
                }
            }
        }
    }

    /// The most metric events one group had in one window of ``window`` ms (whole steps):
    /// `_RuleTally.busiest_window`.
    fn busiest(table: &ByTable, counted: &Counted, s: usize, window: i64) -> u64 {
        let mut best = 0u64;
        let mut series = Vec::new();
        for key in 0..table.keys {
            if !table.slots[key * table.width + counted.slot].group {
                continue;
            }
            let slot = &table.slots[key * table.width + counted.slot + s];
            series.clear();
            series.extend_from_slice(&slot.before);
            if slot.n > 0 {
                series.push((slot.start, slot.n));
            }
            let (mut total, mut first) = (0u64, 0);
            for &(start, count) in &series {
                total += count as u64;
                while series[first].0 <= start - window {
                    total -= series[first].1 as u64;
                    first += 1;
                }
                best = best.max(total);
            }
        }
        best
    }

    /// What Python's `_Tallies.load_native` reads: per kind (in the spec's order) its path
    /// tallies (present, true, numeric, distinct values) and counts (passed, groups, capped);
    /// per rule of the spec its busiest window.
    #[allow(clippy::type_complexity)]
    pub fn facts(&self) -> (Vec<(Vec<(u64, u64, u64, usize)>, Vec<(u64, usize, bool)>)>, Vec<u64>) {
        let kinds = self
            .kinds
            .iter()
            .map(|k| {
                (
                    k.tallies.iter().map(|t| (t.present, t.true_, t.numeric, t.distinct())).collect(),
                    k.counts.iter().map(|c| (c.passed, c.groups, c.capped)).collect(),
                )
            })
            .collect();
        let busiest = self
            .rules
            .iter()
            .map(|&(k, c, s, window)| {
                let counted = &self.kinds[k].counts[c];
                Watch::busiest(&self.bys[counted.by], counted, s, window)
            })
            .collect();
        (kinds, busiest)
    }
}

/// `traffic_check._is_number`: a number, not a boolean, not NaN.
fn is_number(value: Option<&J>) -> bool {
    match value {
        Some(J::Num(Num::Int(_))) => true,
        Some(J::Num(Num::Float(x))) => !x.is_nan(),
        _ => false,
    }
}

/// A value's bytes as `traffic_check._hashable` tells values apart: None, booleans apart from
/// numbers, numbers by value (`1 == 1.0`), text, and anything else by Python's `repr`.
fn encode<H: Text>(out: &mut Vec<u8>, value: Option<&J>, host: &H) {
    match value {
        None | Some(J::Null) => out.push(0),
        Some(J::Bool(b)) => out.extend_from_slice(&[1, *b as u8]),
        Some(J::Num(n)) => match n.canonical() {
            Num::Int(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Num::Float(x) => {
                out.push(4);
                out.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        },
        Some(J::Str(s)) => {
            out.push(3);
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Some(other) => {
            let text = host.py_str(other); // str() of a list or object is its repr
            out.push(5);
            out.extend_from_slice(&(text.len() as u64).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
}
