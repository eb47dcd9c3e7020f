//! The groups of one rule, found by their interned key id without hashing: a slot per key
//! of the rule's key table (`KeyTable`), pointing into a dense vector of groups.

/// What the index asks of a group: its newest and oldest bucket, to prefetch them.
pub trait Ends {
    type Bucket;
    fn newest(&self) -> Option<&Self::Bucket>;
    fn oldest(&self) -> Option<&Self::Bucket>;
}

/// `G`: the group (engine.rs `Group`).
pub struct Groups<G> {
    slot: Vec<u32>, // key id → position in `items` + 1 (0: no group)
    items: Vec<(u32, G)>,
}

impl<G> Default for Groups<G> {
    fn default() -> Self {
        Groups { slot: Vec::new(), items: Vec::new() }
    }
}

impl<G> Groups<G> {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    #[inline]
    fn position(&self, key: u32) -> Option<usize> {
        match self.slot.get(key as usize) {
            Some(&p) if p != 0 => Some(p as usize - 1),
            _ => None,
        }
    }
    pub fn get(&self, key: u32) -> Option<&G> {
        self.position(key).map(|p| &self.items[p].1)
    }
    #[inline]
    pub fn get_mut(&mut self, key: u32) -> Option<&mut G> {
        self.position(key).map(|p| &mut self.items[p].1)
    }
    /// The group of ``key``, made by ``new`` when there is none.
    #[inline]
    pub fn get_or_insert_with(&mut self, key: u32, new: impl FnOnce() -> G) -> &mut G {
        let p = match self.position(key) {
            Some(p) => p,
            None => self.insert(key, new()),
        };
        &mut self.items[p].1
    }
    pub fn insert(&mut self, key: u32, group: G) -> usize {
        if let Some(p) = self.position(key) {
            self.items[p].1 = group;
            return p;
        }
        if self.slot.len() <= key as usize {
            self.slot.resize(key as usize + 1, 0);
        }
        self.items.push((key, group));
        self.slot[key as usize] = self.items.len() as u32;
        self.items.len() - 1
    }
    pub fn remove(&mut self, key: u32) {
        let Some(p) = self.position(key) else {
            return;
        };
        self.slot[key as usize] = 0;
        self.items.swap_remove(p);
        if let Some((moved, _)) = self.items.get(p) {
            self.slot[*moved as usize] = p as u32 + 1;
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (u32, &G)> {
        self.items.iter().map(|(k, g)| (*k, g))
    }
    pub fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.items.iter().map(|(k, _)| *k)
    }
    pub fn values(&self) -> impl Iterator<Item = &G> {
        self.items.iter().map(|(_, g)| g)
    }
    /// Ask the CPU for the group of ``key`` ahead of its use (see `prefetch`).
    #[inline]
    pub fn prefetch(&self, key: u32) {
        if let Some(p) = self.position(key) {
            prefetch(&self.items[p].1);
        }
    }

    /// Ask for the newest bucket of the group of ``key`` (its header must be at hand).
    #[inline]
    pub fn prefetch_newest(&self, key: u32)
    where
        G: Ends,
    {
        if let Some(p) = self.position(key) {
            if let Some(b) = self.items[p].1.newest() {
                prefetch(b);
            }
        }
    }

    /// Ask for the oldest bucket of the group of ``key`` (its header must be at hand).
    #[inline]
    pub fn prefetch_oldest(&self, key: u32)
    where
        G: Ends,
    {
        if let Some(p) = self.position(key) {
            if let Some(b) = self.items[p].1.oldest() {
                prefetch(b);
            }
        }
    }

    /// The keys renumbered (`KeyTable::retain`: ``map[old]`` the new id; every group's key is
    /// kept); the index is made anew for them, and room left over from a busier time given back.
    pub fn renumber(&mut self, map: &[u32]) {
        let mut slot = vec![0u32; map.iter().filter(|k| **k != crate::keys::GONE).count()];
        for (p, (key, _)) in self.items.iter_mut().enumerate() {
            *key = map[*key as usize];
            slot[*key as usize] = p as u32 + 1;
        }
        self.slot = slot;
        if self.items.capacity() > 2 * self.items.len() + 64 {
            self.items.shrink_to(self.items.len() + self.items.len() / 2);
        }
    }

    /// Bytes held by the index itself (memory estimates).
    pub fn index_bytes(&self) -> usize {
        self.slot.capacity() * 4 + self.items.capacity() * std::mem::size_of::<(u32, G)>()
    }
}

/// Start loading ``value`` (its first 192 bytes) into the cache. The groups and buckets
/// an event reaches are scattered over memory: asking for all of them before using any
/// overlaps the misses instead of waiting for each in turn.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it reads nothing and cannot fault.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = value as *const T as *const i8;
        _mm_prefetch(p, _MM_HINT_T0);
        // every line the value spans (it need not start on a line's boundary)
        let end = p.wrapping_add(std::mem::size_of::<T>().min(192) - 1);
        if end as usize / 64 != p as usize / 64 {
            _mm_prefetch(p.wrapping_add(64), _MM_HINT_T0);
            if end as usize / 64 > p as usize / 64 + 1 {
                _mm_prefetch(p.wrapping_add(128), _MM_HINT_T0);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
