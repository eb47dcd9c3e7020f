//! Decode and validate one JSON line as engine/core/events.py `validate_event` does.
//!
//! The native side only ever *accepts* a line: every line it does not accept goes back to
//! the Python decoder, which gives the reason (or, for the rare forms accepted there and
//! not here -- ISO dates other than `YYYY-MM-DDTHH:MM:SS[.fff[fff]](Z|±HH:MM)` --
//! the event, which is then fed with its time). So a bad line's reason is always the
//! Python core's, word for word.

use crate::json::{Obj, J};
use serde_json::Value;

pub const MAX_TS_MS: i64 = 253_402_300_799_999;
const STRING_FIELDS: [&str; 7] = [
    "service",
    "feature",
    "model",
    "model_version",
    "prompt_template",
    "tenant",
    "user",
];
const NUMBER_FIELDS: [&str; 4] = ["latency_ms", "tokens_in", "tokens_out", "cost_usd"];
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
    hot: [u8; 3], // where `event_id`, `user` and `flags` are in `data` (NONE: absent)
}

const NONE: u8 = u8::MAX;

impl<'a> Event<'a> {
    fn new(ts: i64, kind: Kind, data: Obj<'a>) -> Event<'a> {
        let mut hot = [NONE; 3];
        for (i, (key, _)) in data.0.iter().enumerate().take(NONE as usize) {
            let slot = match key.as_ref() {
                "event_id" => 0,
                "user" => 1,
                "flags" => 2,
                _ => continue,
            };
            hot[slot] = i as u8; // a repeated key: the last, as `Obj::get`
        }
        if data.0.len() >= NONE as usize {
            hot = [NONE; 3]; // (not met in practice) look them up
        }
        Event { ts, kind, data, hot }
    }

    #[inline]
    fn hot(&self, slot: usize, name: &str) -> Option<&J<'a>> {
        match self.hot[slot] {
            NONE if self.data.0.len() >= NONE as usize => self.data.get(name),
            NONE => None,
            i => Some(&self.data.0[i as usize].1),
        }
    }

    pub fn id(&self) -> &str {
        self.hot(0, "event_id").and_then(J::as_str).unwrap_or("")
    }

    /// The `user` field (what `data.get("user")` gives).
    pub fn user(&self) -> Option<&J<'a>> {
        self.hot(1, "user")
    }

    /// The `flags` field.
    pub fn flags(&self) -> Option<&J<'a>> {
        self.hot(2, "flags")
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
    match data.get("event_id") {
        Some(J::Str(s)) if !s.is_empty() => {}
        _ => return None,
    }
    let ts = match ts {
        Some(ts) => ts,
        None => parse_ts(data.get("ts")?)?,
    };
    let kind = match data.get("type") {
        None => Kind::Inference,
        Some(J::Str(s)) if s == "inference" => Kind::Inference,
        Some(J::Str(s)) if s == "change" => Kind::Change,
        Some(J::Str(s)) if s == "heartbeat" => Kind::Heartbeat,
        Some(J::Str(s)) if s == "report" => Kind::Report,
        _ => return None,
    };
    for name in STRING_FIELDS {
        match data.get(name) {
            None | Some(J::Null) | Some(J::Str(_)) => {}
            _ => return None,
        }
    }
    for name in NUMBER_FIELDS {
        match data.get(name) {
            None | Some(J::Null) | Some(J::Num(_)) => {}
            _ => return None,
        }
    }
    match data.get("flags") {
        None | Some(J::Null) => {}
        Some(J::Obj(flags)) if flags.values().all(|v| matches!(v, J::Bool(_))) => {}
        _ => return None,
    }
    match data.get("scores") {
        None | Some(J::Null) => {}
        Some(J::Obj(scores)) if scores.values().all(|v| matches!(v, J::Num(_))) => {}
        _ => return None,
    }
    if kind == Kind::Change {
        match data.get("kind") {
            Some(J::Str(k)) if CHANGE_KINDS.contains(&k.as_ref()) => {}
            _ => return None,
        }
    }
    if kind == Kind::Report && !valid_report(&data) {
        return None;
    }
    Some(Event::new(ts, kind, data))
}

/// As events.py `_check_report`: 1 to 16 labels, each a name of up to 64 characters, and a
/// `ref` that is absent, null or a non-empty string.
fn valid_report(data: &Obj) -> bool {
    let labels_ok = match data.get("labels") {
        Some(J::Arr(labels)) if !labels.is_empty() && labels.len() <= 16 => {
            labels.iter().all(|l| match l {
                J::Str(s) => is_label(s),
                _ => false,
            })
        }
        _ => false,
    };
    let ref_ok = match data.get("ref") {
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
pub fn has_label(data: &Obj, label: &str) -> bool {
    match data.get("labels") {
        Some(J::Arr(labels)) => labels.iter().any(|l| matches!(l, J::Str(s) if s == label)),
        _ => false,
    }
}

fn parse_ts(v: &J) -> Option<i64> {
    match v {
        J::Num(crate::value::Num::Int(i)) => (0..=MAX_TS_MS).contains(i).then_some(*i),
        J::Num(crate::value::Num::Float(x)) => {
            (*x >= 0.0 && *x <= MAX_TS_MS as f64).then(|| x.trunc() as i64)
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
        || b[10] != b'T'
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
        [b'Z'] => 0,
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
    }
}
