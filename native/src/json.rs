//! Events decoded without copying: strings borrow from the line (unless escaped), objects
//! are short vectors of (key, value) looked up from the end (a repeated key: the last
//! wins, as in orjson).

use crate::num::Num;
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq)]
pub enum J<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(Cow<'a, str>),
    Arr(Vec<J<'a>>),
    Obj(Obj<'a>),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Obj<'a>(pub Vec<(Cow<'a, str>, J<'a>)>);

impl PartialEq for Num {
    fn eq(&self, other: &Num) -> bool {
        matches!(self.cmp(*other), std::cmp::Ordering::Equal)
    }
}

impl<'a> Obj<'a> {
    pub fn get(&self, key: &str) -> Option<&J<'a>> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn values(&self) -> impl Iterator<Item = &J<'a>> {
        // each key once, with its last value
        self.0
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| !self.0[i + 1..].iter().any(|(l, _)| l == k))
            .map(|(_, (_, v))| v)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> J<'a> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn is_null(&self) -> bool {
        matches!(self, J::Null)
    }
    /// As serde_json's value, keys in first-seen order with their last value (a Python dict).
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Num(n) => n.to_json(),
            J::Str(s) => Value::String(s.to_string()),
            J::Arr(items) => Value::Array(items.iter().map(J::to_value).collect()),
            J::Obj(o) => {
                let mut map = serde_json::Map::new();
                for (k, v) in &o.0 {
                    map.insert(k.to_string(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }
}

/// One JSON document, borrowing from ``raw``; None when it is not one this decoder accepts.
/// It accepts only what orjson accepts and decodes alike (RFC 8259, UTF-8, depth below
/// orjson's limit, finite numbers); anything else goes to the Python decoder, which decides.
pub fn parse(raw: &[u8]) -> Option<J<'_>> {
    let mut p = Parser { b: raw, i: 0, depth: 0 };
    p.ws();
    let value = p.value()?;
    p.ws();
    (p.i == raw.len()).then_some(value)
}

/// Objects and arrays nested deeper than this: not accepted (events.py MAX_DEPTH refuses the
/// event, with the reason).
const MAX_DEPTH: u32 = 64;

/// Bytes that end the fast scan of a string: quote, backslash, control characters, non-ASCII.
static STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i < 0x20 || i == b'"' as usize || i == b'\\' as usize || i >= 0x80;
        i += 1;
    }
    t
};

/// The stop bytes (`STOP`) of eight bytes read little-endian, as the high bit of each: the
/// lowest one set is the first stop byte (higher ones may be wrong: a borrow carries up, but
/// only from a byte that is itself a stop byte).
#[inline(always)]
fn stops(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v; // bytes that are 0
    let quote = zero(w ^ (ONES * b'"' as u64));
    let backslash = zero(w ^ (ONES * b'\\' as u64));
    let control = w.wrapping_sub(ONES * 0x20) & !w; // bytes below 0x20
    (quote | backslash | control | w) & HIGH // w: bytes of 0x80 and above
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl<'a> Parser<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn value(&mut self) -> Option<J<'a>> {
        match self.peek()? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => Some(J::Str(self.string()?)),
            b't' => self.literal(b"true", J::Bool(true)),
            b'f' => self.literal(b"false", J::Bool(false)),
            b'n' => self.literal(b"null", J::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, text: &[u8], value: J<'a>) -> Option<J<'a>> {
        if self.b.get(self.i..self.i + text.len())? != text {
            return None;
        }
        self.i += text.len();
        Some(value)
    }

    fn object(&mut self) -> Option<J<'a>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        // an event has ~17 top-level keys (event.rs FIELDS): room for them without growing
        let mut items = Vec::with_capacity(if self.depth == 1 { 24 } else { 8 });
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
        } else {
            loop {
                if self.peek() != Some(b'"') {
                    return None;
                }
                let key = self.string()?;
                self.ws();
                if self.peek() != Some(b':') {
                    return None;
                }
                self.i += 1;
                self.ws();
                // strings and numbers (nearly every value of an event) made here rather than
                // returned from `value`: fewer moves of a value through the stack
                let value = match self.peek()? {
                    b'"' => J::Str(self.string()?),
                    b'-' | b'0'..=b'9' => self.number()?,
                    _ => self.value()?,
                };
                items.push((key, value));
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                    }
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(J::Obj(Obj(items)))
    }

    fn array(&mut self) -> Option<J<'a>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
        } else {
            loop {
                items.push(self.value()?);
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                    }
                    Some(b']') => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(J::Arr(items))
    }

    /// At a quote: the string, borrowed unless it has escapes. (Inlined: returned through
    /// the stack, its `Option<Cow>` was stored and reloaded at odd offsets — a store-to-load
    /// forwarding stall for every key and string of every event.)
    #[inline(always)]
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let b = self.b;
        let start = self.i + 1;
        let mut j = start;
        // eight bytes at a time while they hold no stop byte, then byte by byte
        while let Some(word) = b.get(j..j + 8) {
            let found = stops(u64::from_le_bytes(word.try_into().unwrap()));
            if found != 0 {
                j += (found.trailing_zeros() / 8) as usize;
                break;
            }
            j += 8;
        }
        while j < b.len() && !STOP[b[j] as usize] {
            j += 1;
        }
        match *b.get(j)? {
            b'"' => {
                self.i = j + 1;
                // SAFETY: the bytes scanned are all ASCII.
                Some(Cow::Borrowed(unsafe {
                    std::str::from_utf8_unchecked(&b[start..j])
                }))
            }
            _ => self.string_slow(start),
        }
    }

    /// A string with escapes or non-ASCII text.
    #[cold]
    #[inline(never)]
    fn string_slow(&mut self, start: usize) -> Option<Cow<'a, str>> {
        let b = self.b;
        let mut out: Vec<u8> = Vec::new();
        let mut j = start;
        let mut escaped = false;
        loop {
            let c = *b.get(j)?;
            match c {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    j += 1;
                    match *b.get(j)? {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let hi = hex4(b.get(j + 1..j + 5)?)?;
                            j += 4;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if b.get(j + 1..j + 3)? != b"\\u" {
                                    return None; // a lone surrogate: orjson refuses it
                                }
                                let lo = hex4(b.get(j + 3..j + 7)?)?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return None;
                                }
                                j += 6;
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return None;
                            } else {
                                hi
                            };
                            let ch = char::from_u32(code)?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return None,
                    }
                    j += 1;
                }
                c if c < 0x20 => return None,
                c => {
                    out.push(c);
                    j += 1;
                }
            }
        }
        self.i = j + 1;
        if escaped {
            String::from_utf8(out).ok().map(Cow::Owned)
        } else {
            std::str::from_utf8(&b[start..j]).ok().map(Cow::Borrowed)
        }
    }

    #[inline(always)]
    fn number(&mut self) -> Option<J<'a>> {
        let b = self.b;
        let start = self.i;
        let mut j = start;
        let negative = b[j] == b'-';
        if negative {
            j += 1;
        }
        let digits_start = j;
        match *b.get(j)? {
            b'0' => j += 1,
            b'1'..=b'9' => {
                while b.get(j).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                }
            }
            _ => return None,
        }
        let digits_end = j;
        let mut float = false;
        if b.get(j) == Some(&b'.') {
            j += 1;
            let from = j;
            while b.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            if j == from {
                return None;
            }
            float = true;
        }
        if matches!(b.get(j), Some(b'e' | b'E')) {
            j += 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            let from = j;
            while b.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            if j == from {
                return None;
            }
            float = true;
        }
        self.i = j;
        if !float && digits_end - digits_start <= 18 {
            let mut v: i64 = 0;
            for d in &b[digits_start..digits_end] {
                v = v * 10 + (d - b'0') as i64;
            }
            return Some(J::Num(Num::Int(if negative { -v } else { v })));
        }
        // SAFETY: the bytes matched the ASCII grammar of a JSON number.
        let text = unsafe { std::str::from_utf8_unchecked(&b[start..j]) };
        if !float {
            if let Ok(v) = text.parse::<i64>() {
                return Some(J::Num(Num::Int(v)));
            }
            // beyond i64: Python keeps an exact int; here the nearest float (docs/native.md)
        }
        let x: f64 = text.parse().ok()?; // correctly rounded, as orjson
        x.is_finite().then_some(J::Num(Num::Float(x)))
    }
}

fn hex4(h: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for c in h {
        v = v * 16 + (*c as char).to_digit(16)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_what_orjson_accepts_alike() {
        let v = parse(" {\"a\": [1, -0, 2.5, 1e2, \"x\\u00e9\\ud83d\\ude00\", true, null], \"a\": \"é\"} ".as_bytes()).unwrap();
        let J::Obj(o) = v else { panic!() };
        assert_eq!(o.get("a"), Some(&J::Str(Cow::Borrowed("é"))));
        let J::Arr(items) = &o.0[0].1 else { panic!() };
        assert_eq!(items[1], J::Num(Num::Int(0)));
        assert_eq!(items[3], J::Num(Num::Float(100.0)));
        assert_eq!(items[4], J::Str(Cow::Owned("xé😀".into())));
        for bad in [&b"{\"a\":01}"[..], b"{\"a\":1e400}", b"[\"\\ud800\"]", b"{\"a\":1}x", b"[1,]", b"{\"a\" 1}", b"\"\x01\"", b"[\"\xff\"]", b"NaN"] {
            assert!(parse(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn stops_finds_the_first_stop_byte() {
        // every position, every kind of stop byte, with and without stop bytes after it
        for at in 0..8 {
            for stop in [b'"', b'\\', 0u8, 0x1f, 0x80, 0xff] {
                for after in [b'a', b'"', 0u8, 0xff] {
                    let mut w = [b'x'; 8];
                    w[at] = stop;
                    for byte in w.iter_mut().skip(at + 1) {
                        *byte = after;
                    }
                    let found = stops(u64::from_le_bytes(w));
                    assert_eq!(found.trailing_zeros() / 8, at as u32, "{w:?}");
                }
            }
        }
        assert_eq!(stops(u64::from_le_bytes(*b" ~!#[]{}")), 0);
        let text = br#"{"k":"a long string with \"quotes\" and \u00e9 and caf\u00e9s here"}"#;
        let J::Obj(o) = parse(text).unwrap() else { panic!() };
        assert_eq!(o.get("k").unwrap().as_str(), Some("a long string with \"quotes\" and é and cafés here"));
    }
}
