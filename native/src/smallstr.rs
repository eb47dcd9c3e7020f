//! An evidence item's text: its event id and, for a rule with scope dimensions, its event's
//! string values of them, packed in one value — inline up to 38 bytes (a short id and a few
//! short dimension values: all that `firebreak.synthetic` and most producers make), else in
//! one allocation. Before, an item held its id inline and its scope values in 1 + k
//! allocations (a list, then each value): most of the allocations an event made.
//!
//! Layout: the id's length (a varint), its bytes; then nothing (no scope: a rule without
//! scope dimensions, or an item restored without one) or each value as a varint (0:
//! missing, else its length + 1) and its bytes, to the end. (A scope of no values reads
//! back as none: rules without scope dimensions keep none.)

use std::fmt;

const INLINE: usize = 38;

#[derive(Clone)]
pub enum Packed {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

fn varint_len(mut n: usize) -> usize {
    let mut bytes = 1;
    while n >= 0x80 {
        n >>= 7;
        bytes += 1;
    }
    bytes
}

fn put_varint(out: &mut [u8], at: &mut usize, mut n: usize) {
    while n >= 0x80 {
        out[*at] = (n as u8 & 0x7f) | 0x80;
        *at += 1;
        n >>= 7;
    }
    out[*at] = n as u8;
    *at += 1;
}

#[inline]
fn get_varint(bytes: &[u8], at: &mut usize) -> usize {
    let mut n = 0usize;
    let mut shift = 0;
    loop {
        let b = bytes[*at];
        *at += 1;
        n |= ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            return n;
        }
        shift += 7;
    }
}

impl Packed {
    /// ``id`` and, when ``scope`` is Some, its values (in the rule's dimension order).
    pub fn new(id: &str, scope: Option<&[Option<&str>]>) -> Packed {
        let mut len = varint_len(id.len()) + id.len();
        if let Some(values) = scope {
            for v in values {
                len += match v {
                    None => 1,
                    Some(s) => varint_len(s.len() + 1) + s.len(),
                };
            }
        }
        let write = |out: &mut [u8]| {
            let mut at = 0;
            put_varint(out, &mut at, id.len());
            out[at..at + id.len()].copy_from_slice(id.as_bytes());
            at += id.len();
            if let Some(values) = scope {
                for v in values {
                    match v {
                        None => put_varint(out, &mut at, 0),
                        Some(s) => {
                            put_varint(out, &mut at, s.len() + 1);
                            out[at..at + s.len()].copy_from_slice(s.as_bytes());
                            at += s.len();
                        }
                    }
                }
            }
            debug_assert_eq!(at, out.len());
        };
        if len <= INLINE {
            let mut buf = [0u8; INLINE];
            write(&mut buf[..len]);
            Packed::Inline { len: len as u8, buf }
        } else {
            let mut heap = vec![0u8; len].into_boxed_slice();
            write(&mut heap);
            Packed::Heap(heap)
        }
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Packed::Inline { len, buf } => &buf[..*len as usize],
            Packed::Heap(b) => b,
        }
    }

    /// The event id.
    #[inline]
    pub fn id(&self) -> &str {
        let bytes = self.bytes();
        let mut at = 0;
        let n = get_varint(bytes, &mut at);
        // SAFETY: the bytes were copied from a `str`, whole (`new`).
        unsafe { std::str::from_utf8_unchecked(&bytes[at..at + n]) }
    }

    /// The scope values (None: the item keeps no scope).
    pub fn scope(&self) -> Option<ScopeValues<'_>> {
        let bytes = self.bytes();
        let mut at = 0;
        let n = get_varint(bytes, &mut at);
        at += n;
        if at == bytes.len() {
            return None;
        }
        Some(ScopeValues { bytes, at })
    }

    /// Bytes held outside the value itself.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Packed::Inline { .. } => 0,
            Packed::Heap(b) => b.len(),
        }
    }
}

/// The scope values of a `Packed`, in order.
pub struct ScopeValues<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for ScopeValues<'a> {
    type Item = Option<&'a str>;
    fn next(&mut self) -> Option<Option<&'a str>> {
        if self.at == self.bytes.len() {
            return None;
        }
        let n = get_varint(self.bytes, &mut self.at);
        if n == 0 {
            return Some(None);
        }
        let s = &self.bytes[self.at..self.at + n - 1];
        self.at += n - 1;
        // SAFETY: the bytes were copied from a `str`, whole (`Packed::new`).
        Some(Some(unsafe { std::str::from_utf8_unchecked(s) }))
    }
}

impl fmt::Debug for Packed {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.scope() {
            None => fmt::Debug::fmt(self.id(), f),
            Some(values) => f.debug_tuple("").field(&self.id()).field(&values.collect::<Vec<_>>()).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn texts_read_back() {
        let long = "an-id-longer-than-thirty-eight-bytes-by-some-way";
        for id in ["", "ev-1-000000001", "é-abc", long] {
            let p = Packed::new(id, None);
            assert_eq!(p.id(), id);
            assert!(p.scope().is_none());
            for scope in [
                &[None][..],
                &[Some("search-assistant"), Some("wayne")][..],
                &[Some(""), None, Some(long), Some(&"x".repeat(300))][..],
            ] {
                let p = Packed::new(id, Some(scope));
                assert_eq!(p.id(), id);
                assert_eq!(p.scope().unwrap().collect::<Vec<_>>(), scope.to_vec());
            }
        }
        // the starter pack's common case, inline
        let p = Packed::new("ev-1-000000001", Some(&[Some("search-assistant"), Some("wayne")]));
        assert_eq!(p.heap_bytes(), 0);
        assert_eq!(std::mem::size_of::<Packed>(), 40);
    }
}
