//! Events decoded without copying: strings borrow from the line (unless escaped), objects
//! are short vectors of (key, value) looked up from the end (a repeated key: the last
//! wins, as in orjson).

use crate::value::Num;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

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

struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<J<'de>, E> {
        Ok(J::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<J<'de>, E> {
        Ok(J::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<J<'de>, E> {
        Ok(J::Num(Num::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<J<'de>, E> {
        Ok(J::Num(
            i64::try_from(v)
                .map(Num::Int)
                .unwrap_or(Num::Float(v as f64)),
        ))
    }
    fn visit_f64<E>(self, v: f64) -> Result<J<'de>, E> {
        Ok(J::Num(Num::Float(v)))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<J<'de>, E> {
        Ok(J::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<J<'de>, E> {
        Ok(J::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<J<'de>, E> {
        Ok(J::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<J<'de>>()? {
            items.push(item);
        }
        Ok(J::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J<'de>, A::Error> {
        let mut items = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            items.push((key.0, map.next_value::<J<'de>>()?));
        }
        Ok(J::Obj(Obj(items)))
    }
}

impl<'de> de::Deserialize<'de> for J<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J<'de>, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// One JSON document, borrowing from ``raw``; None when serde_json does not accept it.
pub fn parse(raw: &[u8]) -> Option<J<'_>> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    de.disable_recursion_limit();
    let value = de::Deserialize::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}
