//! When each group of a rule must be evaluated next: a timer wheel of step boundaries
//! (engine/firebreak/core/engine.py's `RuleState.due`, a dict of boundary → keys, without hashing or
//! sorting). Evaluations run at every step from the rule's `next_eval` on, in order, and
//! every boundary scheduled is at or after it, so the wheel only ever gives its front slot.

use std::collections::VecDeque;

pub struct Wheel {
    step: i64,
    base: i64,                 // the boundary of slots[0]
    slots: VecDeque<Vec<u32>>, // keys due at base + i * step; a key may repeat
    spare: Vec<Vec<u32>>,      // emptied slots, kept for their capacity
}

impl Wheel {
    pub fn new(step: i64) -> Wheel {
        Wheel {
            step,
            base: 0,
            slots: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    pub fn push(&mut self, at: i64, key: u32) {
        if at.rem_euclid(self.step) != 0 {
            return; // not a step boundary: the core never evaluates at it either
        }
        if self.slots.is_empty() {
            self.base = at;
        }
        while at < self.base {
            self.slots.push_front(Vec::new());
            self.base -= self.step;
        }
        let i = ((at - self.base) / self.step) as usize;
        while self.slots.len() <= i {
            let slot = self.spare.pop().unwrap_or_default();
            self.slots.push_back(slot);
        }
        self.slots[i].push(key);
    }

    /// The keys due at ``at`` (moved out; give the vector back with `recycle`).
    pub fn take(&mut self, at: i64) -> Vec<u32> {
        while !self.slots.is_empty() && self.base < at {
            let mut slot = self.slots.pop_front().unwrap();
            self.base += self.step;
            slot.clear();
            self.spare.push(slot);
        }
        if !self.slots.is_empty() && self.base == at {
            self.base += self.step;
            return self.slots.pop_front().unwrap();
        }
        self.spare.pop().unwrap_or_default()
    }

    pub fn recycle(&mut self, mut slot: Vec<u32>) {
        if self.spare.len() < 64 {
            slot.clear();
            self.spare.push(slot);
        }
    }

    pub fn clear(&mut self) {
        while let Some(mut slot) = self.slots.pop_front() {
            if self.spare.len() < 64 {
                slot.clear();
                self.spare.push(slot);
            }
        }
    }

    /// (scheduled entries, bytes held) for memory estimates.
    pub fn size(&self) -> (usize, usize) {
        let entries = self.slots.iter().map(Vec::len).sum();
        let bytes = self.slots.iter().chain(&self.spare).map(|s| s.capacity() * 4 + 24).sum();
        (entries, bytes)
    }
}
