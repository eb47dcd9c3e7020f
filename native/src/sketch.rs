//! The sketches of engine/firebreak/core/sketch.py, operation for operation: a log-bucketed quantile
//! histogram (±1%) and K minimum values (exact up to 128 distinct items).


use std::mem::size_of;

pub const DISTINCT_K: usize = 128;
const RELATIVE_ACCURACY: f64 = 0.01;
const TINY: f64 = 1e-9;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// Bin counts sorted by bin (a Python dict of bin → count, kept in key order).
pub type Counts = Vec<(i64, i64)>;

#[derive(Clone, Debug, Default)]
pub struct QuantileSketch {
    pub pos: Counts,
    pub neg: Counts,
    pub zero: i64,
    pub n: i64,
}

fn log_gamma() -> f64 {
    static LOG_GAMMA: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *LOG_GAMMA.get_or_init(|| gamma().ln())
}

fn bump(counts: &mut Counts, key: i64) {
    match counts.binary_search_by_key(&key, |(k, _)| *k) {
        Ok(i) => counts[i].1 += 1,
        Err(i) => counts.insert(i, (key, 1)),
    }
}

/// The sum of many bin counts: all of them sorted by bin, then added up.
fn union_counts<'a>(parts: impl Iterator<Item = &'a Counts>) -> Counts {
    let mut all: Counts = Vec::new();
    for part in parts {
        all.extend_from_slice(part);
    }
    all.sort_unstable_by_key(|(k, _)| *k);
    let mut out: Counts = Vec::with_capacity(all.len());
    for (k, c) in all {
        match out.last_mut() {
            Some((last, total)) if *last == k => *total += c,
            _ => out.push((k, c)),
        }
    }
    out
}

impl QuantileSketch {
    pub fn add(&mut self, value: f64) {
        self.n += 1;
        if value > TINY {
            bump(&mut self.pos, (value.ln() / log_gamma()).ceil() as i64);
        } else if value < -TINY {
            bump(&mut self.neg, ((-value).ln() / log_gamma()).ceil() as i64);
        } else {
            self.zero += 1;
        }
    }

    /// The merge of all of ``sketches`` (integer counts: the order does not matter).
    pub fn union<'a>(sketches: impl Iterator<Item = &'a QuantileSketch> + Clone) -> QuantileSketch {
        let mut out = QuantileSketch {
            pos: union_counts(sketches.clone().map(|q| &q.pos)),
            neg: union_counts(sketches.clone().map(|q| &q.neg)),
            ..Default::default()
        };
        for q in sketches {
            out.n += q.n;
            out.zero += q.zero;
        }
        out
    }

    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q * self.n as f64).ceil() as i64).max(1);
        let mut seen = 0;
        for (key, count) in self.neg.iter().rev() {
            seen += count;
            if seen >= rank {
                return Some(-bin_value(*key));
            }
        }
        seen += self.zero;
        if seen >= rank {
            return Some(0.0);
        }
        for (key, count) in &self.pos {
            seen += count;
            if seen >= rank {
                return Some(bin_value(*key));
            }
        }
        Some(self.pos.last().map(|(k, _)| bin_value(*k)).unwrap_or(0.0))
    }
}

fn bin_value(key: i64) -> f64 {
    let g = gamma();
    2.0 * g.powf(key as f64) / (g + 1.0)
}

/// K minimum values of 64-bit hashes: sorted, unique, at most DISTINCT_K.
#[derive(Clone, Debug, Default)]
pub struct DistinctSketch {
    pub mins: Mins,
}

/// The hashes of a `DistinctSketch`: up to two inline (most buckets of sparse groups hold
/// one user), more on the heap (behind one pointer: 24 bytes in every bucket, not 32).
#[derive(Clone, Debug)]
pub enum Mins {
    Inline(u8, [u64; 2]),
    Heap(Box<Vec<u64>>),
}

impl Default for Mins {
    fn default() -> Mins {
        Mins::Inline(0, [0; 2])
    }
}

impl Mins {
    pub fn from_vec(v: Vec<u64>) -> Mins {
        if v.len() <= 2 {
            let mut a = [0; 2];
            a[..v.len()].copy_from_slice(&v);
            Mins::Inline(v.len() as u8, a)
        } else {
            Mins::Heap(Box::new(v))
        }
    }
    #[inline]
    pub fn as_slice(&self) -> &[u64] {
        match self {
            Mins::Inline(n, a) => &a[..*n as usize],
            Mins::Heap(v) => v.as_slice(),
        }
    }
    fn insert(&mut self, i: usize, h: u64) {
        match self {
            Mins::Inline(n, a) if (*n as usize) < 2 => {
                let n_ = *n as usize;
                a.copy_within(i..n_, i + 1);
                a[i] = h;
                *n += 1;
            }
            Mins::Inline(n, a) => {
                let mut v = Vec::with_capacity(4);
                v.extend_from_slice(&a[..*n as usize]);
                v.insert(i, h);
                *self = Mins::Heap(Box::new(v));
            }
            Mins::Heap(v) => v.insert(i, h),
        }
    }
    fn pop(&mut self) {
        match self {
            Mins::Inline(n, _) => *n = n.saturating_sub(1),
            Mins::Heap(v) => {
                v.pop();
            }
        }
    }
    /// Give back the room the hashes grew into but do not use.
    pub fn shrink(&mut self) {
        if let Mins::Heap(v) = self {
            v.shrink_to_fit();
        }
    }
    /// Bytes held outside the value itself.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Mins::Inline(..) => 0,
            Mins::Heap(v) => size_of::<Vec<u64>>() + v.capacity() * 8,
        }
    }
}

impl DistinctSketch {
    pub fn add_hash(&mut self, h: u64) {
        let mins = self.mins.as_slice();
        if mins.len() >= DISTINCT_K && h >= *mins.last().unwrap() {
            return;
        }
        match mins.binary_search(&h) {
            Ok(_) => {}
            Err(i) => {
                self.mins.insert(i, h);
                if self.mins.as_slice().len() > DISTINCT_K {
                    self.mins.pop();
                }
            }
        }
    }

    pub fn union<'a>(sketches: impl Iterator<Item = &'a DistinctSketch>) -> DistinctSketch {
        let mut all: Vec<u64> = Vec::new();
        for s in sketches {
            all.extend_from_slice(s.mins.as_slice());
        }
        all.sort_unstable();
        all.dedup();
        all.truncate(DISTINCT_K);
        DistinctSketch {
            mins: Mins::from_vec(all),
        }
    }

    pub fn estimate(&self) -> i64 {
        let mins = self.mins.as_slice();
        if mins.len() < DISTINCT_K {
            return mins.len() as i64;
        }
        let space = 18446744073709551616.0_f64; // 2**64
        let last = (*mins.last().unwrap() as u128 + 1) as f64;
        (((DISTINCT_K - 1) as f64) * space / last).round_ties_even() as i64
    }
}
