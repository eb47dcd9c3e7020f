//! JSON values as the Python core sees them: numbers that remember whether they were
//! integers, group-key parts, paths, and the text Python's `str()` gives a value.

use crate::event::Event;
use crate::json::J;
pub use crate::num::Num;
use serde_json::Value;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// A JSON number that is not a boolean (Python's `isinstance(v, int | float)` on decoded JSON).
pub fn number(v: &J) -> Option<Num> {
    match v {
        J::Num(n) => Some(*n),
        _ => None,
    }
}

/// The same for serde_json values (plans, snapshots).
pub fn number_value(v: &Value) -> Option<Num> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(Num::Int(i))
            } else if n.is_u64() {
                Some(Num::Float(n.as_f64().unwrap_or(0.0))) // beyond i64: rare; kept as a float
            } else {
                n.as_f64().map(Num::Float)
            }
        }
        _ => None,
    }
}

/// A field path of a rule (`compiler.get_path`), with the slot of its first part when that is
/// a top-level field of the event schema (`event::FIELDS`): found without scanning the event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    parts: Vec<String>,
    slot: Option<u8>,
}

impl Path {
    /// None for an empty path.
    pub fn new(parts: Vec<String>) -> Option<Path> {
        let slot = crate::event::slot_of(parts.first()?);
        Some(Path { parts, slot })
    }
}

impl std::ops::Deref for Path {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.parts
    }
}

/// `compiler.get_path`: the value at a dotted path, None when a step is missing or not an object.
pub fn get<'b, 'a>(event: &'b Event<'a>, path: &Path) -> Option<&'b J<'a>> {
    let mut value = match path.slot {
        Some(slot) => event.field(slot)?,
        None => event.data.get(&path.parts[0])?,
    };
    for part in &path.parts[1..] {
        match value {
            J::Obj(inner) => value = inner.get(part)?,
            _ => return None,
        }
    }
    if value.is_null() {
        None
    } else {
        Some(value)
    }
}

/// One part of a group key (`engine._key_part`): None, a tagged boolean, a number, or text
/// (strings, and Python's `str()` of lists and objects).
#[derive(Clone, Debug)]
pub enum KeyPart {
    None,
    Bool(bool),
    Num(Num),
    Str(String),
}

impl PartialEq for KeyPart {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (KeyPart::None, KeyPart::None) => true,
            (KeyPart::Bool(a), KeyPart::Bool(b)) => a == b,
            (KeyPart::Num(a), KeyPart::Num(b)) => a.cmp(*b) == Ordering::Equal, // 1 == 1.0 in Python
            (KeyPart::Str(a), KeyPart::Str(b)) => a == b,
            _ => false,
        }
    }
}
impl Eq for KeyPart {}

impl Hash for KeyPart {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            KeyPart::None => 0u8.hash(state),
            KeyPart::Bool(b) => {
                1u8.hash(state);
                b.hash(state)
            }
            KeyPart::Num(n) => {
                2u8.hash(state);
                let x = n.f();
                if x == 0.0 {
                    0u64.hash(state) // 0 and -0.0 alike
                } else {
                    x.to_bits().hash(state)
                }
            }
            KeyPart::Str(s) => {
                3u8.hash(state);
                s.hash(state)
            }
        }
    }
}

impl KeyPart {
    /// The (type rank, str) pair groups are sorted by (`engine._type_rank`, `str(part)`).
    pub fn order(&self) -> (u8, String) {
        match self {
            KeyPart::None => (0, "None".to_string()),
            KeyPart::Bool(b) => (
                1,
                format!("('__bool__', {})", if *b { "True" } else { "False" }),
            ),
            KeyPart::Num(n) => (2, num_str(*n)),
            KeyPart::Str(s) => (3, s.clone()),
        }
    }
    /// The key part as JSON, as the Python core's snapshot writes it (booleans tagged).
    pub fn to_json(&self) -> Value {
        match self {
            KeyPart::None => Value::Null,
            KeyPart::Bool(b) => Value::Array(vec![Value::from("__bool__"), Value::from(*b)]),
            KeyPart::Num(n) => n.to_json(),
            KeyPart::Str(s) => Value::from(s.clone()),
        }
    }
    pub fn from_json(v: &Value) -> Option<KeyPart> {
        Some(match v {
            Value::Null => KeyPart::None,
            Value::String(s) => KeyPart::Str(s.clone()),
            Value::Number(_) => KeyPart::Num(number_value(v)?),
            Value::Array(items) if items.len() == 2 && items[0] == "__bool__" => {
                KeyPart::Bool(items[1].as_bool()?)
            }
            _ => return None,
        })
    }
}

/// Python's `str()` of a number.
pub fn num_str(n: Num) -> String {
    match n {
        Num::Int(i) => i.to_string(),
        Num::Float(x) => float_repr(x),
    }
}

/// Python's `repr(float)`: the shortest round-trip digits, in exponent form when the
/// exponent is below -4 or at least 16 (`1e-05`, `1e+16`), else with a `.0` if whole.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let sci = format!("{:e}", x.abs()); // shortest digits: d.ddde±x
    let (mantissa, exp) = sci.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if x < 0.0 { "-" } else { "" };
    if !(-4..16).contains(&exp) {
        let mut m = digits[..1].to_string();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        let es = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{m}e{es}{:02}", exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    let text = if point <= 0 {
        format!("0.{}{}", "0".repeat((-point) as usize), digits)
    } else if (point as usize) >= digits.len() {
        format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    format!("{sign}{text}")
}

/// `stable_hash(str(value))` for a string: CRC-32 of the UTF-8, twice, with two seeds.
pub fn stable_hash(text: &str) -> u64 {
    let data = text.as_bytes();
    let mut a = crc32fast::Hasher::new();
    a.update(data);
    let mut b = crc32fast::Hasher::new_with_initial(0x9E37_79B9);
    b.update(data);
    ((a.finalize() as u64) << 32) | (b.finalize() as u64)
}

/// Python truthiness of a decoded JSON value (`bool(value)`); None is false.
pub fn truthy(v: Option<&J>) -> bool {
    match v {
        None | Some(J::Null) => false,
        Some(J::Bool(b)) => *b,
        Some(J::Num(n)) => n.f() != 0.0,
        Some(J::Str(s)) => !s.is_empty(),
        Some(J::Arr(a)) => !a.is_empty(),
        Some(J::Obj(o)) => !o.is_empty(),
    }
}

/// A literal of a `where` clause: text, number or boolean.
#[derive(Clone, Debug)]
pub enum Literal {
    Str(String),
    Num(Num),
    Bool(bool),
}

impl Literal {
    pub fn from_json(v: &Value) -> Option<Literal> {
        Some(match v {
            Value::String(s) => Literal::Str(s.clone()),
            Value::Bool(b) => Literal::Bool(*b),
            Value::Number(_) => Literal::Num(number_value(v)?),
            _ => return None,
        })
    }
    /// `compiler._same(actual, literal)`: booleans apart from numbers; numbers by value.
    pub fn same(&self, actual: Option<&J>) -> bool {
        match (self, actual) {
            (Literal::Bool(b), Some(J::Bool(a))) => a == b,
            (Literal::Num(n), Some(J::Num(a))) => a.cmp(*n) == Ordering::Equal,
            (Literal::Str(s), Some(J::Str(a))) => a == s,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn float_repr_is_pythons() {
        for (x, text) in [
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.1, "0.1"),
            (5.0, "5.0"),
            (-2.5, "-2.5"),
            (123456.789, "123456.789"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
        ] {
            assert_eq!(float_repr(x), text);
        }
    }
}
