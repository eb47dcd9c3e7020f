//! The rule plan: what engine/firebreak/native/plan.py makes of a CompiledRule (plain JSON, versioned).

use crate::event::Event;
use crate::value::{get, number, number_value, truthy, Literal, Path};
use serde_json::Value;

pub const PLAN_VERSION: i64 = 1;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Func {
    Rate,
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Distinct,
    Quantile(f64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    pub fn parse(text: &str) -> Result<Op, String> {
        Ok(match text {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            _ => return Err(format!("unknown comparison {text}")),
        })
    }
    pub fn compare(self, a: f64, b: f64) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Truthy(Path),
    In(Path, Vec<Literal>, bool),
    Eq(Path, Literal),
    Ne(Path, Literal),
    Ordered(Path, Op, f64),
}

impl Expr {
    pub fn eval(&self, data: &Event) -> bool {
        match self {
            Expr::And(l, r) => l.eval(data) && r.eval(data),
            Expr::Or(l, r) => l.eval(data) || r.eval(data),
            Expr::Not(e) => !e.eval(data),
            Expr::Truthy(p) => truthy(get(data, p)),
            Expr::In(p, values, negated) => {
                let actual = get(data, p);
                values.iter().any(|v| v.same(actual)) != *negated
            }
            Expr::Eq(p, v) => v.same(get(data, p)),
            Expr::Ne(p, v) => !v.same(get(data, p)),
            Expr::Ordered(p, op, value) => match get(data, p).and_then(number) {
                Some(actual) => op.compare(actual.f(), *value),
                None => false,
            },
        }
    }

    fn parse(v: &Value) -> Result<Expr, String> {
        let items = v.as_array().ok_or("an expression is a list")?;
        let tag = items
            .first()
            .and_then(Value::as_str)
            .ok_or("an expression starts with its kind")?;
        let path =
            |i: usize| -> Result<Path, String> { path_of(items.get(i).ok_or("missing path")?) };
        let sub = |i: usize| -> Result<Box<Expr>, String> {
            Ok(Box::new(Expr::parse(items.get(i).ok_or("missing")?)?))
        };
        let literal =
            |v: &Value| Literal::from_json(v).ok_or_else(|| format!("unsupported literal {v}"));
        Ok(match tag {
            "and" => Expr::And(sub(1)?, sub(2)?),
            "or" => Expr::Or(sub(1)?, sub(2)?),
            "not" => Expr::Not(sub(1)?),
            "truthy" => Expr::Truthy(path(1)?),
            "in" => {
                let values = items.get(2).and_then(Value::as_array).ok_or("in: values")?;
                let values = values.iter().map(literal).collect::<Result<Vec<_>, _>>()?;
                Expr::In(
                    path(1)?,
                    values,
                    items.get(3).and_then(Value::as_bool).unwrap_or(false),
                )
            }
            "compare" => {
                let op = items.get(1).and_then(Value::as_str).ok_or("compare: op")?;
                let value = items.get(3).ok_or("compare: value")?;
                match op {
                    "==" => Expr::Eq(path(2)?, literal(value)?),
                    "!=" => Expr::Ne(path(2)?, literal(value)?),
                    _ => {
                        let n =
                            number_value(value).ok_or("an ordered comparison needs a number")?;
                        Expr::Ordered(path(2)?, Op::parse(op)?, n.f())
                    }
                }
            }
            other => return Err(format!("unsupported expression {other}")),
        })
    }
}

fn path_of(v: &Value) -> Result<Path, String> {
    let parts = v.as_array().ok_or("a path is a list")?;
    let parts: Vec<String> = parts
        .iter()
        .map(|p| p.as_str().map(str::to_string).ok_or("a path part is text"))
        .collect::<Result<_, _>>()?;
    Path::new(parts).ok_or_else(|| "an empty path".into())
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub func: Func,
    pub arg: Option<Path>,    // the field for numeric functions and distinct
    pub flag: Option<String>, // rate / count(FLAG)
    pub op: Op,
    pub threshold: Option<f64>,
    pub factor: Option<f64>,
    pub population: Option<f64>,
    pub window_ms: i64,
    pub baseline_ms: i64,
    pub step_ms: i64,
    pub memory_ms: i64,
    pub by: Vec<Path>,
    pub by_id: usize, // rules with the same `by` share one key per event
    pub where_: Option<Expr>,
    pub min_events: i64,
    pub needs_sample: bool,
    pub min_flagged: i64,
    pub confidence: bool,
    pub alpha: f64,
    /// The event type the rule counts (`reports(LABEL)` counts `report` events).
    pub source: crate::event::Kind,
    /// reports(LABEL): only reports whose `labels` hold this one.
    pub label: Option<String>,
    /// The case dimensions its group lacks (`CompiledRule.scope_dimensions`): its evidence
    /// keeps its events' string values of them, for the records' `evidence_scope`.
    pub scope: Vec<Path>,
    /// Their names, as the snapshot writes them.
    pub scope_names: Vec<String>,
}

impl Plan {
    pub fn parse(v: &Value) -> Result<Plan, String> {
        let o = v.as_object().ok_or("a plan is an object")?;
        let version = o.get("version").and_then(Value::as_i64).unwrap_or(0);
        if version != PLAN_VERSION {
            return Err(format!(
                "plan version {version}, this engine reads {PLAN_VERSION}"
            ));
        }
        let s = |k: &str| {
            o.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or(format!("plan: {k}"))
        };
        let i = |k: &str| o.get(k).and_then(Value::as_i64).ok_or(format!("plan: {k}"));
        let f = |k: &str| o.get(k).and_then(Value::as_f64);
        let func_name = s("func")?;
        let func = match func_name.as_str() {
            "rate" => Func::Rate,
            "count" => Func::Count,
            "sum" => Func::Sum,
            "avg" => Func::Avg,
            "min" => Func::Min,
            "max" => Func::Max,
            "distinct" => Func::Distinct,
            "p50" => Func::Quantile(0.50),
            "p90" => Func::Quantile(0.90),
            "p95" => Func::Quantile(0.95),
            "p99" => Func::Quantile(0.99),
            other => return Err(format!("unsupported metric function {other}")),
        };
        let arg = match o.get("arg") {
            Some(Value::Null) | None => None,
            Some(p) => Some(path_of(p)?),
        };
        let flag = match func {
            Func::Rate | Func::Count => arg.as_ref().map(|p| p[p.len() - 1].clone()),
            _ => None,
        };
        if !matches!(func, Func::Rate | Func::Count) && arg.is_none() {
            return Err(format!("{func_name} needs a field"));
        }
        let by = o.get("by").and_then(Value::as_array).ok_or("plan: by")?;
        let by = by.iter().map(path_of).collect::<Result<Vec<_>, _>>()?;
        let where_ = match o.get("where") {
            Some(Value::Null) | None => None,
            Some(e) => Some(Expr::parse(e)?),
        };
        let window_ms = i("window_ms")?;
        let baseline_ms = i("baseline_ms")?;
        let source = match o.get("source").and_then(Value::as_str) {
            None | Some("inference") => crate::event::Kind::Inference,
            Some("report") => crate::event::Kind::Report,
            Some(other) => return Err(format!("plan: a rule cannot count {other} events")),
        };
        let label = o.get("label").and_then(Value::as_str).map(str::to_string);
        let scope_names: Vec<String> = match o.get("scope") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|d| d.as_str().map(str::to_string).ok_or("plan: scope"))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("plan: scope is a list".into()),
        };
        let scope = scope_names
            .iter()
            .map(|d| Path::new(vec![d.clone()]).ok_or("plan: an empty scope dimension"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            name: s("name")?,
            func,
            arg: if flag.is_some() { None } else { arg },
            flag,
            op: Op::parse(&s("op")?)?,
            threshold: f("threshold"),
            factor: f("factor"),
            population: f("population"),
            window_ms,
            baseline_ms,
            step_ms: i("step_ms")?,
            memory_ms: window_ms + baseline_ms.max(window_ms),
            by,
            by_id: 0,
            where_,
            min_events: i("min_events")?,
            needs_sample: o
                .get("needs_sample")
                .and_then(Value::as_bool)
                .ok_or("plan: needs_sample")?,
            min_flagged: i("min_flagged")?,
            confidence: o.get("confidence").map(|c| !c.is_null()).unwrap_or(false),
            alpha: f("alpha").unwrap_or(1.0),
            source,
            label,
            scope,
            scope_names,
        })
    }

    pub fn numeric(&self) -> bool {
        matches!(
            self.func,
            Func::Sum | Func::Avg | Func::Min | Func::Max | Func::Quantile(_)
        )
    }
}

/// The plans of a JSON list (what engine/firebreak/native/plan.py writes), or why not.
pub fn parse_plans(raw: &[u8]) -> Result<Vec<Plan>, String> {
    let value = crate::event::parse_json(raw).ok_or("plans: not JSON")?;
    let items = value.as_array().ok_or("plans: not a list")?;
    items.iter().map(Plan::parse).collect()
}

/// Number the distinct `by` lists of the plans (rules grouped alike share one key per event):
/// sets each plan's `by_id` and returns how many distinct lists there are.
pub fn assign_by_ids(plans: &mut [Plan]) -> usize {
    let mut by_lists: Vec<Vec<Path>> = Vec::new();
    for plan in plans.iter_mut() {
        plan.by_id = match by_lists.iter().position(|b| *b == plan.by) {
            Some(i) => i,
            None => {
                by_lists.push(plan.by.clone());
                by_lists.len() - 1
            }
        };
    }
    by_lists.len()
}
