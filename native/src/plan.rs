//! The rule plan: what the DSL compiler emits once (engine/firebreak/dsl/plan.py, plain JSON,
//! versioned), deserialized with serde. `RuleDoc` mirrors the JSON; `Plan` is what the engine
//! runs (paths resolved, the flag split from the field, the memory span computed).

use crate::event::Event;
use crate::value::{get, number, number_value, truthy, Literal, Path};
use serde::Deserialize;
use serde_json::Value;

/// The `plan_version` this engine reads (engine/firebreak/dsl/plan.py `PLAN_VERSION`).
pub const PLAN_VERSION: i64 = 5;

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

    fn from_doc(doc: WhereDoc) -> Result<Expr, String> {
        let literal =
            |v: &Value| Literal::from_json(v).ok_or_else(|| format!("unsupported literal {v}"));
        let sub = |e: Box<WhereDoc>| -> Result<Box<Expr>, String> { Ok(Box::new(Expr::from_doc(*e)?)) };
        Ok(match doc {
            WhereDoc::And(l, r) => Expr::And(sub(l)?, sub(r)?),
            WhereDoc::Or(l, r) => Expr::Or(sub(l)?, sub(r)?),
            WhereDoc::Not(e) => Expr::Not(sub(e)?),
            WhereDoc::Truthy(p) => Expr::Truthy(path_of(p)?),
            WhereDoc::In(p, values, negated) => Expr::In(
                path_of(p)?,
                values.iter().map(literal).collect::<Result<Vec<_>, _>>()?,
                negated,
            ),
            WhereDoc::Compare(op, p, value) => match op.as_str() {
                "==" => Expr::Eq(path_of(p)?, literal(&value)?),
                "!=" => Expr::Ne(path_of(p)?, literal(&value)?),
                _ => {
                    let n = number_value(&value).ok_or("an ordered comparison needs a number")?;
                    Expr::Ordered(path_of(p)?, Op::parse(&op)?, n.f())
                }
            },
        })
    }
}

fn path_of(parts: Vec<String>) -> Result<Path, String> {
    Path::new(parts).ok_or_else(|| "an empty path".into())
}

// ---- the plan as the compiler writes it (serde) ------------------------------------------

/// `{"plan_version": N, "rules": [...]}`.
#[derive(Deserialize)]
struct PlanDoc {
    plan_version: i64,
    rules: Vec<RuleDoc>,
}

/// Only the version, read first: a plan of another version is refused by its number, before
/// its layout is looked at.
#[derive(Deserialize)]
struct VersionDoc {
    plan_version: Option<i64>,
}

/// One rule (dsl/plan.py `RulePlan`). Fields the engine does not read (`actions`, the
/// options of the lifecycle) are in the document and ignored here.
#[derive(Deserialize)]
struct RuleDoc {
    name: String,
    metric: MetricDoc,
    window: WindowDoc,
    condition: ConditionDoc,
    by: Vec<Vec<String>>,
    #[serde(rename = "where")]
    where_: Option<WhereDoc>,
    options: OptionsDoc,
    /// The case dimensions its group lacks (`CompiledRule.scope_dimensions`).
    #[serde(default)]
    scope: Vec<String>,
}

#[derive(Deserialize)]
struct MetricDoc {
    func: FuncName,
    accumulates: Accumulates,
    quantile: Option<f64>,
    arg: Option<Vec<String>>,
    source: Source,
    label: Option<String>,
}

#[derive(Clone, Copy, Deserialize, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
enum FuncName {
    Rate,
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Distinct,
    P50,
    P90,
    P95,
    P99,
}

/// What a bucket accumulates (dsl/metrics.py `Accumulates`).
#[derive(Clone, Copy, Deserialize, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
enum Accumulates {
    Events,
    Flagged,
    Distinct,
    Values,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Source {
    Inference,
    Report,
}

#[derive(Deserialize)]
struct WindowDoc {
    window_ms: i64,
    baseline_ms: i64,
    warmup_ms: i64,
    slices_every_ms: i64,
    step_ms: i64,
}

#[derive(Deserialize)]
struct ConditionDoc {
    op: String,
    threshold: Option<f64>,
    factor: Option<f64>,
    population: Option<f64>,
    population_fallback: bool,
    prior: Option<f64>,
    trim: f64,
}

#[derive(Deserialize)]
struct OptionsDoc {
    min_events: i64,
    needs_sample: bool,
    min_flagged: i64,
    confidence: Option<f64>,
    alpha: f64,
    keeps_squares: bool,
}

/// A `where` expression, serde's externally tagged form: `{"and": [A, B]}`,
/// `{"compare": [OP, PATH, VALUE]}`, ...
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum WhereDoc {
    And(Box<WhereDoc>, Box<WhereDoc>),
    Or(Box<WhereDoc>, Box<WhereDoc>),
    Not(Box<WhereDoc>),
    Truthy(Vec<String>),
    In(Vec<String>, Vec<Value>, bool),
    Compare(String, Vec<String>, Value),
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
    /// `baseline(S, warmup D)`: while S is incomplete, the group's own history once it is D
    /// long (0: none). docs/detection.md#cold-start-the-reference-fallback-chain
    pub warmup_ms: i64,
    /// `baseline(S, population)`: then the rest of the rule's groups (`Kx population`'s rate).
    pub population_fallback: bool,
    /// `baseline(S, prior P)`: the reference before any own history serves.
    pub prior: Option<f64>,
    /// `baseline(S, median | trimmed P% | seasonal D)`: the reference read from window-length
    /// slices starting this often back from the window (0: the span pooled).
    /// docs/detection.md#robust-and-seasonal-references
    pub slices_every_ms: i64,
    /// The slices' share cut from each end before their mean (0.5: the median).
    pub trim: f64,
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
    /// `avg(FIELD) … with C% confidence`: buckets keep their values' sum of squares, and the
    /// window's mean is tested by Student's t (the host's `p_value_mean`).
    pub keeps_squares: bool,
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
    fn from_doc(doc: RuleDoc) -> Result<Plan, String> {
        let m = doc.metric;
        let name = doc.name;
        let func = match m.func {
            FuncName::Rate => Func::Rate,
            FuncName::Count => Func::Count,
            FuncName::Sum => Func::Sum,
            FuncName::Avg => Func::Avg,
            FuncName::Min => Func::Min,
            FuncName::Max => Func::Max,
            FuncName::Distinct => Func::Distinct,
            FuncName::P50 => Func::Quantile(0.50),
            FuncName::P90 => Func::Quantile(0.90),
            FuncName::P95 => Func::Quantile(0.95),
            FuncName::P99 => Func::Quantile(0.99),
        };
        // The kind's parts must be those of the function (dsl/metrics.py kind_of): a plan
        // that says otherwise was not written by the compiler this engine implements.
        let expected = match func {
            Func::Rate => Accumulates::Flagged,
            Func::Count if m.arg.is_some() => Accumulates::Flagged,
            Func::Count => Accumulates::Events,
            Func::Distinct => Accumulates::Distinct,
            _ => Accumulates::Values,
        };
        let quantile = match func {
            Func::Quantile(q) => Some(q),
            _ => None,
        };
        if m.accumulates != expected || m.quantile != quantile {
            return Err(format!(
                "rule {name}: metric {:?} accumulating {:?} (quantile {:?}) is not a kind this engine runs",
                m.func, m.accumulates, m.quantile
            ));
        }
        let arg = m.arg.map(path_of).transpose()?;
        let flag = match func {
            Func::Rate | Func::Count => arg.as_ref().map(|p| p[p.len() - 1].clone()),
            _ => None,
        };
        if !matches!(func, Func::Rate | Func::Count) && arg.is_none() {
            return Err(format!("rule {name}: {:?} needs a field", m.func));
        }
        let by = doc.by.into_iter().map(path_of).collect::<Result<Vec<_>, _>>()?;
        let where_ = doc.where_.map(Expr::from_doc).transpose()?;
        let (window_ms, baseline_ms) = (doc.window.window_ms, doc.window.baseline_ms);
        let source = match m.source {
            Source::Inference => crate::event::Kind::Inference,
            Source::Report => crate::event::Kind::Report,
        };
        let c = doc.condition;
        let o = doc.options;
        let every = doc.window.slices_every_ms;
        if every != 0 && (every < window_ms || every > baseline_ms.max(window_ms)) || !(0.0..=0.5).contains(&c.trim) {
            return Err(format!(
                "rule {name}: reference slices every {every} ms of a {window_ms} ms window, trim {}: not a plan the compiler writes",
                c.trim
            ));
        }
        if o.keeps_squares && !(func == Func::Avg && o.confidence.is_some()) {
            return Err(format!(
                "rule {name}: squares kept for {:?} without a mean's test: not a plan the compiler writes",
                m.func
            ));
        }
        let scope_names = doc.scope;
        let scope = scope_names
            .iter()
            .map(|d| Path::new(vec![d.clone()]).ok_or("plan: an empty scope dimension"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            func,
            arg: if flag.is_some() { None } else { arg },
            flag,
            op: Op::parse(&c.op)?,
            threshold: c.threshold,
            factor: c.factor,
            population: c.population,
            population_fallback: c.population_fallback,
            prior: c.prior,
            window_ms,
            baseline_ms,
            warmup_ms: doc.window.warmup_ms,
            slices_every_ms: doc.window.slices_every_ms,
            trim: c.trim,
            step_ms: doc.window.step_ms,
            memory_ms: window_ms + baseline_ms.max(window_ms),
            by,
            by_id: 0,
            where_,
            min_events: o.min_events,
            needs_sample: o.needs_sample,
            min_flagged: o.min_flagged,
            confidence: o.confidence.is_some(),
            alpha: o.alpha,
            keeps_squares: o.keeps_squares,
            source,
            label: m.label,
            name,
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

/// The rules of a compiled plan (what engine/firebreak/dsl/plan.py `compile_plan` writes,
/// as JSON), or why not: a plan of another `plan_version` is refused by its number.
pub fn parse_plans(raw: &[u8]) -> Result<Vec<Plan>, String> {
    let version: VersionDoc = from_slice(raw)
        .map_err(|e| {
        format!("the rule plan is not an object {{\"plan_version\": {PLAN_VERSION}, \"rules\": [...]}} (engine/firebreak/dsl/plan.py): {e}")
    })?;
    match version.plan_version {
        Some(PLAN_VERSION) => {}
        Some(other) => {
            return Err(format!(
                "rule plan version {other}: this native engine reads version {PLAN_VERSION} \
                 (rebuild it with the Python package: pip install -e .)"
            ))
        }
        None => return Err("the rule plan has no plan_version".into()),
    }
    let doc: PlanDoc =
        from_slice(raw).map_err(|e| format!("rule plan version {PLAN_VERSION}: {e}"))?;
    debug_assert_eq!(doc.plan_version, PLAN_VERSION);
    doc.rules.into_iter().map(Plan::from_doc).collect()
}

/// `serde_json::from_slice` without the nesting limit: a long `where` nests deep (as the
/// rule's parse tree does).
fn from_slice<'a, T: Deserialize<'a>>(raw: &'a [u8]) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
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
