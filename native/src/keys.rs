//! Group keys: each `by` list's keys interned once (`KeyTable`), for every rule grouped alike;
//! the ids the rules' group indexes (groups.rs), schedules (schedule.rs) and a shard's owner
//! cache (route.rs) use.

use crate::host::Text;
use crate::json::J;
use crate::num::Num;
use crate::value::KeyPart;

/// The group keys of one `by` list, interned: every rule grouped by the same fields shares
/// them, so an event's key is looked up once per `by` list, without copying its text.
///
/// Looked up by their bytes (`encode`), kept one after another in `bytes`: a lookup reads
/// the table's slot and those bytes — not a key's parts and then each part's text, three
/// scattered reads for a key not seen lately (most `by user` keys). A key's parts are those
/// bytes decoded (`parts`), when asked: only a group that holds, a snapshot, a shard's owner
/// and sorting need them (kept apart as well they took ~80 bytes more per key).
///
/// Keys are forgotten too: when more than half of a table's keys belong to no group of any
/// rule any more (users seen once, long gone), `Engine::forget_keys` keeps only the others,
/// renumbered in their order (`retain`) — so a table holds at most about twice the keys alive.
#[derive(Default)]
pub struct KeyTable {
    table: hashbrown::HashTable<Slot>,
    bytes: Vec<u8>,
    scratch: Vec<u8>,
    at: Vec<usize>, // key id → where its bytes are (as its slot has it)
    /// The size at which `Engine::forget_keys` next counts the keys alive (0: at `KEYS_CHECKED`).
    pub check_at: usize,
}

/// A key table smaller than this is never compacted: its dead keys cost little.
pub const KEYS_CHECKED: usize = 1024;

/// A key in the table: its id, its length, and its bytes when they are short (up to
/// `INLINE_KEY`: a `by user` key of an id up to 15 bytes), else where its length (4 bytes)
/// and then its bytes are in `bytes`. A lookup compares the length first and reads a
/// short key from the slot: one cache miss fewer (of three: control bytes, slot, bytes)
/// for a key not seen lately — most of stage 1's `KeyTable::find`.
#[derive(Clone, Copy)]
struct Slot {
    id: u32,
    len: u32,
    /// the key's bytes (up to `INLINE_KEY`), or where they are (`at`, 8 bytes little-endian):
    /// a table past 4 GiB of key bytes goes on (no u32 offset)
    data: [u8; INLINE_KEY],
}

const INLINE_KEY: usize = 24;

impl Slot {
    fn new(id: u32, encoded: &[u8], at: usize) -> Slot {
        let mut data = [0u8; INLINE_KEY];
        if encoded.len() <= INLINE_KEY {
            data[..encoded.len()].copy_from_slice(encoded);
        } else {
            data[..8].copy_from_slice(&(at as u64).to_le_bytes());
        }
        Slot { id, len: encoded.len() as u32, data }
    }

    /// The key's bytes (``bytes``: the table's).
    #[inline]
    fn key<'a>(&'a self, bytes: &'a [u8]) -> &'a [u8] {
        let len = self.len as usize;
        if len <= INLINE_KEY {
            &self.data[..len]
        } else {
            let at = u64::from_le_bytes(self.data[..8].try_into().unwrap()) as usize;
            &bytes[at + 4..at + 4 + len]
        }
    }
}

/// A key part as the event has it: text borrowed from the line until the key is new.
pub enum KeyRef<'a> {
    Part(KeyPart),
    Str(&'a str),
}

/// A key part's bytes: equal parts (`KeyPart`'s equality: numbers in their one form,
/// `Num::canonical`, 0 and -0.0 alike) give equal bytes, different parts different bytes
/// (each part tagged, text with its length).
fn encode_str(out: &mut Vec<u8>, s: &str) {
    out.push(3);
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn encode_part(out: &mut Vec<u8>, part: &KeyPart) {
    match part {
        KeyPart::None => out.push(0),
        KeyPart::Bool(b) => out.extend_from_slice(&[1, *b as u8]),
        KeyPart::Num(n) => match n.canonical() {
            Num::Int(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Num::Float(x) => {
                out.push(4);
                out.extend_from_slice(&x.to_bits().to_le_bytes()); // whole floats are ints here
            }
        },
        KeyPart::Str(s) => encode_str(out, s),
    }
}

/// `encode_part`s' inverse: the parts of a key's bytes.
fn decode_parts(mut b: &[u8]) -> Vec<KeyPart> {
    let word = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().unwrap());
    let mut parts = Vec::new();
    while let Some((&tag, rest)) = b.split_first() {
        b = rest;
        match tag {
            0 => parts.push(KeyPart::None),
            1 => {
                parts.push(KeyPart::Bool(b[0] != 0));
                b = &b[1..];
            }
            2 => {
                parts.push(KeyPart::Num(Num::Int(word(b) as i64)));
                b = &b[8..];
            }
            4 => {
                parts.push(KeyPart::Num(Num::Float(f64::from_bits(word(b)))));
                b = &b[8..];
            }
            _ => {
                let len = word(b) as usize;
                let text = std::str::from_utf8(&b[8..8 + len]).expect("interned from text");
                parts.push(KeyPart::Str(text.to_string()));
                b = &b[8 + len..];
            }
        }
    }
    parts
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(bytes);
    h.finish()
}

impl KeyTable {
    /// ``intern`` without copying the event's text unless the key is new.
    pub fn intern_ref(&mut self, key: &[KeyRef]) -> u32 {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        for part in key {
            match part {
                KeyRef::Str(s) => encode_str(&mut scratch, s),
                KeyRef::Part(p) => encode_part(&mut scratch, p),
            }
        }
        let id = match self.find(&scratch) {
            Some(id) => id,
            None => self.insert(&scratch),
        };
        self.scratch = scratch;
        id
    }

    /// The id of ``key`` (made from the event's values), interning it when new.
    pub fn intern(&mut self, key: &[KeyPart]) -> u32 {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        for part in key {
            encode_part(&mut scratch, part);
        }
        let id = match self.find(&scratch) {
            Some(id) => id,
            None => self.insert(&scratch),
        };
        self.scratch = scratch;
        id
    }

    #[inline]
    fn find(&self, encoded: &[u8]) -> Option<u32> {
        let bytes = &self.bytes;
        self.table
            .find(hash_bytes(encoded), |s| s.len as usize == encoded.len() && s.key(bytes) == encoded)
            .map(|s| s.id)
    }

    fn insert(&mut self, encoded: &[u8]) -> u32 {
        let id = self.at.len() as u32;
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(encoded);
        self.at.push(at);
        let bytes = &self.bytes;
        self.table.insert_unique(hash_bytes(encoded), Slot::new(id, encoded, at), |s| {
            hash_bytes(s.key(bytes))
        });
        id
    }

    /// How many keys the table holds (alive or not).
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The parts of the key ``id`` (decoded from its bytes: `encode_part`'s inverse; numbers
    /// in their one form, as the events' were interned).
    pub fn parts(&self, id: u32) -> Vec<KeyPart> {
        let at = self.at[id as usize];
        let len = u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap()) as usize;
        decode_parts(&self.bytes[at + 4..at + 4 + len])
    }

    /// Keep only the keys ``keep`` marks (by id), numbered anew in their order (so groups
    /// sorted by id stay sorted): the old id → the new one (`GONE`: forgotten).
    pub fn retain(&mut self, keep: &[bool]) -> Vec<u32> {
        let live = keep.iter().filter(|k| **k).count();
        let mut map = vec![GONE; self.at.len()];
        let old_bytes = std::mem::take(&mut self.bytes);
        let old_at = std::mem::take(&mut self.at);
        let mut bytes = Vec::with_capacity(old_bytes.len() / old_at.len().max(1) * live + 64);
        let mut at_of = Vec::with_capacity(live);
        let mut table = hashbrown::HashTable::with_capacity(live);
        for (id, &at) in old_at.iter().enumerate() {
            if !keep[id] {
                continue;
            }
            let len = u32::from_le_bytes(old_bytes[at..at + 4].try_into().unwrap()) as usize;
            let encoded = &old_bytes[at + 4..at + 4 + len];
            let new_id = at_of.len() as u32;
            map[id] = new_id;
            let new_at = bytes.len();
            bytes.extend_from_slice(&old_bytes[at..at + 4 + len]);
            at_of.push(new_at);
            table.insert_unique(hash_bytes(encoded), Slot::new(new_id, encoded, new_at), |_: &Slot| {
                unreachable!("the table is made with room for every key")
            });
        }
        self.bytes = bytes;
        self.at = at_of;
        self.table = table;
        map
    }

    /// The order groups are listed and evaluated in (`engine._group_order`: each part's
    /// (type rank, `str`)), made when asked: only sorting needs it.
    pub fn order(&self, id: u32) -> Vec<(u8, String)> {
        self.parts(id).iter().map(KeyPart::order).collect()
    }

    /// Bytes held (memory estimates): the table, the keys' bytes and parts.
    pub fn heap_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<Slot>() + 1)
            + self.bytes.capacity()
            + self.at.capacity() * std::mem::size_of::<usize>()
    }
}

/// A forgotten key (`KeyTable::retain`): groups are never under it; a rule's schedule may
/// still name it (a step with nothing left to do), as the core's names a dropped group's key.
pub const GONE: u32 = u32::MAX;

pub fn key_part_with<'a, H: Text>(value: Option<&'a J>, host: &H) -> KeyRef<'a> {
    KeyRef::Part(match value {
        None | Some(J::Null) => KeyPart::None,
        Some(J::Str(s)) => return KeyRef::Str(s.as_ref()),
        Some(J::Bool(b)) => KeyPart::Bool(*b),
        Some(J::Num(n)) => KeyPart::Num(n.canonical()),
        Some(other) => KeyPart::Str(host.py_str(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(parts: &[KeyPart]) -> Vec<String> {
        parts.iter().map(|p| format!("{p:?}")).collect()
    }

    #[test]
    fn short_and_long_keys_intern_once() {
        // "usr_1": 14 bytes encoded, in its slot; the pair: 45 bytes, in `bytes`
        let short = [KeyPart::Str("usr_1".into())];
        let long = [KeyPart::Str("a-tenant-with-a-long-name".into()), KeyPart::Str("svc".into())];
        let other = [KeyPart::Str("usr_2".into())]; // as long as `short`, other bytes
        let mut t = KeyTable::default();
        let (a, b, c) = (t.intern(&short), t.intern(&long), t.intern(&other));
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!((t.intern(&short), t.intern(&long), t.intern(&other)), (0, 1, 2));
        assert_eq!(text(&t.parts(b)), text(&long));
        assert_eq!(t.retain(&[false, true, true]), vec![GONE, 0, 1]);
        assert_eq!((t.intern(&long), t.intern(&other), t.intern(&short)), (0, 1, 2));
        assert_eq!(text(&t.parts(0)), text(&long));
        for n in 0..2000u32 {
            let key = [KeyPart::Str(format!("user-{n}-{}", "x".repeat((n % 40) as usize)))];
            assert_eq!(t.intern(&key), n + 3); // new: the table grows (slots moved)
        }
        for n in 0..2000u32 {
            let key = [KeyPart::Str(format!("user-{n}-{}", "x".repeat((n % 40) as usize)))];
            assert_eq!(t.intern(&key), n + 3);
        }
    }
}
