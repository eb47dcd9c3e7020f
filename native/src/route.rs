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
//! A routed message (format 7) is one header line of JSON (written by routing.py), then one
//! binary row per event (rows.rs: input partition and offset, event time in ms, the rules the
//! shard must look at as a bit mask, the population rules it only counts the event for and
//! which of them it is flagged for, the event with every field but `prompt`/`output`), the
//! rows packed into one zstd frame (frame.rs).

use crate::host::Text;
use crate::keys::{key_part_with, KeyRef, KeyTable};
use crate::event::{self, Kind};
use crate::plan::Plan;
use crate::rows;
use crate::value::{float_repr, get, KeyPart, Num};
use std::collections::HashMap;
use std::fmt::Write;

/// Fields an event is routed without (routed format 5, live/routed.py): stage 2 never reads them.
const RAW_TEXT_FIELDS: [&str; 2] = ["prompt", "output"];

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
    /// The traffic watch's tallies while it watches (watch.rs): every event routed is counted.
    pub watch: Option<crate::watch::Watch>,
    /// Per plan, whether the event `targets` last looked at is of its type and passes its label
    /// and `where` (what the watch counts by).
    pub passes: Vec<bool>,
    /// Per `by` list, the key id of the event `targets` last looked at (None: no plan of it passed).
    pub keys: Vec<Option<u32>>,
    /// Counts the times the key tables were started afresh (their ids then stand for other keys).
    pub key_epoch: u64,
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
            watch: None,
            passes: vec![false; rules],
            keys: Vec::new(),
            key_epoch: 0,
        }
    }

    /// Per shard, the rules it must look at for the event (bit `r`: rule `r`) in ``masks``:
    /// those of which it owns the event's (rule, group) pair. In ``pops``, per shard, the
    /// `Kx population` / `baseline(S, population)` rules that count the event there without the
    /// shard owning its pair (each shard counts the whole population, as one engine does; the
    /// owner's bit is in ``masks``); ``flagged``: those of the event's population rules whose flag
    /// it has set (`flags.<flag> is True`). A shard with no bit set in either does not get the
    /// event. Past 64 rules, a shard that gets it looks at every rule (`u64::MAX`) and checks
    /// every owner itself, population rules on every shard (``pops`` stay empty).
    pub fn targets<H: Text>(
        &mut self,
        event: &event::Event,
        host: &H,
        masks: &mut [u64],
        pops: &mut [u64],
        flagged: &mut u64,
    ) {
        masks.iter_mut().for_each(|m| *m = 0);
        pops.iter_mut().for_each(|m| *m = 0);
        *flagged = 0;
        if self.key_tables.iter().any(|t| t.len() > MAX_KEYS) {
            for table in self.key_tables.iter_mut() {
                *table = KeyTable::default();
            }
            self.owners = Owners::new(self.plans.len(), self.shards);
            self.key_epoch += 1;
        }
        let split = self.plans.len() <= 64; // population rules named apart from the pairs owned
        let watched = self.watch.is_some(); // the watch counts every passing rule's group
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        keys.resize(self.key_tables.len(), None);
        let mut parts: Vec<KeyRef> = Vec::new();
        self.passes.iter_mut().for_each(|p| *p = false);
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
            self.passes[index] = true;
            let bit = if index < 64 { 1u64 << index } else { u64::MAX };
            let population = plan.population.is_some() || plan.population_fallback;
            if population && !split && !watched {
                masks.iter_mut().for_each(|m| *m |= bit);
                continue;
            }
            let by_id = plan.by_id;
            if keys[by_id].is_none() {
                parts.clear();
                parts.extend(plan.by.iter().map(|p| key_part_with(get(event, p), host)));
                keys[by_id] = Some(self.key_tables[by_id].intern_ref(&parts));
            }
            if population && !split {
                masks.iter_mut().for_each(|m| *m |= bit);
                continue;
            }
            let shard =
                self.owners
                    .shard(index, plan, keys[by_id].unwrap(), &self.key_tables[by_id]);
            masks[shard as usize] |= bit;
            if population {
                // engine.rs `add_routed`: the step's population totals, events then flagged
                pops.iter_mut().enumerate().filter(|(s, _)| *s != shard as usize).for_each(|(_, m)| *m |= bit);
                if crate::window::flagged(event, plan.flag.as_deref().unwrap_or("")) {
                    *flagged |= bit;
                }
            }
        }
        self.keys = keys;
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
fn route_one<'a, H: Text>(
    router: &mut Router,
    tally: &mut Tally,
    index: usize,
    raw: &'a [u8],
    ts: Option<i64>,
    max_bytes: usize,
    partition: i64,
    host: &H,
    masks: &mut [u64],
    pops: &mut [u64],
    flagged: &mut u64,
    watched: bool,
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
    router.targets(&event, host, masks, pops, flagged);
    if watched {
        if let Some(watch) = router.watch.as_mut() {
            watch.observe(&event, &router.passes, &router.keys, router.key_epoch, host);
        }
    }
    if masks.iter().chain(pops.iter()).all(|m| *m == 0) {
        return None;
    }
    Some(event)
}

/// What `Router::route_batch` gives for one batch of input messages (`NativeRouter.route_batch`
/// hands it to Python with the bodies as a `RoutedBatch`, py/router.rs).
pub struct RoutedBatch {
    /// (input partition, first offset, last offset, [events per shard]) in order of appearance.
    pub parts: Vec<(i64, i64, i64, Vec<u32>)>,
    /// {partition: largest event time after the batch}.
    pub beats: HashMap<i64, i64>,
    /// {partition: events refused in a row as too far ahead, after the batch}.
    pub runs: HashMap<i64, u32>,
    /// (batch index, event time, the partition's time) of the events refused as ahead: final.
    pub ahead: Vec<(usize, i64, i64)>,
    /// Batch indexes of the messages the native decoder did not accept (Python gives the reason).
    pub refused: Vec<usize>,
    pub events: usize,
}

/// Per shard, the rows of a batch (rows.rs) and where its bodies end, then the bodies packed
/// (one zstd frame each, frame.rs): kept between batches so that routing takes no fresh pages
/// each time.
#[derive(Default)]
pub struct RowBufs {
    /// Per shard, its rows of the batch.
    pub bufs: Vec<Vec<u8>>,
    /// Per shard, where its bodies end in `bufs` (the last one empty when it has no event).
    pub cuts: Vec<Vec<usize>>,
    /// Per shard, its bodies packed (`pack`), and where each ends.
    packed: Vec<Vec<u8>>,
    packed_cuts: Vec<Vec<usize>>,
    /// The event being written.
    value: Vec<u8>,
}

/// ``buf`` cut at ``cuts``: its bodies.
fn cut_at<'b>(buf: &'b [u8], cuts: &[usize]) -> Vec<&'b [u8]> {
    let mut began = 0;
    cuts.iter()
        .map(|&end| {
            let body = &buf[began..end];
            began = end;
            body
        })
        .collect()
}

impl RowBufs {
    pub fn new(shards: usize) -> RowBufs {
        RowBufs { bufs: vec![Vec::new(); shards], cuts: vec![Vec::new(); shards], ..RowBufs::default() }
    }

    /// Every body of rows packed into one zstd frame (an empty body stays empty): `bodies`.
    pub fn pack(&mut self, packer: &mut crate::frame::Packer) {
        let shards = self.bufs.len();
        self.packed.resize_with(shards, Vec::new);
        self.packed_cuts.resize_with(shards, Vec::new);
        for shard in 0..shards {
            let (packed, cuts) = (&mut self.packed[shard], &mut self.packed_cuts[shard]);
            packed.clear();
            cuts.clear();
            for body in cut_at(&self.bufs[shard], &self.cuts[shard]) {
                packer.pack(body, packed);
                cuts.push(packed.len());
            }
        }
    }

    /// Per shard, its packed bodies (after `pack`) as slices.
    pub fn bodies(&self) -> impl Iterator<Item = Vec<&[u8]>> {
        self.packed.iter().zip(&self.packed_cuts).map(|(buf, cut)| cut_at(buf, cut))
    }
}

impl Router {
    /// Stage 1 over one batch: ``spans`` (partition, offset, value; empty for none); ``times``
    /// {batch index: ts} of events only the Python decoder accepts; ``known`` / ``runs`` per
    /// partition its largest event time and events refused in a row as ahead before the batch;
    /// ``limit``: bytes of a shard's rows before they go on in another body; the rows in ``out``.
    #[allow(clippy::too_many_arguments)]
    pub fn route_batch<H: Text>(
        &mut self,
        spans: &[(i64, i64, &[u8])],
        times: &HashMap<usize, i64>,
        known: &HashMap<i64, i64>,
        runs: &HashMap<i64, u32>,
        max_skew: Option<i64>,
        max_bytes: usize,
        limit: usize,
        host: &H,
        out: &mut RowBufs,
    ) -> RoutedBatch {
        let shards = self.shards as usize;
        let mut parts: Vec<(i64, i64, i64, Vec<u32>)> = Vec::new();
        let mut tally = Tally::new(known, runs, max_skew);
        out.bufs.resize_with(shards, Vec::new);
        out.cuts.resize_with(shards, Vec::new);
        out.bufs.iter_mut().for_each(Vec::clear);
        out.cuts.iter_mut().for_each(Vec::clear);
        let mut masks = vec![0u64; shards];
        let mut pops = vec![0u64; shards];
        let mut flagged = 0u64;
        if let Some(watch) = self.watch.as_mut() {
            if times.is_empty() {
                watch.again_seen.clear(); // a new batch
            }
        }
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
            // the watch counts each event of a batch once: in its first call every event; in a
            // call again with the times Python found (``times``), only those events (once)
            let watched = match self.watch.as_mut() {
                None => false,
                Some(_) if times.is_empty() => true,
                Some(watch) => ts.is_some() && watch.again_seen.insert(index),
            };
            let Some(event) = route_one(
                self, &mut tally, index, raw, ts, max_bytes, partition, host, &mut masks, &mut pops, &mut flagged,
                watched,
            )
            else {
                continue;
            };
            let value = &mut out.value;
            value.clear();
            rows::write_obj(value, &event.data, &RAW_TEXT_FIELDS);
            let size = 4 + rows::ROW_HEAD + value.len();
            for (shard, (mask, pop)) in masks.iter().zip(&pops).enumerate() {
                if *mask == 0 && *pop == 0 {
                    continue;
                }
                parts[part].3[shard] += 1;
                let (buf, cut) = (&mut out.bufs[shard], &mut out.cuts[shard]);
                let began = cut.last().copied().unwrap_or(0);
                if buf.len() > began && buf.len() - began + size > limit {
                    cut.push(buf.len()); // past the limit: the rows go on in another body
                }
                // a row that only counts population rules keeps its value: a shard of other
                // rules (after a reload: `rv` not its own) evaluates it in full
                rows::write_row(buf, partition, offset, event.ts, *mask, *pop, *pop & flagged, value);
            }
        }
        for (buf, cut) in out.bufs.iter().zip(out.cuts.iter_mut()) {
            cut.push(buf.len()); // the last body (empty when the shard has no event of the batch)
        }
        let Tally { mut beats, runs: mut new_runs, ahead, refused, events, .. } = tally;
        beats.retain(|_, t| *t >= 0);
        for (partition, run) in runs.iter() {
            new_runs.entry(*partition).or_insert(*run); // partitions not in this batch: as they were
        }
        RoutedBatch { parts, beats, runs: new_runs, ahead, refused, events }
    }
}

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
