//! The live worker's data path (docs/live.md, "The routed format"): stage 1 routes a batch of
//! raw input messages to shards in one call and writes, per shard, the events it must see as
//! data; stage 2 feeds a shard's routed message and evaluates in one call. Each event crosses
//! to a shard once: no shard reads the input topic.
//!
//! Which shard owns a (rule, group) is `engine/firebreak/core/sharding.shard_of`: CRC-32 of the rule
//! name, `\x1f` and the group key as `json.dumps(list(key), separators=(",", ":"))` —
//! written here byte for byte as Python writes it (ASCII-escaped strings, `repr` floats,
//! booleans tagged `["__bool__",true]`), so a Python stage and a native stage agree.
//!
//! A routed message (format 5) is one header line of JSON (written by routing.py), then one
//! binary row per event (rows.rs: input partition and offset, event time in ms, the rules the
//! shard must look at as a bit mask, the event with every field but `prompt`/`output`).

use crate::engine::{KeyRef, KeyTable};
use crate::event::{self, Kind};
use crate::plan::Plan;
use crate::rows;
use crate::value::{float_repr, get, KeyPart, Num};
use std::fmt::Write;

/// `sharding.shard_of` of a rule and an interned key.
pub fn shard_of(rule: &str, parts: &[KeyPart], shards: u32) -> u32 {
    let mut text = String::with_capacity(rule.len() + 32);
    text.push_str(rule);
    text.push('\x1f');
    text.push('[');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        match part {
            KeyPart::None => text.push_str("null"),
            KeyPart::Bool(b) => text.push_str(if *b {
                "[\"__bool__\",true]"
            } else {
                "[\"__bool__\",false]"
            }),
            KeyPart::Num(Num::Int(i)) => {
                let _ = write!(text, "{i}");
            }
            KeyPart::Num(Num::Float(x)) => text.push_str(&json_float(*x)),
            KeyPart::Str(s) => json_str(s, &mut text),
        }
    }
    text.push(']');
    crc32fast::hash(text.as_bytes()) % shards
}

/// `json.dumps` of a float (its `repr`; non-finite values as Python writes them).
fn json_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        float_repr(x)
    }
}

/// `json.dumps` of a string with `ensure_ascii=True`.
fn json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Which shard each (rule, interned key) belongs to, computed once per pair.
#[derive(Default)]
pub struct Owners {
    shards: u32,
    cache: Vec<Vec<u32>>, // per rule, per key id: shard + 1 (0: not yet computed)
}

impl Owners {
    pub fn new(rules: usize, shards: u32) -> Owners {
        Owners {
            shards,
            cache: vec![Vec::new(); rules],
        }
    }

    pub fn shard(&mut self, rule: usize, plan: &Plan, key: u32, table: &KeyTable) -> u32 {
        let cache = &mut self.cache[rule];
        let at = key as usize;
        if at >= cache.len() {
            cache.resize(at + 1, 0);
        }
        if cache[at] == 0 {
            cache[at] = shard_of(&plan.name, &table.parts(key), self.shards) + 1;
        }
        cache[at] - 1
    }

    /// Forget what was computed for ``rule``: its key ids were renumbered (`Engine::forget_keys`).
    pub fn forget(&mut self, rule: usize) {
        self.cache[rule] = Vec::new();
    }
}

/// A shard's view: it aggregates only the (rule, group) pairs it owns.
pub struct Owner {
    pub shard: u32,
    pub owners: Owners,
}

/// Stage 1: the shards an event must reach. Every shard owning one of its (rule, group)
/// pairs; every shard, when it passes the `where` of a `Kx population` rule (each shard
/// counts the whole population, as one engine does).
pub struct Router {
    pub plans: Vec<Plan>,
    pub key_tables: Vec<KeyTable>,
    pub owners: Owners,
    pub shards: u32,
}

const MAX_KEYS: usize = 1_000_000; // interned keys kept before starting afresh (as sharding.MEMO_LIMIT)

impl Router {
    pub fn new(mut plans: Vec<Plan>, shards: u32) -> Router {
        let by_lists = crate::plan::assign_by_ids(&mut plans);
        let rules = plans.len();
        Router {
            plans,
            key_tables: (0..by_lists).map(|_| KeyTable::default()).collect(),
            owners: Owners::new(rules, shards),
            shards,
        }
    }

    /// Per shard, the rules it must look at for the event (bit `r`: rule `r`): those of which
    /// it owns the event's (rule, group) pair, and every `Kx population` rule that counts the
    /// event (each shard counts the whole population). A shard with no bit set does not get
    /// the event. Past 64 rules, a shard that gets it looks at every rule (`u64::MAX`).
    pub fn targets<H: crate::engine::HostLike>(&mut self, event: &event::Event, host: &H, masks: &mut [u64]) {
        masks.iter_mut().for_each(|m| *m = 0);
        if self.key_tables.iter().any(|t| t.len() > MAX_KEYS) {
            for table in self.key_tables.iter_mut() {
                *table = KeyTable::default();
            }
            self.owners = Owners::new(self.plans.len(), self.shards);
        }
        let mut keys: Vec<Option<u32>> = vec![None; self.key_tables.len()];
        let mut parts: Vec<KeyRef> = Vec::new();
        for (index, plan) in self.plans.iter().enumerate() {
            if plan.source != event.kind {
                continue;
            }
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
            let bit = if index < 64 { 1u64 << index } else { u64::MAX };
            if plan.population.is_some() {
                masks.iter_mut().for_each(|m| *m |= bit);
                continue;
            }
            let by_id = plan.by_id;
            if keys[by_id].is_none() {
                parts.clear();
                parts.extend(plan.by.iter().map(|p| crate::engine::key_part_with(get(event, p), host)));
                keys[by_id] = Some(self.key_tables[by_id].intern_ref(&parts));
            }
            let shard =
                self.owners
                    .shard(index, plan, keys[by_id].unwrap(), &self.key_tables[by_id]);
            masks[shard as usize] |= bit;
        }
    }
}

/// A batch's counts in stage 1: messages refused (by index), events decoded, each input
/// partition's largest event time (from ``known``, before the batch) and its events refused in
/// a row for being too far ahead of it (from ``known_runs``; engine.py `Engine.is_ahead`).
struct Tally<'k> {
    known: &'k HashMap<i64, i64>,
    known_runs: &'k HashMap<i64, u32>,
    skew: Option<i64>,
    beats: HashMap<i64, i64>,
    runs: HashMap<i64, u32>,
    refused: Vec<usize>,
    ahead: Vec<(usize, i64, i64)>, // (index, event time, the partition's time): refused, final
    events: usize,
}

impl<'k> Tally<'k> {
    fn new(known: &'k HashMap<i64, i64>, known_runs: &'k HashMap<i64, u32>, skew: Option<i64>) -> Tally<'k> {
        Tally {
            known,
            known_runs,
            skew,
            beats: HashMap::new(),
            runs: HashMap::new(),
            refused: Vec::new(),
            ahead: Vec::new(),
            events: 0,
        }
    }
}

/// Events refused in a row as too far ahead before the next one is taken (engine.py AHEAD_CONFIRM).
pub const AHEAD_CONFIRM: u32 = 8;

/// One message of a batch through stage 1: the event when some shard must see it (``masks``
/// says which, and with which rules), counted in ``tally`` (refused: too big, or not accepted
/// by the native decoder — Python gives the reason).
#[allow(clippy::too_many_arguments)]
#[inline]
fn route_one<'a, H: crate::engine::HostLike>(
    router: &mut Router,
    tally: &mut Tally,
    index: usize,
    raw: &'a [u8],
    ts: Option<i64>,
    max_bytes: usize,
    partition: i64,
    host: &H,
    masks: &mut [u64],
) -> Option<event::Event<'a>> {
    let decoded = if raw.len() > max_bytes { None } else { decode_with(raw, ts) };
    let Some(event) = decoded else {
        tally.refused.push(index);
        return None;
    };
    let known = tally.known;
    let beat = tally
        .beats
        .entry(partition)
        .or_insert_with(|| known.get(&partition).copied().unwrap_or(-1));
    if let Some(skew) = tally.skew {
        // engine.py `Engine.is_ahead`, per input partition
        let known_runs = tally.known_runs;
        let run = tally
            .runs
            .entry(partition)
            .or_insert_with(|| known_runs.get(&partition).copied().unwrap_or(0));
        if *beat >= 0 && event.ts > beat.saturating_add(skew) {
            *run += 1;
            if *run < AHEAD_CONFIRM {
                tally.ahead.push((index, event.ts, *beat));
                return None;
            }
        }
        *run = 0;
    }
    tally.events += 1;
    if event.ts > *beat {
        *beat = event.ts;
    }
    if !routable(event.kind) {
        return None;
    }
    router.targets(&event, host, masks);
    if masks.iter().all(|m| *m == 0) {
        return None;
    }
    Some(event)
}

/// Whether an event of this kind is routed at all (rules count inference and report events).
pub fn routable(kind: Kind) -> bool {
    matches!(kind, Kind::Inference | Kind::Report)
}

pub fn decode_with(raw: &[u8], ts: Option<i64>) -> Option<event::Event<'_>> {
    event::decode(raw, ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn keys_as_python_dumps_them() {
        let mut s = String::new();
        json_str("a\"é\u{1F600}\u{7f}", &mut s);
        assert_eq!(s, "\"a\\\"\\u00e9\\ud83d\\ude00\\u007f\"");
        assert_eq!(json_float(1e16), "1e+16");
    }
}

// ---- Python ----------------------------------------------------------------------------

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::collections::HashMap;

const RAW_TEXT_FIELDS: [&str; 2] = ["prompt", "output"];

/// What `NativeRouter::route_batch` returns: (per shard, its routed bodies — one, or several
/// when large; an empty one when it has no event of the batch), [(input partition, first
/// offset, last offset, [events per shard])] in order of appearance, refused [batch index],
/// events, {partition: largest event time after the batch}, {partition: refused in a row after
/// the batch}, ahead [(batch index, event time, the partition's time)].
type Routed<'py> = (
    Vec<Vec<Bound<'py, PyBytes>>>,
    Vec<(i64, i64, i64, Vec<u32>)>,
    Vec<usize>,
    usize,
    HashMap<i64, i64>,
    HashMap<i64, u32>,
    Vec<(usize, i64, i64)>,
);

/// Stage 1 of the worker (engine/firebreak/adapters/live/routing.py): a batch of input messages
/// in, per shard the rows of the events it must see out (rows.rs).
#[pyclass(module = "firebreak._native")]
pub struct NativeRouter {
    router: Router,
    host: PyObject,
    limit: usize, // bytes of a shard's rows before they are split into another body
    bufs: Vec<Vec<u8>>, // per shard, its rows of the batch (kept between batches: no fresh pages each time)
    cuts: Vec<Vec<usize>>, // per shard, where its bodies end in `bufs`
    value: Vec<u8>, // the event being written
}

#[pymethods]
impl NativeRouter {
    #[new]
    fn new(plans: &[u8], shards: u32, host: PyObject, limit: usize) -> PyResult<NativeRouter> {
        let plans = crate::plan::parse_plans(plans).map_err(PyValueError::new_err)?;
        if shards == 0 || shards > 64 {
            return Err(PyValueError::new_err("the native router takes 1 to 64 shards"));
        }
        let n = shards as usize;
        Ok(NativeRouter {
            router: Router::new(plans, shards),
            host,
            limit,
            bufs: vec![Vec::new(); n],
            cuts: vec![Vec::new(); n],
            value: Vec::new(),
        })
    }

    /// ``messages``: [(partition, offset, value or None)]; ``times``: {batch index: ts} for
    /// events only the Python decoder accepts (their time as it found it); ``known``: the
    /// largest event time heard of per partition before this batch; ``runs``: per partition,
    /// its events refused in a row as too far ahead before this batch; ``max_skew``: how far
    /// after a partition's largest event time an event may be (None: no bound; engine.py
    /// `Engine.is_ahead`). Returns `Routed` — the events refused as ahead are final, not in
    /// ``refused``. Decodes, routes and writes without the GIL.
    #[pyo3(signature = (messages, times, known, max_bytes, runs=HashMap::new(), max_skew=None))]
    #[allow(clippy::too_many_arguments)]
    fn route_batch<'py>(
        &mut self,
        py: Python<'py>,
        messages: &Bound<'py, PyList>,
        times: HashMap<usize, i64>,
        known: HashMap<i64, i64>,
        max_bytes: usize,
        runs: HashMap<i64, u32>,
        max_skew: Option<i64>,
    ) -> PyResult<Routed<'py>> {
        if max_skew.is_some_and(|s| s < 0) {
            return Err(PyValueError::new_err("the maximum skew cannot be negative"));
        }
        let shards = self.router.shards as usize;
        let mut values = Vec::with_capacity(messages.len()); // strong references: the bytes stay alive
        for item in messages.iter() {
            let item = item.downcast::<PyTuple>()?;
            let partition: i64 = item.get_item(0)?.extract()?;
            let offset: i64 = item.get_item(1)?.extract()?;
            let value = item.get_item(2)?;
            let value = if value.is_none() { None } else { Some(value.downcast_into::<PyBytes>()?) };
            values.push((partition, offset, value));
        }
        let spans: Vec<(i64, i64, &[u8])> =
            values.iter().map(|(p, o, v)| (*p, *o, v.as_ref().map_or(&b""[..], |b| b.as_bytes()))).collect();
        let (router, host, limit) = (&mut self.router, &self.host, self.limit);
        let (bufs, cuts, value) = (&mut self.bufs, &mut self.cuts, &mut self.value);
        let (parts, beats, runs, ahead, refused, events) = py.allow_threads(|| {
            let host = crate::engine::Remote(host);
            let mut parts: Vec<(i64, i64, i64, Vec<u32>)> = Vec::new();
            let mut tally = Tally::new(&known, &runs, max_skew);
            bufs.iter_mut().for_each(Vec::clear);
            cuts.iter_mut().for_each(Vec::clear);
            let mut masks = vec![0u64; shards];
            for (index, &(partition, offset, raw)) in spans.iter().enumerate() {
                let part = match parts.iter().position(|p| p.0 == partition) {
                    Some(i) => i,
                    None => {
                        parts.push((partition, offset, offset, vec![0; shards]));
                        parts.len() - 1
                    }
                };
                parts[part].2 = offset;
                let ts = times.get(&index).copied();
                let Some(event) = route_one(router, &mut tally, index, raw, ts, max_bytes, partition, &host, &mut masks)
                else {
                    continue;
                };
                value.clear();
                rows::write_obj(value, &event.data, &RAW_TEXT_FIELDS);
                let size = 4 + rows::ROW_HEAD + value.len();
                for (shard, mask) in masks.iter().enumerate() {
                    if *mask == 0 {
                        continue;
                    }
                    parts[part].3[shard] += 1;
                    let (buf, cut) = (&mut bufs[shard], &mut cuts[shard]);
                    let began = cut.last().copied().unwrap_or(0);
                    if buf.len() > began && buf.len() - began + size > limit {
                        cut.push(buf.len()); // past the limit: the rows go on in another body
                    }
                    rows::write_row(buf, partition, offset, event.ts, *mask, value);
                }
            }
            for (buf, cut) in bufs.iter().zip(cuts.iter_mut()) {
                cut.push(buf.len()); // the last body (empty when the shard has no event of the batch)
            }
            let Tally { mut beats, runs: mut new_runs, ahead, refused, events, .. } = tally;
            beats.retain(|_, t| *t >= 0);
            for (partition, run) in runs.iter() {
                new_runs.entry(*partition).or_insert(*run); // partitions not in this batch: as they were
            }
            (parts, beats, new_runs, ahead, refused, events)
        });
        let bodies = self
            .bufs
            .iter()
            .zip(&self.cuts)
            .map(|(buf, cut)| {
                let mut began = 0;
                cut.iter()
                    .map(|&end| {
                        let body = PyBytes::new(py, &buf[began..end]);
                        began = end;
                        body
                    })
                    .collect()
            })
            .collect();
        Ok((bodies, parts, refused, events, beats, runs, ahead))
    }

    /// `sharding.shard_of` for a key given as the Python core's snapshot writes it (JSON).
    #[staticmethod]
    fn shard_of(rule: &str, key_json: &[u8], shards: u32) -> PyResult<u32> {
        let value = event::parse_json(key_json).ok_or_else(|| PyValueError::new_err("key: not JSON"))?;
        let items = value.as_array().ok_or_else(|| PyValueError::new_err("key: not a list"))?;
        let parts = items
            .iter()
            .map(KeyPart::from_json)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| PyValueError::new_err("key: not a group key"))?;
        Ok(shard_of(rule, &parts, shards))
    }
}

/// Stage 2's half (called by `Core.take_routed`): the events of a routed message's body, those
/// at or after ``next[partition]`` aggregated without moving time (the others were taken
/// already: stage 1 sent them again after a restart); ``next`` moves past each one taken.
/// ``masks``: look only at the rules each row's mask names (stage 1 had the same rules).
/// Returns (events taken, late, duplicates).
pub fn take_payload<H: crate::engine::HostLike>(
    engine: &mut crate::engine::Engine,
    body: &[u8],
    next: &mut HashMap<i64, i64>,
    masks: bool,
    host: &H,
) -> PyResult<(usize, usize, usize)> {
    let (mut taken, mut late, mut duplicates) = (0, 0, 0);
    for row in rows::rows(body) {
        let rows::Row { partition, offset, ts, mask, value } = row.map_err(PyValueError::new_err)?;
        let next_offset = next.entry(partition).or_insert(0);
        if offset < *next_offset {
            duplicates += 1;
            continue;
        }
        *next_offset = offset + 1;
        let event = rows::read_event(value, ts).ok_or_else(|| {
            PyValueError::new_err(format!("routed event at input partition {partition} offset {offset} is not an event"))
        })?;
        let added = if masks { engine.add_passed(&event, host, mask) } else { engine.add_masked(&event, host, None) };
        if added {
            taken += 1;
        } else {
            late += 1;
        }
    }
    Ok((taken, late, duplicates))
}
