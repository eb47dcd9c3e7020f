//! Event ids kept as evidence: short ids (all that `firebreak.synthetic` and most producers
//! make) stored inline, without an allocation per kept id.

use std::fmt;
use std::ops::Deref;

const INLINE: usize = 22;

#[derive(Clone)]
pub enum Id {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<str>),
}

impl Id {
    pub fn new(text: &str) -> Id {
        if text.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..text.len()].copy_from_slice(text.as_bytes());
            Id::Inline {
                len: text.len() as u8,
                buf,
            }
        } else {
            Id::Heap(text.into())
        }
    }
    /// Bytes held outside the value itself.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Id::Inline { .. } => 0,
            Id::Heap(s) => s.len(),
        }
    }
}

impl Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            // SAFETY: the bytes were copied from a `str`, whole.
            Id::Inline { len, buf } => unsafe { std::str::from_utf8_unchecked(&buf[..*len as usize]) },
            Id::Heap(s) => s,
        }
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ids_read_back() {
        for text in ["", "ev-1-000000001", "é-abc", "an-id-longer-than-twenty-two-bytes"] {
            assert_eq!(&*Id::new(text), text);
        }
        assert_eq!(std::mem::size_of::<Id>(), 24);
    }
}
