//! The routed rows (routed format 7; docs/live.md, "The routed format"): the events stage 1
//! sends a shard, each as one binary row, read by the shard's engine without parsing JSON again.
//!
//! A row is little-endian: `u32 LEN` (bytes after it), `u32 PARTITION`, `i64 OFFSET`, `i64 TS`,
//! `u64 MASK` (the rules of which the shard owns the event's pair), `u64 POP` (the population
//! rules that count the event on this shard without it owning the pair), `u64 FLAGGED` (of
//! those, the ones whose flag the event has set), then the event as one value. With the same
//! rules as stage 1, a shard reads only the head of a row whose `MASK` is 0. A value is a tag byte and its payload:
//! `0` null, `1` false, `2` true, `3` int (i64), `4` float (f64), `5` string (byte length,
//! UTF-8), `6` array (count, the items), `7` object (count, then each key as a string payload —
//! length, UTF-8 — and its value); lengths and counts are LEB128 varints (one byte below 128). An object keeps its keys in the order and with
//! the repeats the input line had (`json::Obj`), so a shard decodes exactly the tree stage 1
//! decoded from the input, as a replay does. `engine/firebreak/adapters/live/routed.py` reads the
//! same rows in Python (`rows`).

use crate::event::{self, Event};
use crate::json::{Obj, J};
use crate::value::Num;
use std::borrow::Cow;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
const STR: u8 = 5;
const ARR: u8 = 6;
const OBJ: u8 = 7;
/// Bytes of a row after its length: partition, offset, time, mask, population, flagged.
pub const ROW_HEAD: usize = 4 + 8 + 8 + 8 + 8 + 8;
/// Nesting a row may have (the decoder accepts events nested at most 64 deep: json.rs MAX_DEPTH).
const MAX_DEPTH: u32 = 128;

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// The value ``v`` as a row's value.
pub fn write_value(out: &mut Vec<u8>, v: &J) {
    match v {
        J::Null => out.push(NULL),
        J::Bool(false) => out.push(FALSE),
        J::Bool(true) => out.push(TRUE),
        J::Num(Num::Int(i)) => {
            out.push(INT);
            out.extend_from_slice(&i.to_le_bytes());
        }
        J::Num(Num::Float(x)) => {
            out.push(FLOAT);
            out.extend_from_slice(&x.to_le_bytes());
        }
        J::Str(s) => {
            out.push(STR);
            put_str(out, s);
        }
        J::Arr(items) => {
            out.push(ARR);
            put_len(out, items.len());
            items.iter().for_each(|item| write_value(out, item));
        }
        J::Obj(obj) => write_obj(out, obj, &[]),
    }
}

/// An object as a row's value, without its keys named in ``drop`` (the raw text fields).
pub fn write_obj(out: &mut Vec<u8>, obj: &Obj, drop: &[&str]) {
    out.push(OBJ);
    let kept = |k: &Cow<str>| !drop.contains(&k.as_ref());
    let count = obj.0.iter().filter(|(k, _)| kept(k)).count();
    put_len(out, count);
    for (key, value) in obj.0.iter().filter(|(k, _)| kept(k)) {
        put_str(out, key);
        write_value(out, value);
    }
}

/// One row: its head then ``value`` (an event written by `write_obj`).
#[allow(clippy::too_many_arguments)]
pub fn write_row(out: &mut Vec<u8>, partition: i64, offset: i64, ts: i64, mask: u64, pop: u64, flagged: u64, value: &[u8]) {
    out.extend_from_slice(&((ROW_HEAD + value.len()) as u32).to_le_bytes());
    out.extend_from_slice(&(partition as u32).to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&mask.to_le_bytes());
    out.extend_from_slice(&pop.to_le_bytes());
    out.extend_from_slice(&flagged.to_le_bytes());
    out.extend_from_slice(value);
}

/// A row of a routed message's body.
pub struct Row<'a> {
    pub partition: i64,
    pub offset: i64,
    pub ts: i64,
    pub mask: u64,
    pub pop: u64,
    pub flagged: u64,
    pub value: &'a [u8],
}

/// The rows of a body, in order; an error (what is wrong) for a malformed one.
pub fn rows(body: &[u8]) -> impl Iterator<Item = Result<Row<'_>, &'static str>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at >= body.len() {
            return None;
        }
        let Some(len) = body.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize) else {
            at = body.len();
            return Some(Err("a routed row is cut short"));
        };
        let start = at + 4;
        let Some(row) = body.get(start..start + len).filter(|_| len >= ROW_HEAD) else {
            at = body.len();
            return Some(Err("a routed row is cut short"));
        };
        at = start + len;
        let word = |i: usize| u64::from_le_bytes(row[i..i + 8].try_into().unwrap());
        Some(Ok(Row {
            partition: u32::from_le_bytes(row[0..4].try_into().unwrap()) as i64,
            offset: word(4) as i64,
            ts: word(12) as i64,
            mask: word(20),
            pop: word(28),
            flagged: word(36),
            value: &row[ROW_HEAD..],
        }))
    })
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(out)
    }
    fn len(&mut self) -> Option<usize> {
        let mut n = 0usize;
        for shift in (0..35).step_by(7) {
            let byte = *self.b.get(self.i)?;
            self.i += 1;
            n |= ((byte & 0x7f) as usize) << shift;
            if byte < 0x80 {
                return Some(n);
            }
        }
        None
    }
    fn str(&mut self) -> Option<Cow<'a, str>> {
        let n = self.len()?;
        Some(Cow::Borrowed(std::str::from_utf8(self.take(n)?).ok()?))
    }
    fn value(&mut self, depth: u32) -> Option<J<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        let tag = *self.take(1)?.first()?;
        Some(match tag {
            NULL => J::Null,
            FALSE => J::Bool(false),
            TRUE => J::Bool(true),
            INT => J::Num(Num::Int(i64::from_le_bytes(self.take(8)?.try_into().ok()?))),
            FLOAT => J::Num(Num::Float(f64::from_le_bytes(self.take(8)?.try_into().ok()?))),
            STR => J::Str(self.str()?),
            ARR => {
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(self.b.len() - self.i));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                J::Arr(items)
            }
            OBJ => J::Obj(self.obj(depth)?),
            _ => return None,
        })
    }
    fn obj(&mut self, depth: u32) -> Option<Obj<'a>> {
        let n = self.len()?;
        let mut pairs = Vec::with_capacity(n.min(self.b.len() - self.i));
        for _ in 0..n {
            let key = self.str()?;
            pairs.push((key, self.value(depth + 1)?));
        }
        Some(Obj(pairs))
    }
}

/// The event of a row's value at time ``ts``; None when it is not an event stage 1 wrote.
pub fn read_event(value: &[u8], ts: i64) -> Option<Event<'_>> {
    let mut reader = Reader { b: value, i: 0 };
    if reader.take(1)? != [OBJ] {
        return None;
    }
    let data = reader.obj(0)?;
    (reader.i == value.len()).then_some(())?;
    event::routed(ts, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_back_as_the_tree_it_was() {
        let line = br#"{"event_id":"e\u00e91","ts":1767600000000,"user":"u","flags":{"pii":true,"x":false},
            "scores":{"h":0.25},"tokens_in":12,"labels":["a",null,[1.5e300]],"prompt":"drop me","user":"v","long":"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"}"#;
        let event = event::decode(line, None).unwrap();
        let mut value = Vec::new();
        write_obj(&mut value, &event.data, &["prompt", "output"]);
        let mut body = Vec::new();
        write_row(&mut body, 3, 41, event.ts, 0b101, 0b10, 0b10, &value);
        write_row(&mut body, 0, 7, 5, u64::MAX, 0, 0, &value);
        let read: Vec<Row> = rows(&body).collect::<Result<_, _>>().unwrap();
        assert_eq!(read.len(), 2);
        let head = |r: &Row| (r.partition, r.offset, r.ts, r.mask, r.pop, r.flagged);
        assert_eq!(head(&read[0]), (3, 41, event.ts, 0b101, 0b10, 0b10));
        assert_eq!(head(&read[1]), (0, 7, 5, u64::MAX, 0, 0));
        let back = read_event(read[0].value, read[0].ts).unwrap();
        let mut expected = event.data.clone();
        expected.0.retain(|(k, _)| k != "prompt");
        assert_eq!(back.data, expected); // repeats kept: `user` twice, the last one read
        assert_eq!(back.user().and_then(J::as_str), Some("v"));
        assert!(rows(&body[..body.len() - 1]).any(|r| r.is_err()));
    }
}
