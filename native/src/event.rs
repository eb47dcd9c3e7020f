//! Decode and validate one JSON line as engine/firebreak/core/events.py `validate_event` does.
//!
//! The native side only ever *accepts* a line: every line it does not accept goes back to
//! the Python decoder, which gives the reason (or, for the rare forms accepted there and
//! not here -- RFC 3339 times with a fraction of other than 3 or 6 digits -- the event,
//! which is then fed with its time). So a bad line's reason is always the
//! Python core's, word for word.

use crate::json::{Obj, J};
use serde_json::Value;

pub const MAX_TS_MS: i64 = 253_402_300_799_999;
/// Numbers read as epoch seconds, refused (events.py EPOCH_SECONDS).
const EPOCH_SECONDS: std::ops::Range<i64> = 1_000_000_000..100_000_000_000;
const MAX_SCORE: f64 = 1e9; // events.py MAX_SCORE
const CHANGE_KINDS: [&str; 5] = [
    "model_update",
    "prompt_change",
    "config_change",
    "deploy",
    "data_pipeline",
];

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Inference,
    Change,
    Heartbeat,
    Report,
}

pub struct Event<'a> {
    pub ts: i64,
    pub kind: Kind,
    pub data: Obj<'a>,
    slots: Slots,
}

/// The top-level fields of the event schema (docs/schemas/event.schema.json). Each event
/// notes where in its object each one is (`Slots`), in one pass over its keys: validation
/// and the rules' paths (`value::Path`) find them without comparing names.
pub const FIELDS: [&str; 19] = [
    "event_id",
    "ts",
    "type",
    "service",
    "feature",
    "model",
    "model_version",
    "prompt_template",
    "tenant",
    "user",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "flags",
    "scores",
    "kind",
    "labels",
    "ref",
];
const EVENT_ID: u8 = 0;
const TS: u8 = 1;
const TYPE: u8 = 2;
const STRING_FIELDS: std::ops::Range<u8> = 3..10; // service .. user
const NUMBER_FIELDS: std::ops::Range<u8> = 10..14; // latency_ms .. cost_usd
const USER: u8 = 9;
const FLAGS: u8 = 14;
const SCORES: u8 = 15;
const KIND: u8 = 16;
const LABELS: u8 = 17;
const REF: u8 = 18;

/// The slot of a top-level field name, if it is one of `FIELDS`.
#[inline]
pub fn slot_of(name: &str) -> Option<u8> {
    // by length first: at most three names to compare
    let candidates: &[u8] = match name.len() {
        2 => &[TS],
        3 => &[REF],
        4 => &[TYPE, USER, KIND],
        5 => &[5, FLAGS],
        6 => &[8, SCORES, LABELS],
        7 => &[3, 4],
        8 => &[EVENT_ID, 13],
        9 => &[11],
        10 => &[10, 12],
        13 => &[6],
        15 => &[7],
        _ => return None,
    };
    candidates
        .iter()
        .copied()
        .find(|&slot| FIELDS[slot as usize] == name)
}

/// Where each of `FIELDS` is in an event's object (`ABSENT`: not there; a repeated key: the
/// last, as `Obj::get`), or `None` for an object too long to index with a byte (looked up).
#[derive(Clone, Copy)]
struct Slots(Option<[u8; FIELDS.len()]>);

const ABSENT: u8 = u8::MAX;

impl Slots {
    fn of(data: &Obj) -> Slots {
        if data.0.len() >= ABSENT as usize {
            return Slots(None);
        }
        let mut at = [ABSENT; FIELDS.len()];
        for (i, (key, _)) in data.0.iter().enumerate() {
            if let Some(slot) = slot_of(key) {
                at[slot as usize] = i as u8;
            }
        }
        Slots(Some(at))
    }

    #[inline]
    fn get<'b, 'a>(&self, data: &'b Obj<'a>, slot: u8) -> Option<&'b J<'a>> {
        match self.0 {
            Some(at) => match at[slot as usize] {
                ABSENT => None,
                i => Some(&data.0[i as usize].1),
            },
            None => data.get(FIELDS[slot as usize]),
        }
    }
}

impl<'a> Event<'a> {
    /// The top-level field of slot ``slot`` (`slot_of`), as `data.get` gives it.
    #[inline]
    pub fn field(&self, slot: u8) -> Option<&J<'a>> {
        self.slots.get(&self.data, slot)
    }

    pub fn id(&self) -> &str {
        self.field(EVENT_ID).and_then(J::as_str).unwrap_or("")
    }

    /// The `user` field (what `data.get("user")` gives).
    pub fn user(&self) -> Option<&J<'a>> {
        self.field(USER)
    }

    /// The `flags` field.
    pub fn flags(&self) -> Option<&J<'a>> {
        self.field(FLAGS)
    }
}

pub fn parse_json(raw: &[u8]) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    de.disable_recursion_limit();
    let value = serde::Deserialize::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// The event, or None when the Python decoder must look at the line. ``ts``: the time
/// the Python decoder already found (a line fed back after it accepted it).
pub fn decode(raw: &[u8], ts: Option<i64>) -> Option<Event<'_>> {
    let J::Obj(data) = crate::json::parse(raw)? else {
        return None;
    };
    validated(data, ts)
}

/// The event of a routed row (rows.rs) at time ``ts``, checked as `decode` checks a line: None
/// when it is not one.
pub fn routed(ts: i64, data: Obj<'_>) -> Option<Event<'_>> {
    validated(data, Some(ts))
}

fn validated(data: Obj<'_>, ts: Option<i64>) -> Option<Event<'_>> {
    let slots = Slots::of(&data);
    let field = |slot: u8| slots.get(&data, slot);
    match field(EVENT_ID) {
        Some(J::Str(s)) if !s.is_empty() => {}
        _ => return None,
    }
    let ts = match ts {
        Some(ts) => ts,
        None => parse_ts(field(TS)?)?,
    };
    let kind = match field(TYPE) {
        None => Kind::Inference,
        Some(J::Str(s)) if s == "inference" => Kind::Inference,
        Some(J::Str(s)) if s == "change" => Kind::Change,
        Some(J::Str(s)) if s == "heartbeat" => Kind::Heartbeat,
        Some(J::Str(s)) if s == "report" => Kind::Report,
        _ => return None,
    };
    for slot in STRING_FIELDS {
        match field(slot) {
            None | Some(J::Null) | Some(J::Str(_)) => {}
            _ => return None,
        }
    }
    for slot in NUMBER_FIELDS {
        match field(slot) {
            None | Some(J::Null) => {}
            Some(J::Num(n)) if in_range(slot, n.f()) => {}
            _ => return None,
        }
    }
    match field(FLAGS) {
        None | Some(J::Null) => {}
        Some(J::Obj(flags)) if all_values(flags, |v| matches!(v, J::Bool(_))) => {}
        _ => return None,
    }
    match field(SCORES) {
        None | Some(J::Null) => {}
        Some(J::Obj(scores))
            if all_values(scores, |v| matches!(v, J::Num(n) if n.f().abs() <= MAX_SCORE)) => {}
        _ => return None,
    }
    if kind == Kind::Change {
        match field(KIND) {
            Some(J::Str(k)) if CHANGE_KINDS.contains(&k.as_ref()) => {}
            _ => return None,
        }
    }
    if kind == Kind::Report && !valid_report(field(LABELS), field(REF)) {
        return None;
    }
    Some(Event { ts, kind, data, slots })
}

/// events.py NUMBER_RANGES: latency_ms .. cost_usd (NaN is in no range).
fn in_range(slot: u8, x: f64) -> bool {
    let high = match slot {
        10 => 86_400_000.0,
        11 | 12 => 1e9,
        _ => 1e6,
    };
    (0.0..=high).contains(&x)
}

/// Whether every value of ``obj`` as a Python dict has it (a repeated key: its last value).
fn all_values(obj: &Obj, test: impl Fn(&J) -> bool) -> bool {
    // nearly always every value passes: then the last ones do, without finding repeats
    obj.0.iter().all(|(_, v)| test(v)) || obj.values().all(test)
}

/// As events.py `_check_report`: 1 to 16 labels, each a name of up to 64 characters, and a
/// `ref` that is absent, null or a non-empty string.
fn valid_report(labels: Option<&J>, reference: Option<&J>) -> bool {
    let labels_ok = match labels {
        Some(J::Arr(labels)) if !labels.is_empty() && labels.len() <= 16 => {
            labels.iter().all(|l| match l {
                J::Str(s) => is_label(s),
                _ => false,
            })
        }
        _ => false,
    };
    let ref_ok = match reference {
        None | Some(J::Null) => true,
        Some(J::Str(s)) => !s.is_empty(),
        _ => false,
    };
    labels_ok && ref_ok
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Whether a report's `labels` hold ``label``.
pub fn has_label(event: &Event, label: &str) -> bool {
    match event.field(LABELS) {
        Some(J::Arr(labels)) => labels.iter().any(|l| matches!(l, J::Str(s) if s == label)),
        _ => false,
    }
}

fn parse_ts(v: &J) -> Option<i64> {
    match v {
        J::Num(crate::num::Num::Int(i)) => {
            ((0..=MAX_TS_MS).contains(i) && !EPOCH_SECONDS.contains(i)).then_some(*i)
        }
        J::Num(crate::num::Num::Float(x)) => {
            let seconds = *x >= EPOCH_SECONDS.start as f64 && *x < EPOCH_SECONDS.end as f64;
            (*x >= 0.0 && *x <= MAX_TS_MS as f64 && !seconds).then(|| x.trunc() as i64)
        }
        J::Str(s) => rfc3339_ms(s.as_bytes()),
        _ => None,
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |acc, d| acc * 10 + (d - b'0') as i64))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff](Z|±HH:MM)` → epoch ms (floored), or None for
/// anything else (left to Python's `datetime.fromisoformat`).
fn rfc3339_ms(b: &[u8]) -> Option<i64> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0i64;
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n != 3 && n != 6 {
            return None;
        }
        micros = digits(&rest[1..1 + n])? * if n == 3 { 1000 } else { 1 };
        rest = &rest[1 + n..];
    }
    let offset_min = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let micros_total =
        ((days * 24 + hour) * 60 + minute - offset_min) * 60_000_000 + second * 1_000_000 + micros;
    let ms = micros_total.div_euclid(1000);
    (0..=MAX_TS_MS).contains(&ms).then_some(ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_ms(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms(b"2026-01-05T08:00:00.250Z"),
            Some(1_767_600_000_250)
        );
        assert_eq!(
            rfc3339_ms(b"2026-01-05T09:00:00+01:00"),
            Some(1_767_600_000_000)
        );
        assert_eq!(rfc3339_ms(b"2026-02-30T09:00:00Z"), None);
        assert_eq!(rfc3339_ms(b"2026-01-05T09:00:00"), None);
        assert_eq!(rfc3339_ms(b"2026-01-05t08:00:00.250z"), Some(1_767_600_000_250));
        assert_eq!(rfc3339_ms(b"2026-01-05T09:00:00+12:60"), None);
    }
}

#[cfg(test)]
mod bench {
    /// `FIREBREAK_DECODE_BENCH=file cargo test --release --lib decode_speed -- --ignored --nocapture`:
    /// the decoder alone over the file's first 200,000 lines (best of 5).
    #[test]
    #[ignore]
    fn decode_speed() {
        let path = std::env::var("FIREBREAK_DECODE_BENCH").expect("FIREBREAK_DECODE_BENCH=file");
        let text = std::fs::read(path).unwrap();
        let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).take(200_000).collect();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let began = std::time::Instant::now();
            let mut n = 0usize;
            for line in &lines {
                n += super::decode(line, None).map(|e| e.data.0.len()).unwrap_or(0);
            }
            best = best.min(began.elapsed().as_secs_f64());
            assert!(n > 0);
        }
        println!("decode: {:.0} ns per line", best * 1e9 / lines.len() as f64);
    }
}
