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
//! Bounded: distinct values per path up to `MAX_VALUES` (as `_PathTally`), distinct groups
//! per way of counting up to `MAX_GROUPS` (beyond it new groups are not counted and the
//! count is marked capped), per-(group, step) counts only until the watch is taken (one hour
//! of event time) — then all of it is freed.

use crate::event::{self, Event, Kind};
use crate::host::Text;
use crate::json::J;
use crate::num::Num;
use crate::plan::Plan;
use crate::value::{get, Path};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

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
    values: HashSet<Vec<u8>>,
}

struct Steps {
    step_ms: i64,
    field: Option<usize>,
    counts: HashMap<(u32, i64), u32>, // (group id, step start) → events behind the metric
}

struct Counted {
    rule: usize, // the plan whose label and `where` it counts by
    by: Vec<usize>,
    passed: u64,
    groups: HashMap<Vec<u8>, u32>,
    capped: bool,
    steps: Vec<Steps>,
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
    pub inference: u64,
    pub reports: u64,
    scratch: Vec<u8>,
    values: Vec<Option<usize>>, // scratch: per field, nothing (None) or present
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
                let label = t["label"].as_str().unwrap_or("").to_string();
                tallies.push(PathTally { field, label, present: 0, true_: 0, numeric: 0, values: HashSet::new() });
            }
            let mut counts = Vec::new();
            for c in k["counts"].as_array().map_or(&[][..], |v| v) {
                let rule = index(&c["rule"])?.ok_or("watch spec: rule")?;
                if rule >= plans.len() {
                    return err("rule index");
                }
                let by = c["by"]
                    .as_array()
                    .map_or(&[][..], |v| v)
                    .iter()
                    .map(|i| index(i)?.ok_or_else(|| "watch spec: by".to_string()))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut steps = Vec::new();
                for s in c["steps"].as_array().map_or(&[][..], |v| v) {
                    let step_ms = s[0].as_i64().filter(|s| *s > 0).ok_or("watch spec: step")?;
                    steps.push(Steps { step_ms, field: index(&s[1])?, counts: HashMap::new() });
                }
                counts.push(Counted { rule, by, passed: 0, groups: HashMap::new(), capped: false, steps });
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
            inference: 0,
            reports: 0,
            scratch: Vec::new(),
            values: Vec::new(),
            again_seen: HashSet::new(),
        })
    }

    /// Count one valid event (`_Tallies.observe` and `TrafficWatch.observe`).
    pub fn observe<H: Text>(&mut self, event: &Event, plans: &[Plan], host: &H) {
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
        let Some(watch) = self.kinds.iter_mut().find(|k| k.kind == event.kind) else {
            return;
        };
        let values: Vec<Option<&J>> = watch.paths.iter().map(|p| get(event, p)).collect();
        let scratch = &mut self.scratch;
        for tally in watch.tallies.iter_mut() {
            let value = match tally.field {
                Some(at) => values[at],
                None => {
                    if event::has_label(event, &tally.label) {
                        Some(&J::Bool(true))
                    } else {
                        None
                    }
                }
            };
            let Some(value) = value else { continue };
            tally.present += 1;
            if matches!(value, J::Bool(true)) {
                tally.true_ += 1;
            }
            if is_number(Some(value)) {
                tally.numeric += 1;
            }
            if tally.values.len() < MAX_VALUES {
                scratch.clear();
                encode(scratch, Some(value), host);
                if !tally.values.contains(scratch.as_slice()) {
                    tally.values.insert(scratch.clone());
                }
            }
        }
        self.values.clear();
        for counted in watch.counts.iter_mut() {
            let plan = &plans[counted.rule];
            if let Some(label) = &plan.label {
                if !event::has_label(event, label) {
                    continue;
                }
            }
            if let Some(w) = &plan.where_ {
                if !w.eval(event) {
                    continue;
                }
            }
            counted.passed += 1;
            scratch.clear();
            for &at in &counted.by {
                encode(scratch, values[at], host);
            }
            let group = match counted.groups.get(scratch.as_slice()) {
                Some(id) => *id,
                None if counted.groups.len() < MAX_GROUPS => {
                    let id = counted.groups.len() as u32;
                    counted.groups.insert(scratch.clone(), id);
                    id
                }
                None => {
                    counted.capped = true;
                    continue;
                }
            };
            for steps in counted.steps.iter_mut() {
                if steps.field.is_none_or(|at| is_number(values[at])) {
                    let start = ts - ts.rem_euclid(steps.step_ms);
                    *steps.counts.entry((group, start)).or_insert(0) += 1;
                }
            }
        }
    }

    /// The most metric events one group had in one window of ``window`` ms (whole steps):
    /// `_RuleTally.busiest_window`.
    fn busiest(steps: &Steps, window: i64) -> u64 {
        let mut all: Vec<(u32, i64, u32)> = steps.counts.iter().map(|(&(g, s), &n)| (g, s, n)).collect();
        all.sort_unstable();
        let mut best = 0u64;
        let mut begin = 0;
        while begin < all.len() {
            let group = all[begin].0;
            let end = begin + all[begin..].iter().take_while(|e| e.0 == group).count();
            let (mut total, mut first) = (0u64, begin);
            for at in begin..end {
                let start = all[at].1;
                total += all[at].2 as u64;
                while all[first].1 <= start - window {
                    total -= all[first].2 as u64;
                    first += 1;
                }
                best = best.max(total);
            }
            begin = end;
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
                    k.tallies.iter().map(|t| (t.present, t.true_, t.numeric, t.values.len())).collect(),
                    k.counts.iter().map(|c| (c.passed, c.groups.len(), c.capped)).collect(),
                )
            })
            .collect();
        let busiest = self
            .rules
            .iter()
            .map(|&(k, c, s, window)| Watch::busiest(&self.kinds[k].counts[c].steps[s], window))
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
