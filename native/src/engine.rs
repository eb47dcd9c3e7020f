//! The engine loop of engine/firebreak/core/engine.py: events in, evaluation steps as the watermark
//! passes them, in (time, rule, group) order. Aggregation, scheduling by need, windows,
//! baselines, population totals and whether a condition holds are computed here; when a
//! reading holds, or the group is pending or firing, the Python lifecycle
//! (incidents.evaluate_group, through the host's `step`) decides and writes the records.

use crate::event::{Event, Kind};
use crate::groups::{Ends, Groups};
pub use crate::host::{Host, Rec, Status, Step, Text};
pub use crate::keys::{key_part_with, KeyRef, KeyTable, KEYS_CHECKED};
use crate::schedule::Wheel;
use crate::json::J;
use crate::plan::{Func, Op, Plan};
use crate::value::{get, Num};
use crate::window::{flagged, int_div, metric_value, sample_size, summarize, Bucket, Summary, SCALE};
use rustc_hash::FxHashSet as HashSet;
use std::collections::{BTreeMap, VecDeque};

/// How many groups ahead `evaluate` asks for.
const PREFETCH_AHEAD: usize = 8;

/// A group's buckets, sorted by start: new ones come at the back, expired ones leave at the front.
pub type Buckets = VecDeque<(i64, Bucket)>;


/// A span a group's incident covered (`engine.excluded_span`), kept out of its baseline:
/// [start, end), and the baseline frozen at the incident's onset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Excluded {
    pub start: i64,
    pub end: i64,
    pub baseline: Option<f64>,
}

/// ``O``: the host's handle to an object it made (`Host::Obj`).
pub struct Group<O> {
    pub buckets: Buckets, // sorted by start
    pub first_seen: Option<i64>,
    pub status: Status,
    pub frozen_baseline: Option<f64>,
    pub life: Option<O>, // incidents.Lifecycle while pending or firing
    pub dict: Option<O>, // the group's values as records show them
    pub totals: Totals,
    /// `Kx baseline` rules: the spans of the group's past incidents, oldest first (boxed: most
    /// groups never have one, and the groups are kept side by side).
    pub excluded: Option<Box<Vec<Excluded>>>,
    /// The last step the group was evaluated at (i64::MIN: not since it was made or
    /// restored). Buckets before that step's window are out of every later window: the
    /// core drops their users and evidence then (snapshots show them empty), and so does
    /// this engine — at each evaluation of the group (`clear_before`), and in `snapshot`.
    pub seen_at: i64,
    /// How many buckets, from the oldest, hold no users or evidence any more (`clear_before`).
    cleared: usize,
}

/// What a group's live buckets hold altogether, kept beside them so that most evaluations
/// of a quiet group are decided without reading its buckets (`can_hold`): any window is a
/// subset of the live buckets, so these bound what a window can reach.
#[derive(Clone, Copy, Default)]
pub struct Totals {
    pub oldest: i64, // start of the first bucket (when there is one)
    pub n: i64,
    pub hits: i64,
    pub vn: i64,
    pub total: i128,   // sum of the values (millionths)
    pub negative: bool, // some value was negative: `total` bounds nothing
}

impl Totals {
    pub fn add(&mut self, b: &Bucket) {
        self.n += b.n;
        self.hits += b.hits;
        self.vn += b.vn();
        self.total += b.total();
        self.negative |= b.lo().is_some_and(|lo| lo.f() < 0.0);
    }
    pub fn remove(&mut self, b: &Bucket) {
        self.n -= b.n;
        self.hits -= b.hits;
        self.vn -= b.vn();
        self.total -= b.total();
    }
    pub fn of(buckets: &Buckets) -> Totals {
        let mut t = Totals::default();
        for (_, b) in buckets {
            t.add(b);
        }
        t.oldest = buckets.front().map(|(s, _)| *s).unwrap_or(0);
        t
    }
}

impl<O> Ends for Group<O> {
    type Bucket = (i64, Bucket);
    #[inline]
    fn newest(&self) -> Option<&(i64, Bucket)> {
        self.buckets.back()
    }
    #[inline]
    fn oldest(&self) -> Option<&(i64, Bucket)> {
        self.buckets.front()
    }
}

impl<O> Group<O> {
    pub fn new() -> Group<O> {
        Group {
            buckets: VecDeque::new(),
            first_seen: None,
            status: Status::Inactive,
            frozen_baseline: None,
            life: None,
            dict: None,
            totals: Totals::default(),
            excluded: None,
            seen_at: i64::MIN,
            cleared: 0,
        }
    }

    /// Drop the users and evidence of the buckets that start before ``window_from``: each
    /// bucket once (those before `cleared` are done), without reading any when the oldest
    /// is in the window.
    pub fn clear_before(&mut self, window_from: i64) {
        if self.totals.oldest >= window_from || self.cleared >= self.buckets.len() {
            return; // (`totals.oldest`: the first bucket's start, or 0 without buckets)
        }
        let mut i = self.cleared;
        while i < self.buckets.len() && self.buckets[i].0 < window_from {
            let b = &mut self.buckets[i].1;
            b.users = Default::default();
            b.evidence = Box::default();
            i += 1;
        }
        self.cleared = i;
    }

    /// The spans kept out of the group's baseline.
    pub fn excluded(&self) -> &[Excluded] {
        self.excluded.as_deref().map(Vec::as_slice).unwrap_or(&[])
    }

    /// `engine.add_excluded`: a span after the others; one overlapping the last joins it,
    /// keeping the earlier baseline.
    pub fn add_excluded(&mut self, span: Excluded) {
        let spans = self.excluded.get_or_insert_with(Default::default);
        match spans.last_mut() {
            Some(last) if span.start < last.end => last.end = span.end,
            _ => spans.push(span),
        }
    }

    /// Drop the buckets no window or baseline can see any more (starting before ``horizon``),
    /// and the excluded spans that end before it (`engine.expire_excluded`).
    pub fn expire(&mut self, horizon: i64) {
        if let Some(spans) = self.excluded.as_mut() {
            let gone = spans.partition_point(|span| span.end <= horizon);
            if gone != 0 {
                spans.drain(..gone);
                if spans.is_empty() {
                    self.excluded = None;
                }
            }
        }
        if self.buckets.is_empty() || self.totals.oldest >= horizon {
            return;
        }
        while let Some((s, b)) = self.buckets.front() {
            if *s >= horizon {
                self.totals.oldest = *s;
                break;
            }
            self.totals.remove(b);
            self.buckets.pop_front();
            self.cleared = self.cleared.saturating_sub(1);
        }
    }
}

/// False when no window of the group's live buckets can make the rule hold (`read` would
/// say so): fewer events than `min N events` or `min N flagged`, or a count or a sum of
/// non-negative values that stays under an absolute `>`/`>=` limit even over all of them.
/// Only ever skips evaluations whose reading does not hold, so it changes no record.
pub fn can_hold(plan: &Plan, t: &Totals) -> bool {
    if plan.needs_sample && (if plan.numeric() { t.vn } else { t.n }) < plan.min_events {
        return false;
    }
    if plan.min_flagged != 0 && t.hits < plan.min_flagged {
        return false;
    }
    if !matches!(plan.op, Op::Gt | Op::Ge) {
        return true;
    }
    // A rate or a count of flagged events over a limit that is always above zero (a positive
    // threshold; k times a baseline or population rate, which `read` floors above zero)
    // needs a flagged event.
    if plan.flag.is_some() && t.hits == 0 {
        let positive = match (plan.population, plan.factor, plan.threshold) {
            (Some(k), _, _) => k > 0.0,
            (None, Some(f), _) => f > 0.0,
            (None, None, Some(limit)) => limit > 0.0 || (limit == 0.0 && plan.op == Op::Gt),
            (None, None, None) => false,
        };
        if positive {
            return false;
        }
    }
    if plan.factor.is_some() || plan.population.is_some() {
        return true;
    }
    let Some(limit) = plan.threshold else {
        return true;
    };
    match plan.func {
        Func::Count => plan.op.compare(if plan.flag.is_some() { t.hits } else { t.n } as f64, limit),
        // metric_value: total / SCALE; monotone in the total, so the whole bounds any window
        Func::Sum if !t.negative => plan.op.compare(int_div(t.total, SCALE), limit),
        _ => true,
    }
}


pub struct RuleState<O> {
    pub plan: Plan,
    pub groups: Groups<Group<O>>,
    pub next_eval: Option<i64>,
    pub due: Wheel,
    pub active: HashSet<u32>,
    pub population: Option<Vec<(i64, (i64, i64))>>, // per step start (sorted): events, flagged
}

impl<O> RuleState<O> {
    pub fn new(plan: Plan) -> RuleState<O> {
        // `Kx population` and `baseline(S, population)` count every group's events per step
        let population = (plan.population.is_some() || plan.population_fallback).then(Vec::new);
        RuleState {
            due: Wheel::new(plan.step_ms),
            plan,
            groups: Groups::default(),
            next_eval: None,
            active: HashSet::default(),
            population,
        }
    }

    pub fn schedule(&mut self, key: u32, start: i64, first: bool, after: Option<i64>) {
        let p = &self.plan;
        let step = p.step_ms;
        let baseline = p.factor.is_some();
        let times = [
            Some(start + step),
            Some(start + p.window_ms + step),
            Some(start + p.memory_ms + step),
            baseline.then_some(start + p.window_ms + p.baseline_ms + step),
            (baseline && first).then_some(start + p.window_ms + p.baseline_ms),
            (baseline && first && p.warmup_ms > 0).then_some(start + p.window_ms + p.warmup_ms),
        ];
        for at in times.into_iter().flatten() {
            if after.is_none_or(|a| at >= a) {
                self.due.push(at, key);
            }
        }
    }

    fn population_at(&mut self, at: i64) -> (i64, i64) {
        let window_from = at - self.plan.window_ms;
        let population = self.population.as_mut().unwrap();
        let old = population.partition_point(|(start, _)| *start < window_from);
        population.drain(..old);
        population
            .iter()
            .take_while(|(start, _)| *start < at)
            .fold((0, 0), |(n, h), (_, (e, f))| (n + e, h + f))
    }
}

pub struct Reading {
    pub value: Option<Num>,
    pub limit: Option<f64>,
    pub baseline: Option<f64>,
    pub holds: bool,
    pub p_value: Option<f64>,
    /// The counts of the measured reference the test compared the window with.
    pub reference: Option<Counts>,
}

/// `incidents.Counts`: what a measured reference holds, for the two-sample test of a rule
/// `with C% confidence` — `observed` events (flagged ones for rate / count(FLAG)) over
/// `exposure` (its events for a rate, its length in ms for a count), taken as `least` at
/// the least (one per window length of its span, as the baseline's value is floored).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Counts {
    pub observed: i64,
    pub exposure: f64,
    pub least: i64,
}

/// `engine.Reference`: a baseline's value and, when measured from counts, those counts.
pub type Reference = (Option<f64>, Option<Counts>);

/// engine.py DEFAULT_MAX_SKEW_MS and AHEAD_CONFIRM.
pub const DEFAULT_MAX_SKEW_MS: i64 = 3_600_000;
pub const AHEAD_CONFIRM: u32 = 8;

/// The rules an engine looks at, a bit by rule index (the two threads' split, a shard's routed
/// mask): up to 128 rules; a rule past them is always looked at.
pub type RuleMask = u128;

/// ``O``: the host's handle to an object it made (`Host::Obj`): lifecycles, group values, records.
pub struct Engine<O> {
    pub rules: Vec<RuleState<O>>,
    pub lateness_ms: i64,
    pub max_ts: Option<i64>,
    pub watermark: Option<i64>,
    pub stats: BTreeMap<String, i64>, // restored counts; `stats()` adds the counters below
    pub events: i64,
    pub late: i64,
    pub changes: i64,
    pub opened: BTreeMap<String, i64>,
    pub key_tables: Vec<KeyTable>, // one per distinct `by` list (Plan::by_id)
    pub owner: Option<crate::route::Owner>, // a worker's shard: only its (rule, group) pairs
    pub seq: u64,                           // events processed (the order of records: `Rec`)
    pub max_skew_ms: Option<i64>,           // engine.py `Engine.max_skew_ms` (None: no bound)
    pub ahead_run: u32,                     // events refused as ahead since the last one taken
    /// Events are being routed ahead of being added (lib.rs `Behind`): their key ids are held
    /// outside the engine, so keys are not renumbered (`forget_keys`) until it is done.
    pub routing_ahead: bool,
    keys: Vec<Option<u32>>,         // scratch: the event's key per `by` list
    routed: Vec<(usize, u32)>,      // scratch: (rule index, key) of the rules an event reaches
}

fn bump(map: &mut BTreeMap<String, i64>, key: &str, by: i64) {
    match map.get_mut(key) {
        Some(count) => *count += by,
        None => {
            map.insert(key.to_string(), by);
        }
    }
}

impl<O> Engine<O> {
    pub fn new(mut plans: Vec<Plan>, lateness_ms: i64) -> Engine<O> {
        let by_lists = crate::plan::assign_by_ids(&mut plans);
        Engine {
            rules: plans.into_iter().map(RuleState::new).collect(),
            lateness_ms,
            max_ts: None,
            watermark: None,
            stats: BTreeMap::new(),
            events: 0,
            late: 0,
            changes: 0,
            opened: BTreeMap::new(),
            key_tables: (0..by_lists).map(|_| KeyTable::default()).collect(),
            owner: None,
            seq: 0,
            max_skew_ms: Some(DEFAULT_MAX_SKEW_MS),
            ahead_run: 0,
            routing_ahead: false,
            keys: vec![None; by_lists],
            routed: Vec::new(),
        }
    }

    /// The engine's counters as the Python core's `stats` Counter has them (no zero counts).
    pub fn stats(&self) -> BTreeMap<String, i64> {
        let mut stats = self.stats.clone();
        for (name, count) in [("events", self.events), ("late", self.late), ("changes", self.changes)] {
            if count != 0 {
                *stats.entry(name.to_string()).or_insert(0) += count;
            }
        }
        stats
    }

    pub fn is_late(&self, ts: i64) -> bool {
        self.watermark.is_some_and(|w| ts < w)
    }

    /// engine.py `Engine.is_ahead`: whether an event at ``ts`` (not late) is refused for being
    /// more than ``max_skew_ms`` after the latest event time taken; asked once per event,
    /// before it is added (the `AHEAD_CONFIRM`-th such event in a row is taken).
    pub fn is_ahead(&mut self, ts: i64) -> bool {
        match (self.max_skew_ms, self.max_ts) {
            (Some(skew), Some(max_ts)) if ts > max_ts.saturating_add(skew) => {
                self.ahead_run += 1;
                if self.ahead_run >= AHEAD_CONFIRM {
                    self.ahead_run = 0;
                    return false;
                }
                true
            }
            _ => {
                self.ahead_run = 0;
                false
            }
        }
    }

    /// `Engine.process`: the records go to ``out``; false when the event is late.
    pub fn process<H: Host<Obj = O>>(
        &mut self,
        event: &Event,
        host: &H,
        out: &mut Vec<Rec<O>>,
        mask: Option<RuleMask>,
    ) -> Result<bool, H::Error> {
        if !self.add_masked(event, host, mask) {
            return Ok(false);
        }
        self.move_time(event, host, out)?;
        Ok(true)
    }

    /// `process` of an event `route`d before (its pairs in ``routed``; it may have been
    /// routed before the event ahead of it was added: the same records).
    pub fn process_routed<H: Host<Obj = O>>(
        &mut self,
        event: &Event,
        routed: &[(usize, u32)],
        host: &H,
        out: &mut Vec<Rec<O>>,
    ) -> Result<bool, H::Error> {
        if !self.admit(event) {
            return Ok(false);
        }
        self.add_routed(event, host, routed, false);
        self.move_time(event, host, out)?;
        Ok(true)
    }

    /// `Engine.add` (aggregate one event without moving time; false, counted, when late),
    /// looking only at the rules whose bit is set in ``mask`` (a worker's shard: the
    /// rules stage 1 found it owns a pair of, or counts the population of; route.rs).
    pub fn add_masked<H: Host<Obj = O>>(&mut self, event: &Event, host: &H, mask: Option<RuleMask>) -> bool {
        if !self.admit(event) {
            return false;
        }
        self.aggregate(event, host, mask, false);
        true
    }

    /// `add_masked` with a mask stage 1 made (`route::Router::targets`, with these rules): its
    /// rules are the ones whose source, label and `where` the event passes, so they are not
    /// checked again here (past 64 rules a mask names them all: then they are).
    /// Up to 64 rules, ``mask`` names only rules of which this shard owns the event's pair
    /// (population rules too), and ``pop`` the population rules that count the event here without
    /// this shard owning its pair (``flagged``: those whose flag it has set): they are counted
    /// without routing the event to a group (`count_population`).
    pub fn add_passed<H: Host<Obj = O>>(&mut self, event: &Event, host: &H, mask: u64, pop: u64, flagged: u64) -> bool {
        if !self.admit(event) {
            return false;
        }
        let passed = self.rules.len() <= 64;
        // past 64 rules stage 1's mask names them all (u64::MAX): every rule is looked at
        let mask = if passed { RuleMask::from(mask) } else { RuleMask::MAX };
        self.aggregate(event, host, Some(mask), passed);
        self.count_population(event.ts, pop, flagged);
        true
    }

    /// A routed row that only counts population rules here (routed format 7: its mask empty,
    /// stage 1 had these rules): the event's time and which rules count it, flagged or not —
    /// what `add_routed` does for a population rule of a pair another shard owns — without
    /// reading the event. False, counted, when it is late.
    pub fn add_population_only(&mut self, ts: i64, pop: u64, flagged: u64) -> bool {
        // a routed event: an inference or a report, never a change
        if !self.admit_at(ts, false) {
            return false;
        }
        self.count_population(ts, pop, flagged);
        true
    }

    /// The population totals of the rules in ``pop`` (bit `r`: rule `r`), at ``ts``'s step:
    /// one event each, flagged for those in ``flagged`` (`add_routed`'s first half).
    fn count_population(&mut self, ts: i64, pop: u64, flagged: u64) {
        let mut bits = pop;
        while bits != 0 {
            let index = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let Some(state) = self.rules.get_mut(index) else {
                continue;
            };
            let start = ts - ts.rem_euclid(state.plan.step_ms);
            if let Some(population) = state.population.as_mut() {
                count_in(population, start, flagged & (1u64 << index) != 0);
            }
        }
    }

    /// The counters of an event that is not late (false, counted, when it is).
    fn admit(&mut self, event: &Event) -> bool {
        self.admit_at(event.ts, !matches!(event.kind, Kind::Inference | Kind::Report))
    }

    /// `admit` by an event's time alone (``change``: a change event, counted apart).
    fn admit_at(&mut self, ts: i64, change: bool) -> bool {
        if self.is_late(ts) {
            self.late += 1;
            return false;
        }
        self.events += 1;
        if change {
            self.changes += 1;
        }
        if self.max_ts.is_none_or(|m| ts > m) {
            self.max_ts = Some(ts);
        }
        true
    }

    /// After an event is added: its number, and the watermark it moves.
    fn move_time<H: Host<Obj = O>>(&mut self, event: &Event, host: &H, out: &mut Vec<Rec<O>>) -> Result<(), H::Error> {
        self.seq += 1;
        let watermark = event.ts - self.lateness_ms;
        if self.watermark.is_none_or(|w| watermark > w) {
            self.advance(watermark, host, out)?;
        }
        Ok(())
    }

    fn aggregate<H: Host<Obj = O>>(&mut self, event: &Event, host: &H, mask: Option<RuleMask>, passed: bool) {
        // Route first (which rules, which group), asking for each group and then its newest
        // bucket ahead of use; then add the event to each.
        let mut routed = std::mem::take(&mut self.routed);
        self.route(event, host, mask, passed, &mut routed);
        // ``passed``: stage 1 set a rule's bit for this shard only where the shard owns the
        // event's pair of it, or counts its population (route.rs `Router::targets`)
        self.add_routed(event, host, &routed, passed);
        self.routed = routed;
    }

    /// The rules of ``mask`` an inference or report event reaches, and its group key for each
    /// (interned): (rule index, key) into ``routed``; each group is asked for ahead of use.
    /// Nothing else changes: an event can be routed ahead of the one before it being added
    /// (`Engine::process_routed`).
    pub fn route<H: Host<Obj = O>>(
        &mut self,
        event: &Event,
        host: &H,
        mask: Option<RuleMask>,
        passed: bool, // the rules of ``mask`` are known to pass source, label and `where`
        routed: &mut Vec<(usize, u32)>,
    ) {
        let keys = &mut self.keys;
        keys.fill(None);
        let mut parts: Vec<KeyRef> = Vec::new();
        routed.clear();
        if !matches!(event.kind, Kind::Inference | Kind::Report) {
            return;
        }
        for (index, state) in self.rules.iter().enumerate() {
            if mask.is_some_and(|m| index < RuleMask::BITS as usize && m & (1 << index) == 0) {
                continue;
            }
            if !passed {
                if state.plan.source != event.kind {
                    continue;
                }
                if let Some(label) = &state.plan.label {
                    if !crate::event::has_label(event, label) {
                        continue;
                    }
                }
                if let Some(w) = &state.plan.where_ {
                    if !w.eval(event) {
                        continue;
                    }
                }
            }
            let by_id = state.plan.by_id;
            if keys[by_id].is_none() {
                parts.clear();
                parts.extend(
                    state
                        .plan
                        .by
                        .iter()
                        .map(|p| key_part_with(get(event, p), host)),
                );
                keys[by_id] = Some(self.key_tables[by_id].intern_ref(&parts));
            }
            let key = keys[by_id].unwrap();
            state.groups.prefetch(key);
            routed.push((index, key));
        }
    }

    /// Add ``event`` to the buckets of its `route`d (rule, key) pairs. ``owned``: the pairs
    /// are known to be this shard's (stage 1's mask said so, population rules too — routed
    /// format 7): their owner is not looked up again.
    fn add_routed<H: Host<Obj = O>>(&mut self, event: &Event, host: &H, routed: &[(usize, u32)], owned: bool) {
        let ts = event.ts;
        let mut user_hash: Option<Option<u64>> = None;
        let py_str = |v: &J| host.py_str(v);
        for &(index, key) in routed.iter() {
            self.rules[index].groups.prefetch_newest(key);
        }
        for &(index, key) in routed.iter() {
            let state = &mut self.rules[index];
            let step = state.plan.step_ms;
            let start = ts - ts.rem_euclid(step);
            if let Some(population) = state.population.as_mut() {
                count_in(population, start, flagged(event, state.plan.flag.as_deref().unwrap_or("")));
            }
            if let Some(owner) = self.owner.as_mut().filter(|_| !owned) {
                let table = &self.key_tables[state.plan.by_id];
                if owner.owners.shard(index, &state.plan, key, table) != owner.shard {
                    continue; // another shard's pair (its population counted above)
                }
            }
            let at = ensure_bucket(state, key, start);
            let group = state.groups.get_mut(key).unwrap();
            let bucket = &mut group.buckets[at].1;
            let (hits, vn, total) = (bucket.hits, bucket.vn(), bucket.total());
            bucket.add(&state.plan, event, &mut user_hash, &py_str);
            let t = &mut group.totals;
            t.n += 1;
            t.hits += bucket.hits - hits;
            if bucket.num().is_some() {
                t.vn += bucket.vn() - vn;
                t.total += bucket.total() - total;
                t.negative |= bucket.total() < total;
            }
        }
    }

    /// `Engine.advance`: move the watermark; the records go to ``out``.
    pub fn advance<H: Host<Obj = O>>(
        &mut self,
        watermark: i64,
        host: &H,
        out: &mut Vec<Rec<O>>,
    ) -> Result<(), H::Error> {
        if self.watermark.is_some_and(|w| watermark <= w) {
            return Ok(());
        }
        self.watermark = Some(watermark);
        self.advance_to(watermark, false, host, out)
    }

    pub fn finish<H: Host<Obj = O>>(&mut self, host: &H, out: &mut Vec<Rec<O>>) -> Result<(), H::Error> {
        let Some(max_ts) = self.max_ts else {
            return Ok(());
        };
        let end = max_ts + 1;
        self.advance_to(end, true, host, out)?;
        self.watermark = Some(match self.watermark {
            Some(w) if w != 0 => w.max(end),
            _ => end,
        });
        Ok(())
    }

    /// Evaluate every rule's steps up to ``watermark`` (``closing``: up to the end of the step
    /// holding it). Only the steps with work are visited: those with groups due (`Wheel`),
    /// and every step while a group is pending or firing. A step with neither would change
    /// nothing, so empty time between two events costs nothing. Each rule is evaluated on
    /// its own (nothing one rule does is seen by another); the records are then put in the
    /// core's order: (step time, rule index).
    fn advance_to<H: Host<Obj = O>>(
        &mut self,
        watermark: i64,
        closing: bool,
        host: &H,
        out: &mut Vec<Rec<O>>,
    ) -> Result<(), H::Error> {
        let begin = out.len();
        let mut evaluated_rules = 0;
        for index in 0..self.rules.len() {
            let state = &mut self.rules[index];
            let step = state.plan.step_ms;
            let last = if !closing {
                watermark
            } else {
                watermark - watermark.rem_euclid(step)
                    + if watermark.rem_euclid(step) != 0 {
                        step
                    } else {
                        0
                    }
            };
            let Some(first) = state.next_eval else {
                continue;
            };
            if first > last {
                continue;
            }
            // the first boundary after ``last`` (the clock's next step, as if each were visited)
            state.next_eval = Some(first + ((last - first) / step + 1) * step);
            let mut at = Some(first);
            let mut any = false;
            while let Some(now) = at.filter(|a| *a <= last) {
                let state = &self.rules[index];
                if !state.active.is_empty() || state.due.has(now) {
                    let before = out.len();
                    self.evaluate(index, now, host, out)?;
                    any |= out.len() != before;
                    if self.rules[index].next_eval.is_none() {
                        break; // no groups left: nothing is due
                    }
                }
                let state = &self.rules[index];
                at = if !state.active.is_empty() {
                    Some(now + step)
                } else {
                    state.due.next_from(now + step)
                };
            }
            evaluated_rules += any as usize;
        }
        if evaluated_rules > 1 {
            out[begin..].sort_by_key(|r| (r.1, r.2)); // stable: a step's records keep their order
        }
        if !self.routing_ahead {
            self.forget_keys();
        }
        Ok(())
    }

    /// Forget the keys no group of any rule is under any more, in each key table past its next
    /// check size (`KeyTable::check_at`) where they are more than half: the groups, schedules,
    /// pending/firing sets and shard owners of its rules are renumbered with it. Checked when
    /// a table has doubled since, so its cost (the groups of its rules) is paid once per as
    /// many new keys. No key id may be held outside the engine meanwhile (`routing_ahead`).
    pub fn forget_keys(&mut self) {
        for t in 0..self.key_tables.len() {
            let table = &self.key_tables[t];
            if table.len() < table.check_at.max(KEYS_CHECKED) {
                continue;
            }
            let mut keep = vec![false; table.len()];
            let mut live = 0;
            for state in self.rules.iter().filter(|s| s.plan.by_id == t) {
                for key in state.groups.keys() {
                    let seen = &mut keep[key as usize];
                    live += !*seen as usize;
                    *seen = true;
                }
            }
            if 2 * live < table.len() {
                let map = self.key_tables[t].retain(&keep);
                for (index, state) in self.rules.iter_mut().enumerate() {
                    if state.plan.by_id != t {
                        continue;
                    }
                    state.groups.renumber(&map);
                    state.due.renumber(&map);
                    state.active = state.active.iter().map(|k| map[*k as usize]).collect();
                    if let Some(owner) = self.owner.as_mut() {
                        owner.owners.forget(index);
                    }
                }
            }
            let table = &mut self.key_tables[t];
            table.check_at = 2 * table.len();
        }
    }

    fn evaluate<H: Host<Obj = O>>(
        &mut self,
        index: usize,
        at: i64,
        host: &H,
        out: &mut Vec<Rec<O>>,
    ) -> Result<(), H::Error> {
        let state = &mut self.rules[index];
        let table = &self.key_tables[state.plan.by_id];
        let mut keys: Vec<u32> = state.due.take(at);
        keys.extend(state.active.iter().copied());
        keys.sort_unstable();
        keys.dedup();
        let population = if state.population.is_some() {
            Some(state.population_at(at))
        } else {
            None
        };
        let plan = &state.plan;
        let horizon = at - plan.memory_ms;
        let window_from = at - plan.window_ms;
        let mut dead = Vec::new();
        // First every group natively, in any order (nothing here is seen outside the group);
        // then the lifecycle of those that hold or are pending or firing, in the core's order.
        let mut calls: Vec<(u32, Reading)> = Vec::new();
        for (i, &key) in keys.iter().enumerate() {
            // the groups are scattered over memory: ask for the ones a few keys on now, so
            // that their misses overlap this one's work
            if let Some(&ahead) = keys.get(i + PREFETCH_AHEAD) {
                state.groups.prefetch(ahead);
            }
            if let Some(&ahead) = keys.get(i + PREFETCH_AHEAD / 2) {
                state.groups.prefetch_oldest(ahead); // (asked for above, four keys ago)
            }
            let Some(group) = state.groups.get_mut(key) else {
                continue;
            };
            group.expire(horizon);
            group.seen_at = at;
            // as the core does at every evaluation: buckets out of every later window keep
            // neither users nor evidence (they were kept until the group could hold)
            group.clear_before(window_from);
            if group.status == Status::Inactive {
                if group.buckets.is_empty() {
                    dead.push(key);
                    continue;
                }
                if group.totals.oldest >= at || !can_hold(plan, &group.totals) {
                    // Nothing this step can see (buckets at or after `at`: early events),
                    // or nothing it could see would hold.
                    continue;
                }
            }
            let in_window = window(&group.buckets, window_from, at);
            let summary = summarize(plan, in_window.clone(), false);
            let (baseline, counts) = if plan.factor.is_some() {
                if group.status != Status::Inactive {
                    (group.frozen_baseline, None)
                } else {
                    // a rate of the same window: tested as known (one-sample)
                    let peers = || (population_rate(&summary, population), None);
                    let peers = plan
                        .population_fallback
                        .then_some(&peers as &dyn Fn() -> Reference);
                    span_baseline(
                        plan,
                        &group.buckets,
                        group.first_seen,
                        at,
                        group.excluded(),
                        peers,
                    )
                }
            } else {
                (None, None)
            };
            let reading = read(plan, index, &summary, baseline, population, counts, host)?;
            if !reading.holds && group.status == Status::Inactive {
                continue;
            }
            calls.push((key, reading));
        }
        if calls.len() > 1 {
            calls.sort_by_cached_key(|(key, _)| table.order(*key));
        }
        let (seq, opened_counts) = (self.seq, &mut self.opened);
        if !calls.is_empty() {
            host.with(|host| -> Result<(), H::Error> {
                let mut records = Vec::new();
                for (key, reading) in calls {
                    let group = state.groups.get_mut(key).unwrap();
                    let in_window = window(&group.buckets, window_from, at);
                    let detail = summarize(plan, in_window, true);
                    if group.dict.is_none() {
                        group.dict = Some(host.group_values(&plan.by, &table.parts(key))?);
                    }
                    let users: &[u64] = detail.users.as_ref().map(|u| u.mins.as_slice()).unwrap_or_default();
                    let step = Step {
                        rule: index,
                        group: group.dict.as_ref().unwrap(),
                        life: group.life.as_ref(),
                        at,
                        value: reading.value,
                        limit: reading.limit,
                        baseline: reading.baseline,
                        holds: reading.holds,
                        p_value: reading.p_value,
                        reference: reading.reference.map(|c| (c.observed, c.exposure, c.least)),
                        n: detail.n,
                        hits: detail.hits,
                        vn: detail.vn,
                        total: detail.total,
                        sq: detail.sq,
                        lo: detail.lo,
                        hi: detail.hi,
                        users,
                        evidence: &detail.evidence,
                        scoped: !plan.scope.is_empty(),
                    };
                    let stepped = host.step(step, &mut records)?;
                    out.extend(records.drain(..).map(|record| (seq, at, index as u32, record)));
                    group.frozen_baseline = stepped.frozen_baseline;
                    if let Some((start, end, baseline)) = stepped.ended {
                        group.add_excluded(Excluded { start, end, baseline });
                    }
                    group.status = stepped.status;
                    group.life = if group.status == Status::Inactive { None } else { Some(stepped.life) };
                    if group.status == Status::Inactive {
                        state.active.remove(&key);
                    } else {
                        state.active.insert(key);
                        if stepped.opened {
                            bump(opened_counts, &plan.name, 1);
                        }
                    }
                }
                Ok(())
            })?;
        }
        state.due.recycle(keys);
        for key in dead {
            state.groups.remove(key);
        }
        if state.groups.is_empty() {
            state.next_eval = None;
            state.due.clear();
        }
        Ok(())
    }

    /// Stage 2's half (called by `Core.take_routed`): the events of a routed message's body, those
    /// at or after ``next[partition]`` aggregated without moving time (the others were taken
    /// already: stage 1 sent them again after a restart); ``next`` moves past each one taken.
    /// ``masks``: look only at the rules each row's mask names (stage 1 had the same rules), and
    /// count the population rules its `POP` names without reading the event when that is all.
    /// Returns (events taken, late, duplicates).
    pub fn take_payload<H: Host<Obj = O>>(
        &mut self,
        body: &[u8],
        next: &mut std::collections::HashMap<i64, i64>,
        masks: bool,
        host: &H,
    ) -> Result<(usize, usize, usize), String> {
        let (mut taken, mut late, mut duplicates) = (0, 0, 0);
        for row in crate::rows::rows(body) {
            let crate::rows::Row { partition, offset, ts, mask, pop, flagged, value } = row?;
            let next_offset = next.entry(partition).or_insert(0);
            if offset < *next_offset {
                duplicates += 1;
                continue;
            }
            *next_offset = offset + 1;
            let added = if masks && mask == 0 && self.rules.len() <= 64 {
                self.add_population_only(ts, pop, flagged) // the event is not read
            } else {
                let event = crate::rows::read_event(value, ts)
                    .ok_or_else(|| format!("routed event at input partition {partition} offset {offset} is not an event"))?;
                if masks { self.add_passed(&event, host, mask, pop, flagged) } else { self.add_masked(&event, host, None) }
            };
            if added {
                taken += 1;
            } else {
                late += 1;
            }
        }
        Ok((taken, late, duplicates))
    }
}

/// The totals of the population step at ``start``, made when new (nearly always the last).
/// One event in a population's totals at the step ``start``: (events, flagged events).
fn count_in(population: &mut Vec<(i64, (i64, i64))>, start: i64, flagged: bool) {
    let totals = population_entry(population, start);
    totals.0 += 1;
    totals.1 += i64::from(flagged);
}

pub fn population_entry(population: &mut Vec<(i64, (i64, i64))>, start: i64) -> &mut (i64, i64) {
    let at = match population.last() {
        Some((last, _)) if *last == start => population.len() - 1,
        Some((last, _)) if *last < start => population.len(),
        None => 0,
        Some(_) => population.partition_point(|(s, _)| *s < start),
    };
    if at == population.len() || population[at].0 != start {
        population.insert(at, (start, (0, 0)));
    }
    &mut population[at].1
}

/// The buckets starting in ``[from, to)`` (buckets are sorted by start).
/// Windows end at or near the newest bucket: found from the back, touching only the
/// buckets in the window (a binary search over a day of buckets misses the cache at
/// every probe).
pub fn window(
    buckets: &Buckets,
    from: i64,
    to: i64,
) -> impl Iterator<Item = &Bucket> + Clone {
    let mut hi = buckets.len();
    while hi > 0 && buckets[hi - 1].0 >= to {
        hi -= 1;
    }
    let mut lo = hi;
    while lo > 0 && buckets[lo - 1].0 >= from {
        lo -= 1;
    }
    buckets.range(lo..hi).map(|(_, b)| b)
}

/// The same by binary search: for spans far from the newest bucket (baselines).
fn span(buckets: &Buckets, from: i64, to: i64) -> impl Iterator<Item = &Bucket> + Clone {
    let lo = buckets.partition_point(|(s, _)| *s < from);
    let hi = buckets.partition_point(|(s, _)| *s < to);
    buckets.range(lo..hi.max(lo)).map(|(_, b)| b)
}

/// The bucket of ``key`` at ``start``, created (and scheduled) when new: its position.
pub fn ensure_bucket<O>(state: &mut RuleState<O>, key: u32, start: i64) -> usize {
    let group = state.groups.get_or_insert_with(key, Group::new);
    // Events come nearly in order: the bucket is almost always the last one, or a new last.
    let at = match group.buckets.back() {
        Some((last, _)) if *last == start => return group.buckets.len() - 1,
        Some((last, _)) if *last < start => group.buckets.len(),
        None => 0,
        Some(_) => {
            let at = group.buckets.partition_point(|(s, _)| *s < start);
            if group.buckets[at].0 == start {
                return at;
            }
            at
        }
    };
    if at == group.buckets.len() && at > 0 {
        group.buckets[at - 1].1.shrink(&state.plan); // the newest until now: its step is over
    }
    if group.buckets.capacity() == 0 {
        // room for one: most groups of `by user` rules never get a second bucket (the
        // default would make room for four, 264 bytes more)
        group.buckets.reserve_exact(1);
    }
    group.buckets.insert(at, (start, Bucket::new(&state.plan)));
    group.cleared = group.cleared.min(at); // (a late event's bucket, among cleared ones)
    if at == 0 {
        group.totals.oldest = start;
    }
    let first = group.first_seen.is_none_or(|f| start < f);
    if first {
        group.first_seen = Some(start);
    }
    state.schedule(key, start, first, None);
    let boundary = start + state.plan.step_ms;
    if state.next_eval.is_none_or(|n| boundary < n) {
        state.next_eval = Some(boundary);
    }
    at
}

/// `incidents.population_rate`: the rate of the rest of the population (all groups but this
/// one) in the window, at least one flagged event in it; None when there is no rest.
fn population_rate(w: &Summary, population: Option<(i64, i64)>) -> Option<f64> {
    match population {
        Some((n, hits)) if n - w.n > 0 => Some((hits - w.hits).max(1) as f64 / (n - w.n) as f64),
        _ => None,
    }
}

/// `incidents.read` without the records' detail: value, limit, and whether it holds.
#[allow(clippy::too_many_arguments)]
fn read<H: Host>(
    plan: &Plan,
    index: usize,
    w: &Summary,
    baseline: Option<f64>,
    population: Option<(i64, i64)>,
    counts: Option<Counts>,
    host: &H,
) -> Result<Reading, H::Error> {
    let value = metric_value(plan, w);
    let (baseline, limit, reference) = if let Some(k) = plan.population {
        let rate = population_rate(w, population);
        (rate, rate.map(|b| k * b), None)
    } else if let (Some(f), Some(b)) = (plan.factor, baseline) {
        (baseline, Some(f * b), counts)
    } else {
        (baseline, plan.threshold, counts)
    };
    let mut enough = !plan.needs_sample || sample_size(plan, w) >= plan.min_events;
    if plan.min_flagged != 0 && w.hits < plan.min_flagged {
        enough = false;
    }
    let holds = enough && matches!((value, limit), (Some(v), Some(l)) if plan.op.compare(v.f(), l));
    if !holds || !plan.confidence {
        return Ok(Reading {
            value,
            limit,
            baseline,
            holds,
            p_value: None,
            reference,
        });
    }
    if plan.keeps_squares {
        // a mean: Student's t of the window's values against the limit (significance.mean_p_value)
        let p = host.with(|host| host.p_value_mean(index, w.vn, w.total, w.sq, limit.unwrap()))?;
        return Ok(Reading {
            value,
            limit,
            baseline,
            holds: p <= plan.alpha,
            p_value: Some(p),
            reference: None,
        });
    }
    let k = if plan.flag.is_none() { w.n } else { w.hits };
    let p = if let Some(c) = reference {
        host.with(|host| host.p_value_two(index, k, w.n, c.observed.max(c.least), c.exposure))?
    } else {
        let limit_v = limit.unwrap();
        let at_limit = if plan.func == Func::Rate {
            limit_v.min(1.0)
        } else {
            limit_v
        };
        host.with(|host| host.p_value(index, k, w.n, at_limit))?
    };
    Ok(Reading {
        value,
        limit,
        baseline,
        holds: p <= plan.alpha,
        p_value: Some(p),
        reference,
    })
}

/// `engine.span_reference`: the metric over the baseline span before the window ending at
/// ``at``, scaled to the window; None until the group has been seen for the whole span.
/// ``excluded``: the spans of the group's past incidents, left out of it. Cold start
/// (`baseline(S, warmup D, prior P)`): the group's own shorter history once it is D long and
/// holds `min N events` — with its counts, for a rule `with C% confidence` (two-sample) —
/// else (`population`) the rest of the rule's groups, else the prior.
pub fn span_baseline(
    plan: &Plan,
    buckets: &Buckets,
    first_seen: Option<i64>,
    at: i64,
    excluded: &[Excluded],
    peers: Option<&dyn Fn() -> Reference>,
) -> Reference {
    let end = at - plan.window_ms;
    let start = end - plan.baseline_ms;
    let Some(first) = first_seen else {
        return (None, None);
    };
    if start < first {
        // the group has not been seen for a whole baseline span yet
        if plan.warmup_ms > 0 && end - first >= plan.warmup_ms {
            let own = history_baseline(plan, buckets, first, end, excluded);
            if own.0.is_some() {
                return own;
            }
        }
        if let Some(rest) = peers.map(|peers| peers()).filter(|rest| rest.0.is_some()) {
            return rest;
        }
        return (plan.prior, None);
    }
    // a whole span: as long as the rule asks for, its value is tested as known (one-sample)
    (history_baseline(plan, buckets, start, end, excluded).0, None)
}

/// `engine._counts`: the counts of a reference measured over `span_ms`, for a rule `with C%
/// confidence`.
fn reference_counts(plan: &Plan, summary: &Summary, span_ms: i64) -> Option<Counts> {
    if !plan.confidence || plan.func == Func::Distinct || plan.keeps_squares {
        return None; // no test, or one that reads no reference counts (distinct; a mean's t-test)
    }
    let observed = if plan.flag.is_none() { summary.n } else { summary.hits };
    let exposure = if plan.func == Func::Rate { summary.n as f64 } else { span_ms as f64 };
    let least = (span_ms + plan.window_ms - 1) / plan.window_ms; // one per window length, rounded up
    Some(Counts { observed, exposure, least })
}

/// `engine._history_baseline`: the group's own history [start, end) (the whole span, or a
/// warm-up's shorter one) as a window's reference.
fn history_baseline(
    plan: &Plan,
    buckets: &Buckets,
    start: i64,
    end: i64,
    excluded: &[Excluded],
) -> Reference {
    if plan.slices_every_ms > 0 {
        return sliced_reference(plan, buckets, start, end, excluded);
    }
    let span_ms = end - start;
    if excluded.iter().any(|x| x.start < end && x.end > start) {
        return baseline_around(plan, buckets, start, end, excluded);
    }
    let span = |lo: i64, hi: i64| span(buckets, lo, hi);
    let summary = summarize(plan, span(start, end), false);
    if sample_size(plan, &summary) < plan.min_events {
        return (None, None);
    }
    if plan.func == Func::Distinct {
        let slices = (span_ms / plan.window_ms).max(1);
        let mut total = 0.0;
        for i in 0..slices {
            let (lo, hi) = (start + i * plan.window_ms, start + (i + 1) * plan.window_ms);
            let part = summarize(plan, span(lo, hi), false);
            total += metric_value(plan, &part).map(|v| v.f()).unwrap_or(0.0);
        }
        return (Some(total / slices as f64), None);
    }
    let Some(value) = metric_value(plan, &summary) else {
        return (None, None);
    };
    (
        Some(scale_baseline(plan, value.f(), summary.n, span_ms)),
        reference_counts(plan, &summary, span_ms),
    )
}

/// `engine._sliced_reference`: `baseline(S, median | trimmed P% | seasonal D)` over the history
/// [start, end) — the metric of each window-length slice [end − j·every, end − j·every +
/// window) that starts in it, then their mean with `plan.trim` of them cut from each end. A
/// slice a past incident reaches into is left out; fewer than half left, fewer than `min N
/// events` or no value: the baseline frozen at the latest incident's onset. Tested as known.
fn sliced_reference(plan: &Plan, buckets: &Buckets, start: i64, end: i64, excluded: &[Excluded]) -> Reference {
    let (every, width) = (plan.slices_every_ms, plan.window_ms);
    let cut: Vec<Excluded> = excluded
        .iter()
        .filter(|x| x.start < end && x.end > start)
        .copied()
        .collect();
    let fallback = (cut.last().and_then(|x| x.baseline), None);
    let total = (end - start) / every;
    let kept: Vec<i64> = (1..=total)
        .filter(|j| {
            let lo = end - j * every;
            !cut.iter().any(|x| x.start < lo + width && x.end > lo)
        })
        .collect();
    if kept.is_empty() || 2 * (kept.len() as i64) < total {
        return fallback;
    }
    let (mut sample, mut events) = (0i64, 0i64);
    let mut values = Vec::with_capacity(kept.len());
    for j in &kept {
        let lo = end - j * every;
        let part = summarize(plan, span(buckets, lo, lo + width), false);
        sample += sample_size(plan, &part);
        events += part.n;
        if let Some(v) = metric_value(plan, &part) {
            values.push(v.f());
        }
    }
    if sample < plan.min_events || values.is_empty() {
        return fallback;
    }
    let mut value = robust_mean(&mut values, plan.trim);
    match plan.func {
        Func::Count => value = value.max(1.0), // at least one event a window
        Func::Rate => value = value.max(kept.len() as f64 / events as f64), // one flagged of a mean slice's events
        _ => {}
    }
    (Some(value), None)
}

/// `engine.robust_mean`: the mean with ⌊n·trim⌋ of the values cut from each end (the median
/// when nothing would be left), summed in sorted order one addition at a time.
pub fn robust_mean(values: &mut [f64], trim: f64) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal)); // stable, as Python's sorted
    let n = values.len();
    let cut = (n as f64 * trim) as usize;
    if 2 * cut >= n {
        let middle = n / 2;
        return if n % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 };
    }
    let mut total = 0.0;
    for v in &values[cut..n - cut] {
        total += v;
    }
    total / (n - 2 * cut) as f64
}

/// `MetricKind.scale_baseline`: a span's metric (``span_ms`` long, ``n`` events) as a window's.
fn scale_baseline(plan: &Plan, mut value: f64, n: i64, span_ms: i64) -> f64 {
    let scale = plan.window_ms as f64 / span_ms as f64;
    match plan.func {
        Func::Count | Func::Sum => {
            value *= scale;
            if plan.func == Func::Count && value < 1.0 {
                value = 1.0;
            }
        }
        Func::Rate => {
            let floor = 1.0 / (n as f64 * scale);
            if floor > value {
                value = floor;
            }
        }
        _ => {}
    }
    value
}

/// `engine._baseline_around`: the baseline of a span that past incidents reach into — of the
/// buckets outside their spans, or the baseline frozen at the onset of the latest of them
/// when those are less than half the span or hold fewer than `min N events` (distinct: no
/// whole slice).
fn baseline_around(
    plan: &Plan,
    buckets: &Buckets,
    start: i64,
    end: i64,
    excluded: &[Excluded],
) -> Reference {
    let cut: Vec<Excluded> = excluded
        .iter()
        .filter(|x| x.start < end && x.end > start)
        .copied()
        .collect();
    let fallback = (cut.last().unwrap().baseline, None);
    let span_ms = end - start;
    let kept_ms = span_ms
        - cut
            .iter()
            .map(|x| x.end.min(end) - x.start.max(start))
            .sum::<i64>();
    if 2 * kept_ms < span_ms {
        return fallback; // a few minutes between two incidents are no baseline
    }
    let kept = |s: i64| !cut.iter().any(|x| x.start <= s && s < x.end);
    let lo = buckets.partition_point(|(s, _)| *s < start);
    let hi = buckets.partition_point(|(s, _)| *s < end).max(lo);
    let kept_buckets = buckets.range(lo..hi).filter(|(s, _)| kept(*s)).map(|(_, b)| b);
    let summary = summarize(plan, kept_buckets, false);
    if sample_size(plan, &summary) < plan.min_events {
        return fallback;
    }
    if plan.func == Func::Distinct {
        let slices = (span_ms / plan.window_ms).max(1);
        let (mut total, mut counted) = (0.0, 0i64);
        for i in 0..slices {
            let (lo, hi) = (start + i * plan.window_ms, start + (i + 1) * plan.window_ms);
            if cut.iter().any(|x| x.start < hi && x.end > lo) {
                continue;
            }
            let part = summarize(plan, span(buckets, lo, hi), false);
            total += metric_value(plan, &part).map(|v| v.f()).unwrap_or(0.0);
            counted += 1;
        }
        return if counted == 0 {
            fallback
        } else {
            (Some(total / counted as f64), None)
        };
    }
    let Some(value) = metric_value(plan, &summary) else {
        return fallback;
    };
    (
        Some(scale_baseline(plan, value.f(), summary.n, kept_ms)),
        reference_counts(plan, &summary, kept_ms),
    )
}
