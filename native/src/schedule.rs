//! When each group of a rule must be evaluated next: the step boundaries that have work, each
//! with the keys due then (engine/firebreak/core/engine.py's `RuleState.due`). Sparse: a gap of
//! empty time between two events costs nothing, however long (the advance loop jumps from one
//! boundary with work to the next: `Engine::advance_to`).

use std::collections::BTreeMap;

pub struct Wheel {
    step: i64,
    slots: BTreeMap<i64, Vec<u32>>, // boundary → keys due then; a key may repeat
    spare: Vec<Vec<u32>>,           // emptied slots, kept for their capacity
}

impl Wheel {
    pub fn new(step: i64) -> Wheel {
        Wheel {
            step,
            slots: BTreeMap::new(),
            spare: Vec::new(),
        }
    }

    pub fn push(&mut self, at: i64, key: u32) {
        if at.rem_euclid(self.step) != 0 {
            return; // not a step boundary: the core never evaluates at it either
        }
        let spare = &mut self.spare;
        self.slots
            .entry(at)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(key);
    }

    /// Whether keys are due at ``at``.
    #[inline]
    pub fn has(&self, at: i64) -> bool {
        self.slots.contains_key(&at)
    }

    /// The first boundary at or after ``at`` with keys due.
    pub fn next_from(&self, at: i64) -> Option<i64> {
        self.slots.range(at..).next().map(|(k, _)| *k)
    }

    /// The keys due at ``at`` (moved out; give the vector back with `recycle`); the slots
    /// before it are dropped.
    pub fn take(&mut self, at: i64) -> Vec<u32> {
        while let Some(entry) = self.slots.first_entry() {
            if *entry.key() >= at {
                break;
            }
            let slot = entry.remove();
            self.recycle(slot);
        }
        match self.slots.remove(&at) {
            Some(slot) => slot,
            None => self.spare.pop().unwrap_or_default(),
        }
    }

    pub fn recycle(&mut self, mut slot: Vec<u32>) {
        if self.spare.len() < 64 {
            slot.clear();
            self.spare.push(slot);
        }
    }

    /// The keys renumbered (`KeyTable::retain`): ``map[old]`` the new id; a forgotten key's
    /// entries stay as `GONE` (the step is still visited, as the core visits it).
    pub fn renumber(&mut self, map: &[u32]) {
        for slot in self.slots.values_mut() {
            for key in slot.iter_mut() {
                *key = map.get(*key as usize).copied().unwrap_or(crate::keys::GONE);
            }
        }
    }

    pub fn clear(&mut self) {
        let slots = std::mem::take(&mut self.slots);
        for (_, slot) in slots {
            self.recycle(slot);
        }
    }

    /// (scheduled entries, bytes held) for memory estimates.
    pub fn size(&self) -> (usize, usize) {
        let entries = self.slots.values().map(Vec::len).sum();
        let bytes = self.slots.values().chain(&self.spare).map(|s| s.capacity() * 4 + 48).sum();
        (entries, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::Wheel;

    #[test]
    fn a_gap_of_a_year_is_one_jump() {
        let mut wheel = Wheel::new(60_000);
        let year = 365 * 86_400_000;
        wheel.push(60_000, 1);
        wheel.push(year + 60_000, 2);
        wheel.push(year + 60_001, 3); // not a boundary: never due
        assert_eq!(wheel.size().0, 2);
        assert_eq!(wheel.next_from(120_000), Some(year + 60_000));
        assert!(wheel.has(60_000) && !wheel.has(120_000));
        assert_eq!(wheel.take(year + 60_000), vec![2]); // the slot before it is dropped
        assert_eq!(wheel.next_from(0), None);
    }
}
