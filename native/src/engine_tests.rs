//! The engine without Python (`cargo test --lib --no-default-features`): a host of the test's
//! own — a lifecycle that opens on the first step that holds and closes on the first that does
//! not — so that aggregation, scheduling, evaluation and snapshots are tested by cargo alone.

use crate::engine::{Engine, Host, Rec, Status, Step, Text};
use crate::json::J;
use crate::host::{Calls, Stepped};
use crate::value::{KeyPart, Path};

const PLAN: &str = r#"{"plan_version": 5, "rules": [{"name": "many_hallucinations", "path": "t.rules", "line": 1, "metric": {"func": "count", "accumulates": "flagged", "quantile": null, "rate": false, "additive": true, "arg": ["flags", "hallucination"], "source": "inference", "label": null}, "window": {"window_ms": 60000, "baseline_ms": 0, "warmup_ms": 0, "slices_every_ms": 0, "step_ms": 5000}, "condition": {"op": ">", "reference": "absolute", "threshold": 2.0, "factor": null, "population": null, "population_fallback": false, "prior": null, "trim": 0.0}, "by": [["model"]], "where": null, "scope": ["service"], "options": {"for_ms": 0, "min_events": 20, "needs_sample": false, "min_flagged": 0, "confidence": null, "alpha": 1.0, "keeps_squares": false, "reopen_within_ms": 3600000}, "actions": {"severity": 3, "category": "hallucination", "escalations": [], "contains": [], "notify": []}}]}"#;

/// Handles are strings: a group's values `model=a`, a lifecycle `firing since T`, a
/// record `open|close rule group at value evidence-count`.
struct TestHost;

impl Text for TestHost {
    fn py_str(&self, value: &J) -> String {
        format!("{:?}", value.to_value())
    }
}

impl Host for TestHost {
    type Obj = String;
    type Error = String;
    fn with<R>(&self, f: impl FnOnce(&dyn Calls<String, String>) -> R) -> R {
        f(self)
    }
}

impl Calls<String, String> for TestHost {
    fn group_values(&self, names: &[Path], parts: &[KeyPart]) -> Result<String, String> {
        Ok(names
            .iter()
            .zip(parts)
            .map(|(n, p)| format!("{}={}", n.join("."), p.to_json()))
            .collect::<Vec<_>>()
            .join(","))
    }
    fn step(&self, step: Step<'_, String>, records: &mut Vec<String>) -> Result<Stepped<String>, String> {
        let value = step.value.map(|v| v.f()).unwrap_or(f64::NAN);
        let (status, life) = match (step.life, step.holds) {
            (None, true) => {
                let n = step.evidence.len();
                records.push(format!("open {} {} {} {} {}", step.rule, step.group, step.at, value, n));
                (Status::Firing, format!("firing since {}", step.at))
            }
            (Some(life), true) => (Status::Firing, life.clone()),
            (Some(_), false) => {
                records.push(format!("close {} {} {} {}", step.rule, step.group, step.at, value));
                (Status::Inactive, String::new())
            }
            (None, false) => (Status::Inactive, String::new()),
        };
        let opened = step.life.is_none() && status == Status::Firing;
        Ok(Stepped { status, opened, frozen_baseline: None, life, ended: None })
    }
    fn p_value_two(&self, _: usize, _: i64, _: i64, _: i64, _: f64) -> Result<f64, String> {
        Err("no rule here asks for a p-value".into())
    }
    fn p_value(&self, _: usize, _: i64, _: i64, _: f64) -> Result<f64, String> {
        Err("no rule here asks for a p-value".into())
    }
    fn p_value_mean(&self, _: usize, _: i64, _: i128, _: i128, _: f64) -> Result<f64, String> {
        Err("no rule here asks for a p-value".into())
    }
    fn life_state(&self, life: &String) -> Result<(Status, Option<f64>), String> {
        Ok((if life.starts_with("firing") { Status::Firing } else { Status::Inactive }, None))
    }
    fn share(&self, obj: &String) -> String {
        obj.clone()
    }
}

/// An inference event at ``second`` (after 2026-01-05T08:00:00Z) on ``model``.
fn line(id: usize, second: u32, model: &str, hallucination: bool) -> String {
    format!(
        r#"{{"event_id":"ev-{id}","ts":"2026-01-05T08:{:02}:{:02}.000Z","type":"inference","service":"s","model":"{model}","latency_ms":10,"flags":{{"hallucination":{hallucination}}}}}"#,
        second / 60,
        second % 60
    )
}

fn events() -> Vec<String> {
    let mut lines = Vec::new();
    // model a: three hallucinations in 20 s (over 2 in a minute: fires); model b: two
    for (i, s) in [0u32, 10, 20].into_iter().enumerate() {
        lines.push(line(i, s, "a", true));
    }
    lines.push(line(3, 25, "b", true));
    lines.push(line(4, 30, "b", true));
    // clean events moving time on, past the window of the hallucinations
    for (i, s) in (40..200).step_by(10).enumerate() {
        lines.push(line(10 + i, s, if i % 2 == 0 { "a" } else { "b" }, false));
    }
    lines
}

fn engine() -> Engine<String> {
    let plans = crate::plan::parse_plans(PLAN.as_bytes()).unwrap();
    Engine::new(plans, 0)
}

fn feed(engine: &mut Engine<String>, lines: &[String], out: &mut Vec<Rec<String>>) {
    for raw in lines {
        let event = crate::event::decode(raw.as_bytes(), None).expect("an event");
        assert!(engine.process(&event, &TestHost, out, None).unwrap());
    }
}

fn texts(out: &[Rec<String>]) -> Vec<String> {
    out.iter().map(|r| r.3.clone()).collect()
}

const T0: i64 = 1_767_600_000_000; // 2026-01-05T08:00:00Z

#[test]
fn a_group_over_its_limit_opens_and_closes_through_the_host() {
    let mut engine = engine();
    let mut out = Vec::new();
    feed(&mut engine, &events(), &mut out);
    engine.finish(&TestHost, &mut out).unwrap();
    // a's third hallucination (at 20 s) is counted at the step after it (25 s); the
    // window of one minute lets the first go at 65 s: two left, no longer over 2
    assert_eq!(
        texts(&out),
        vec![
            format!("open 0 model=\"a\" {} 3 3", T0 + 25_000),
            format!("close 0 model=\"a\" {} 2", T0 + 65_000),
        ]
    );
    assert_eq!(engine.opened.get("many_hallucinations"), Some(&1));
    assert_eq!(engine.stats().get("events"), Some(&(events().len() as i64)));
}

#[test]
fn a_snapshot_restored_gives_the_records_of_a_run_without_one() {
    let lines = events();
    let mut whole = engine();
    let mut expected = Vec::new();
    feed(&mut whole, &lines, &mut expected);
    whole.finish(&TestHost, &mut expected).unwrap();
    // cut while model a is firing (after the event at 40 s)
    let cut = 6;
    let mut first = engine();
    let mut out = Vec::new();
    feed(&mut first, &lines[..cut], &mut out);
    assert_eq!(first.rules[0].active.len(), 1, "a is firing at the cut");
    let (json, lives) = crate::snapshot::write(&first, &mut |life: &String| life.clone());
    assert_eq!(lives, vec![format!("firing since {}", T0 + 25_000)]);
    let mut second = engine();
    crate::snapshot::read(&mut second, &json, lives, &TestHost).unwrap();
    feed(&mut second, &lines[cut..], &mut out);
    second.finish(&TestHost, &mut out).unwrap();
    assert_eq!(texts(&out), texts(&expected));
    assert_eq!(crate::snapshot::write(&second, &mut |l: &String| l.clone()).0, crate::snapshot::write(&whole, &mut |l: &String| l.clone()).0);
}
