//! Numbers as Python holds them (an int stays an int).

use serde_json::Value;
use std::cmp::Ordering;

/// A number as Python holds it: an int stays an int (records and snapshots show `5`, not `5.0`).
#[derive(Clone, Copy, Debug)]
pub enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(x) => x,
        }
    }
    pub fn neg(self) -> Num {
        match self {
            Num::Int(i) => Num::Int(-i),
            Num::Float(x) => Num::Float(-x),
        }
    }
    /// A group-key number in its one form (`engine._key_part`): a whole float that fits an
    /// int is the int, so `1` and `1.0` are one group, shown and sharded alike whichever came first.
    pub fn canonical(self) -> Num {
        match self {
            Num::Float(x) if x.fract() == 0.0 && (-9.223_372_036_854_775_808e18..9.223_372_036_854_775_808e18).contains(&x) => {
                Num::Int(x as i64)
            }
            n => n,
        }
    }
    /// Python's comparison of two numbers (exact between ints).
    pub fn cmp(self, other: Num) -> Ordering {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            _ => self.f().partial_cmp(&other.f()).unwrap_or(Ordering::Equal),
        }
    }
    pub fn to_json(self) -> Value {
        match self {
            Num::Int(i) => Value::from(i),
            Num::Float(x) => Value::from(x),
        }
    }
}
