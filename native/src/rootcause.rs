//! Column-wise tallies for the root-cause search (engine/firebreak/investigate/rootcause.py).
//!
//! The search asks two questions many times: the tallies of the events carrying a pattern
//! (a few dimension=value pairs), and those tallies split by every other dimension's values.
//! Each dimension's values arrive as integer codes (-1: missing, or folded into "other"), one
//! column per dimension, with each event's period (incident or before) and anomaly mass; the
//! events a cause explained are removed. `Columns` answers both questions in one pass over the
//! events, adding in event order, so that its floats are exactly those of the Python reference
//! (`_PyColumns` in rootcause.py, checked by tests/unit/investigate/test_investigate_rootcause.py).
//!
//! A tally is seven numbers: incident events, mass, squared mass; before events, mass, squared
//! mass; incident events carrying mass.

pub type Tally = [f64; 7];

/// The columns of one search (exposed to Python by py/rootcause.rs as `Columns`).
pub struct Columns {
    codes: Vec<Vec<i32>>,
    cards: Vec<usize>,
    now: Vec<bool>,
    weight: Vec<f64>,
    alive: Vec<bool>,
}

impl Columns {
    fn matches(&self, i: usize, pattern: &[(usize, i32)]) -> bool {
        self.alive[i] && pattern.iter().all(|&(d, c)| self.codes[d][i] == c)
    }

    fn add(&self, t: &mut Tally, i: usize) {
        let w = self.weight[i];
        if self.now[i] {
            t[0] += 1.0;
            t[1] += w;
            t[2] += w * w;
            if w > 0.0 {
                t[6] += 1.0;
            }
        } else {
            t[3] += 1.0;
            t[4] += w;
            t[5] += w * w;
        }
    }

    fn check(&self, pattern: &[(usize, i32)]) -> Result<(), String> {
        for &(d, _) in pattern {
            if d >= self.codes.len() {
                return Err(format!("no dimension {d}"));
            }
        }
        Ok(())
    }
}

impl Columns {
    /// ``codes``: one column per dimension (a code per event, -1 for none); ``cards``: the
    /// number of codes of each dimension; ``now``: the event is in the incident period;
    /// ``weight``: its anomaly mass.
    pub fn new(
        codes: Vec<Vec<i32>>,
        cards: Vec<usize>,
        now: Vec<bool>,
        weight: Vec<f64>,
    ) -> Result<Self, String> {
        let n = weight.len();
        if now.len() != n || codes.iter().any(|c| c.len() != n) || cards.len() != codes.len() {
            return Err("columns of different lengths".to_string());
        }
        for (col, &card) in codes.iter().zip(&cards) {
            if col.iter().any(|&c| c < -1 || c >= card as i32) {
                return Err("a code out of its dimension's range".to_string());
            }
        }
        Ok(Columns {
            codes,
            cards,
            now,
            weight,
            alive: vec![true; n],
        })
    }

    /// Dimension ``d``'s codes mapped through ``mapping`` (old code → new code or -1).
    pub fn recode(&mut self, d: usize, mapping: Vec<i32>, card: usize) -> Result<(), String> {
        if d >= self.codes.len()
            || mapping.len() != self.cards[d]
            || mapping.iter().any(|&c| c < -1 || c >= card as i32)
        {
            return Err("a mapping that does not fit the dimension".to_string());
        }
        for c in self.codes[d].iter_mut() {
            if *c >= 0 {
                *c = mapping[*c as usize];
            }
        }
        self.cards[d] = card;
        Ok(())
    }

    /// The tally of the remaining events carrying every pair of ``pattern``.
    pub fn tally(&self, pattern: Vec<(usize, i32)>) -> Result<Tally, String> {
        self.check(&pattern)?;
        let mut t = [0.0; 7];
        for i in 0..self.weight.len() {
            if self.matches(i, &pattern) {
                self.add(&mut t, i);
            }
        }
        Ok(t)
    }

    /// Per dimension, per code: the tally of the remaining events carrying ``pattern`` and
    /// that code.
    pub fn marginals(&self, pattern: Vec<(usize, i32)>) -> Result<Vec<Vec<Tally>>, String> {
        self.check(&pattern)?;
        let mut out: Vec<Vec<Tally>> = self.cards.iter().map(|&k| vec![[0.0; 7]; k]).collect();
        for i in 0..self.weight.len() {
            if !self.matches(i, &pattern) {
                continue;
            }
            for (d, col) in self.codes.iter().enumerate() {
                let c = col[i];
                if c >= 0 {
                    self.add(&mut out[d][c as usize], i);
                }
            }
        }
        Ok(out)
    }

    /// The remaining events carrying ``pattern`` are explained: no longer counted.
    pub fn remove(&mut self, pattern: Vec<(usize, i32)>) -> Result<(), String> {
        self.check(&pattern)?;
        for i in 0..self.weight.len() {
            if self.matches(i, &pattern) {
                self.alive[i] = false;
            }
        }
        Ok(())
    }

    /// Every event counted again.
    pub fn reset(&mut self) {
        self.alive.iter_mut().for_each(|a| *a = true);
    }

    pub fn len(&self) -> usize {
        self.weight.len()
    }
}
