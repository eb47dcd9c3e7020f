//! Buckets of one step of one (rule, group), and windows summed from them
//! (engine/firebreak/core/window.py, operation for operation).

use crate::event::Event;
use crate::json::J;
use crate::plan::{Func, Op, Plan};
use crate::sketch::{DistinctSketch, QuantileSketch};
use crate::smallstr::Packed;
use crate::value::{get, num_str, number, stable_hash, Num};
use std::cmp::Ordering;

pub const SCALE: i128 = 1_000_000;
/// A metric reads numbers within -1e15..1e15 only (window.py): millionths of any sum of them
/// fit an i128, and no sketch meets an infinity.
pub const MAX_METRIC_VALUE: f64 = 1e15;
pub const EVIDENCE_K: usize = 5;

/// The order of an evidence item: its time (rate, count, distinct), or its value in the
/// rule's bad direction then its time (numeric functions).
#[derive(Clone, Debug)]
pub enum Order {
    Ts(i64),
    Value(Num, i64),
}

#[derive(Clone, Debug)]
pub struct Evidence {
    pub order: Order,
    /// Its event id and, for a rule with scope dimensions (`Plan::scope`), its event's string
    /// values of them, in their order (None: missing or not a string); no scope for other
    /// rules. One value, inline when short (smallstr.rs).
    pub text: Packed,
}

impl Evidence {
    #[inline]
    pub fn id(&self) -> &str {
        self.text.id()
    }
}

/// The text of an evidence item of ``event``: its id, and its string values of the rule's
/// scope dimensions when it has any.
fn text_of(plan: &Plan, event: &Event, id: &str) -> Packed {
    if plan.scope.is_empty() {
        return Packed::new(id, None);
    }
    let value = |path| match get(event, path) {
        Some(J::Str(s)) => Some(&**s),
        _ => None,
    };
    const ON_STACK: usize = 8;
    if plan.scope.len() <= ON_STACK {
        let mut values: [Option<&str>; ON_STACK] = [None; ON_STACK];
        for (slot, path) in values.iter_mut().zip(&plan.scope) {
            *slot = value(path);
        }
        Packed::new(id, Some(&values[..plan.scope.len()]))
    } else {
        let values: Vec<Option<&str>> = plan.scope.iter().map(value).collect();
        Packed::new(id, Some(&values))
    }
}

fn cmp_evidence(a: &Evidence, b: &Evidence) -> Ordering {
    cmp_item(&a.order, a.id(), b)
}

fn cmp_item(order: &Order, id: &str, b: &Evidence) -> Ordering {
    let first = match (order, &b.order) {
        (Order::Ts(x), Order::Ts(y)) => x.cmp(y),
        (Order::Value(v, t), Order::Value(w, u)) => v.cmp(*w).then(t.cmp(u)),
        (Order::Ts(_), Order::Value(..)) => Ordering::Less,
        (Order::Value(..), Order::Ts(_)) => Ordering::Greater,
    };
    first.then_with(|| id.cmp(b.id()))
}

/// What a bucket holds beyond its counts, users and evidence, by its rule's function, made
/// at its first value: a distinct sketch (`distinct`), or its numbers (sum, avg, min, max,
/// percentiles); rate and count buckets hold neither. One pointer for either: a bucket takes
/// 64 bytes (with its start 72), not 136 with both inline or 72 with a pointer for each.
#[derive(Clone, Debug)]
pub enum Extra {
    Distinct(DistinctSketch),
    Num(Numeric),
}

/// The numeric part of a bucket (`Extra::Num`).
#[derive(Clone, Debug, Default)]
pub struct Numeric {
    pub vn: i64,
    pub total: i128,
    /// The values' sum of squares in millionths squared, saturating at `i128::MAX`: kept only
    /// for a rule whose t-test reads the window's spread (`Plan::keeps_squares`), else 0.
    pub sq: i128,
    pub lo: Option<Num>,
    pub hi: Option<Num>,
    pub quantiles: Option<Box<QuantileSketch>>,
}

#[derive(Clone, Debug, Default)]
pub struct Bucket {
    pub n: i64,
    pub hits: i64,
    /// None until the bucket holds a value (percentile rules: from the start, as the core
    /// keeps an empty sketch in every bucket of theirs; snapshots show it).
    pub extra: Option<Box<Extra>>,
    pub users: DistinctSketch,
    /// Up to `EVIDENCE_K` items, best first, exactly as many as it holds (no spare room:
    /// 8 bytes less than a `Vec` in every bucket, nothing to give back when its step ends).
    pub evidence: Box<[Evidence]>,
}

impl Bucket {
    pub fn new(plan: &Plan) -> Bucket {
        Bucket {
            extra: match plan.func {
                Func::Quantile(_) => Some(Box::new(Extra::Num(Numeric::new(plan)))),
                Func::Distinct => Some(Box::new(Extra::Distinct(DistinctSketch::default()))),
                _ => None,
            },
            ..Default::default()
        }
    }

    #[inline]
    pub fn num(&self) -> Option<&Numeric> {
        match self.extra.as_deref() {
            Some(Extra::Num(num)) => Some(num),
            _ => None,
        }
    }

    #[inline]
    pub fn distinct(&self) -> Option<&DistinctSketch> {
        match self.extra.as_deref() {
            Some(Extra::Distinct(d)) => Some(d),
            _ => None,
        }
    }

    fn distinct_mut(&mut self) -> Option<&mut DistinctSketch> {
        match self.extra.as_deref_mut() {
            Some(Extra::Distinct(d)) => Some(d),
            _ => None,
        }
    }

    /// The numeric part, made at the bucket's first value.
    fn num_or_new(&mut self, plan: &Plan) -> &mut Numeric {
        if !matches!(self.extra.as_deref(), Some(Extra::Num(_))) {
            self.extra = Some(Box::new(Extra::Num(Numeric::new(plan))));
        }
        match self.extra.as_deref_mut() {
            Some(Extra::Num(num)) => num,
            _ => unreachable!("made above"),
        }
    }

    /// Give back unused room once the bucket's step has passed (its group got a newer
    /// bucket): the user sketches grow by doubling, and most buckets live on for the
    /// window and the baseline, holding what they had (a late event can still grow them).
    /// Only a `distinct` rule's bucket has its numbers' pointer followed (for the others it
    /// points at a numeric part, or nothing: a cache miss for nothing).
    pub fn shrink(&mut self, plan: &Plan) {
        self.users.mins.shrink();
        if plan.func == Func::Distinct {
            if let Some(d) = self.distinct_mut() {
                d.mins.shrink();
            }
        }
    }

    #[inline]
    pub fn vn(&self) -> i64 {
        self.num().map_or(0, |x| x.vn)
    }
    #[inline]
    pub fn total(&self) -> i128 {
        self.num().map_or(0, |x| x.total)
    }
    #[inline]
    pub fn sq(&self) -> i128 {
        self.num().map_or(0, |x| x.sq)
    }
    #[inline]
    pub fn lo(&self) -> Option<Num> {
        self.num().and_then(|x| x.lo)
    }
    #[inline]
    pub fn hi(&self) -> Option<Num> {
        self.num().and_then(|x| x.hi)
    }
    #[inline]
    pub fn quantiles(&self) -> Option<&QuantileSketch> {
        self.num().and_then(|x| x.quantiles.as_deref())
    }

    fn keep_evidence(&mut self, order: Order, plan: &Plan, event: &Event) {
        let id = event.id();
        let full = self.evidence.len() >= EVIDENCE_K;
        if full && cmp_item(&order, id, self.evidence.last().unwrap()) != Ordering::Less {
            return; // not among the best: no copy of its id
        }
        let at = self
            .evidence
            .partition_point(|e| cmp_item(&order, id, e) == Ordering::Greater);
        let item = Evidence { order, text: text_of(plan, event, id) };
        if full {
            // the worst item makes room: the others after ``at`` move down one
            self.evidence[at..].rotate_right(1);
            self.evidence[at] = item;
        } else {
            // one more item, in room for exactly as many (most buckets keep one or two)
            let mut items = std::mem::take(&mut self.evidence).into_vec();
            items.reserve_exact(1);
            items.insert(at, item);
            self.evidence = items.into_boxed_slice();
        }
    }

    fn add_user(&mut self, event: &Event, user_hash: &mut Option<Option<u64>>) {
        let h = *user_hash
            .get_or_insert_with(|| event.user().and_then(J::as_str).map(stable_hash));
        if let Some(h) = h {
            self.users.add_hash(h);
        }
    }

    /// `window.accumulator(rule)(bucket, event)`. ``user_hash``: the event's user hash, computed
    /// once for all the rules it reaches.
    pub fn add(
        &mut self,
        plan: &Plan,
        event: &Event,
        user_hash: &mut Option<Option<u64>>,
        py_str: &dyn Fn(&J) -> String,
    ) {
        self.n += 1;
        match plan.func {
            Func::Rate | Func::Count => match &plan.flag {
                None => {
                    self.add_user(event, user_hash);
                    self.keep_evidence(Order::Ts(event.ts), plan, event);
                }
                Some(flag) => {
                    if flagged(event, flag) {
                        self.hits += 1;
                        self.add_user(event, user_hash);
                        self.keep_evidence(Order::Ts(event.ts), plan, event);
                    }
                }
            },
            Func::Distinct => {
                if let Some(value) = get(event, plan.arg.as_ref().unwrap()) {
                    let text = match value {
                        J::Str(s) => stable_hash(s),
                        J::Num(n) => stable_hash(&num_str(*n)),
                        J::Bool(b) => stable_hash(if *b { "True" } else { "False" }),
                        other => stable_hash(&py_str(other)),
                    };
                    self.distinct_mut().unwrap().add_hash(text);
                    self.add_user(event, user_hash);
                    self.keep_evidence(Order::Ts(event.ts), plan, event);
                }
            }
            _ => {
                let Some(value) = get(event, plan.arg.as_ref().unwrap()).and_then(number)
                else {
                    return;
                };
                if !(value.f().abs() <= MAX_METRIC_VALUE) {
                    return; // NaN, infinities, extremes: not a value (window.py MAX_METRIC_VALUE)
                }
                let num = self.num_or_new(plan);
                num.vn += 1;
                let x = match value {
                    Num::Int(i) => i as i128 * SCALE,
                    Num::Float(x) => (x * SCALE as f64).round_ties_even() as i128,
                };
                num.total += x;
                if plan.keeps_squares {
                    num.sq = saturating_square_add(num.sq, x);
                }
                if num.lo.is_none_or(|lo| value.cmp(lo) == Ordering::Less) {
                    num.lo = Some(value);
                }
                if num.hi.is_none_or(|hi| value.cmp(hi) == Ordering::Greater) {
                    num.hi = Some(value);
                }
                if let Some(q) = num.quantiles.as_mut() {
                    q.add(value.f());
                }
                self.add_user(event, user_hash);
                let low_is_bad = matches!(plan.op, Op::Lt | Op::Le);
                let order = if low_is_bad { value } else { value.neg() };
                self.keep_evidence(Order::Value(order, event.ts), plan, event);
            }
        }
    }
}

impl Numeric {
    pub fn new(plan: &Plan) -> Numeric {
        Numeric {
            quantiles: matches!(plan.func, Func::Quantile(_)).then(Box::default),
            ..Default::default()
        }
    }
}

pub fn flagged(event: &Event, flag: &str) -> bool {
    matches!(event.flags(), Some(J::Obj(flags)) if matches!(flags.get(flag), Some(J::Bool(true))))
}

/// A window or baseline span assembled from buckets.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub n: i64,
    pub hits: i64,
    pub vn: i64,
    pub total: i128,
    pub sq: i128, // `Plan::keeps_squares` only: the values' sum of squares, saturating
    pub lo: Option<Num>,
    pub hi: Option<Num>,
    pub quantiles: Option<QuantileSketch>,
    pub distinct: Option<DistinctSketch>,
    pub users: Option<DistinctSketch>,
    pub evidence: Vec<Evidence>,
}

pub fn summarize<'a>(
    plan: &Plan,
    buckets: impl Iterator<Item = &'a Bucket> + Clone,
    detail: bool,
) -> Summary {
    let mut s = Summary::default();
    if matches!(plan.func, Func::Quantile(_)) {
        s.quantiles = Some(QuantileSketch::union(
            buckets.clone().filter_map(|b| b.quantiles()),
        ));
    }
    if plan.func == Func::Distinct {
        s.distinct = Some(DistinctSketch::union(
            buckets.clone().filter_map(|b| b.distinct()),
        ));
    }
    if detail {
        s.users = Some(DistinctSketch::union(buckets.clone().map(|b| &b.users)));
    }
    for b in buckets {
        s.n += b.n;
        s.hits += b.hits;
        s.vn += b.vn();
        s.total += b.total();
        if plan.keeps_squares {
            s.sq = s.sq.saturating_add(b.sq());
        }
        if let Some(lo) = b.lo() {
            if s.lo.is_none_or(|x| lo.cmp(x) == Ordering::Less) {
                s.lo = Some(lo);
            }
        }
        if let Some(hi) = b.hi() {
            if s.hi.is_none_or(|x| hi.cmp(x) == Ordering::Greater) {
                s.hi = Some(hi);
            }
        }
        if detail {
            s.evidence.extend(b.evidence.iter().cloned());
        }
    }
    if detail {
        s.evidence.sort_by(cmp_evidence);
        s.evidence.truncate(EVIDENCE_K);
    }
    s
}

/// `sq + x²`, saturating at `i128::MAX` (window.py: `min(sq + x * x, SQ_MAX)`): a sum of
/// squares only grows, so where it saturates does not depend on the order of the values.
#[inline]
pub fn saturating_square_add(sq: i128, x: i128) -> i128 {
    x.checked_mul(x).map_or(i128::MAX, |q| sq.saturating_add(q))
}

/// Python's `int / int`: the quotient correctly rounded (half to even). Below 2**53 both
/// convert exactly and one IEEE division rounds correctly; beyond (sums of huge values),
/// the quotient is computed in integers with two guard bits and a sticky bit.
pub fn int_div(a: i128, b: i128) -> f64 {
    const EXACT: u128 = 1 << 53;
    let (n, d) = (a.unsigned_abs(), b.unsigned_abs());
    if n < EXACT && d < EXACT {
        return a as f64 / b as f64;
    }
    let negative = (a < 0) != (b < 0);
    let bits = |x: u128| 128 - x.leading_zeros() as i32;
    // scale the numerator so that the quotient has at least 55 bits
    let k = (55 - (bits(n) - bits(d))).max(0);
    let (q, r) = if k > 0 {
        let m = n << k; // bits(n) + k <= 56 + bits(d) <= 120
        (m / d, m % d)
    } else {
        (n / d, n % d)
    };
    let shift = bits(q) - 53; // >= 2
    let mut mantissa = q >> shift;
    let rest = q & ((1u128 << shift) - 1);
    let half = 1u128 << (shift - 1);
    if rest > half || (rest == half && (r != 0 || mantissa & 1 == 1)) {
        mantissa += 1;
    }
    let value = mantissa as f64 * 2f64.powi(shift - k);
    if negative {
        -value
    } else {
        value
    }
}

/// The rule's metric over a summary; None without events. Ints stay ints (min, max).
pub fn metric_value(plan: &Plan, s: &Summary) -> Option<Num> {
    match plan.func {
        Func::Rate => (s.n != 0).then(|| Num::Float(int_div(s.hits as i128, s.n as i128))),
        Func::Count => Some(Num::Float(
            if plan.flag.is_some() { s.hits } else { s.n } as f64
        )),
        Func::Sum => Some(Num::Float(int_div(s.total, SCALE))),
        Func::Avg => (s.vn != 0).then(|| Num::Float(int_div(s.total, SCALE) / s.vn as f64)),
        Func::Min => s.lo,
        Func::Max => s.hi,
        Func::Distinct => Some(Num::Float(s.distinct.as_ref().unwrap().estimate() as f64)),
        Func::Quantile(q) => s.quantiles.as_ref().unwrap().quantile(q).map(Num::Float),
    }
}

pub fn sample_size(plan: &Plan, s: &Summary) -> i64 {
    if plan.numeric() {
        s.vn
    } else {
        s.n
    }
}

#[cfg(test)]
mod tests {
    use super::int_div;
    #[test]
    fn bucket_size() {
        // a bucket and its start: 72 bytes (144 with the numeric part inline, 80 with a
        // pointer each for the numeric part and the distinct sketch; 88 with its evidence
        // in a `Vec` and its users' hashes in a `Vec` beside the two inline)
        assert_eq!(std::mem::size_of::<(i64, super::Bucket)>(), 72);
    }
    #[test]
    fn int_div_rounds_as_python() {
        // the right-hand sides are Python's `a / b`
        let e22 = 10i128.pow(22);
        assert_eq!(int_div(e22 + 3_000_000, 1_000_000), 1.0000000000000004e16);
        assert_eq!(int_div(e22 + 3_000_001, 1_000_000), 1.0000000000000004e16);
        assert_eq!(int_div((1 << 60) + 1, 3), 3.843071682022823e17);
        assert_eq!(int_div(-((1 << 70) + 12345), 1_000_000), -1180591620717411.2);
        assert_eq!(int_div(7, 2), 3.5);
    }
}
