"""Compiled rules (engine/firebreak/dsl/compiler.py) and the `firebreak check` command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from firebreak.cli import main
from firebreak.dsl import CompiledRule, load_rules, parse_rule
from firebreak.dsl.checker import rule_name
from firebreak.dsl.compiler import (
    BASELINE_SPAN_FACTOR,
    DEFAULT_MIN_EVENTS,
    ContainSpec,
    Escalation,
    compile_expr,
    compile_rule,
    get_path,
    pick_step,
)
from firebreak.dsl.metrics import RATE
from firebreak.records import Severity

FIREBREAK = Path(sys.executable).parent / "firebreak"  # .venv/bin/firebreak under .venv/bin/pytest

S, M, H = 1_000, 60_000, 3_600_000


def compiled(text: str) -> CompiledRule:
    rules, problems = load_rules({"t.rules": text})
    assert problems == []
    (rule,) = rules
    return rule


# ---- evaluation step -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "step"),
    [
        (10 * S, 1 * S),  # no step cuts 10s into ≥10 parts but 1s
        (30 * S, 1 * S),  # 5s would give only 6 parts
        (1 * M, 5 * S),
        (90 * S, 5 * S),
        (5 * M, 30 * S),
        (10 * M, 1 * M),
        (15 * M, 1 * M),
        (30 * M, 1 * M),
        (1 * H, 5 * M),
        (6 * H, 30 * M),
        (24 * H, 1 * H),
        (7 * 24 * H, 1 * H),  # the largest step
        (7 * S, 1 * S),  # fewer than 10 whole seconds: still 1s
        (61 * S, 1 * S),  # only 1s divides 61s
    ],
)
def test_pick_step(window: int, step: int) -> None:
    assert pick_step(window) == step


def test_compiled_step_follows_the_window() -> None:
    assert compiled("count() > 1 over 10m -> sev3").step_ms == 1 * M
    assert compiled("count() > 1 over 1d -> sev3").step_ms == 1 * H


# ---- thresholds and baselines --------------------------------------------------------------------


def test_absolute_threshold() -> None:
    rule = compiled("p95(latency_ms) > 2000 over 5m -> sev3")
    assert (rule.threshold, rule.factor, rule.baseline_ms) == (2000.0, None, 0)
    assert not rule.relative


def test_default_baseline_span_is_six_windows() -> None:
    rule = compiled("rate(hallucination) > 3x baseline over 10m -> sev2")
    assert BASELINE_SPAN_FACTOR == 6
    assert (rule.threshold, rule.factor, rule.window_ms, rule.baseline_ms) == (None, 3.0, 10 * M, 60 * M)
    assert rule.relative


def test_explicit_baseline_span() -> None:
    rule = compiled("avg(scores.quality) < 0.8x baseline(6h) over 30m -> sev3")
    assert (rule.factor, rule.baseline_ms) == (0.8, 6 * H)


def test_baseline_span_is_rounded_up_to_whole_steps() -> None:
    rule = compiled("count() > 2x baseline(3601s) over 1h -> sev3")
    assert rule.step_ms == 5 * M
    assert rule.baseline_ms == 13 * 5 * M


def test_baseline_span_may_equal_the_window() -> None:
    assert compiled("count() > 2x baseline(10m) over 10m -> sev3").baseline_ms == 10 * M


# ---- other compiled fields ---------------------------------------------------------------------------


def test_default_and_explicit_min_events() -> None:
    assert DEFAULT_MIN_EVENTS == 20
    assert compiled("rate(hallucination) > 0.1 over 10m -> sev2").min_events == 20
    assert compiled("rate(hallucination) > 0.1 over 10m min 50 events -> sev2").min_events == 50


@pytest.mark.parametrize(
    ("text", "needs_sample"),
    [
        ("rate(x) > 0.1 over 1m -> sev2", True),
        ("avg(latency_ms) > 1 over 1m -> sev2", True),
        ("min(latency_ms) < 1 over 1m -> sev2", True),
        ("max(latency_ms) > 1 over 1m -> sev2", True),
        ("p99(latency_ms) > 1 over 1m -> sev2", True),
        ("count(pii) >= 1 over 1m -> sev1", False),
        ("sum(cost_usd) > 100 over 1m -> sev2", False),
        ("distinct(user) > 100 over 1m -> sev2", False),
        ("count(pii) > 2x baseline over 1m -> sev1", True),  # every baseline comparison
        ("sum(cost_usd) > 2x baseline over 1m -> sev2", True),
    ],
)
def test_which_rules_min_events_gates(text: str, needs_sample: bool) -> None:
    assert compiled(text).needs_sample is needs_sample


def test_metric_argument_paths() -> None:
    assert compiled("rate(hallucination) > 0.1 over 1m -> sev2").arg == ("flags", "hallucination")
    assert compiled("count(pii) > 1 over 1m -> sev2").arg == ("flags", "pii")
    assert compiled("count() > 1 over 1m -> sev2").arg is None
    assert compiled("avg(scores.quality) < 0.5 over 1m -> sev2").arg == ("scores", "quality")


def test_every_compiled_field_of_a_full_rule() -> None:
    rule = compiled(
        "rule full:\n"
        "  rate(hallucination) > 3x baseline(2h) over 10m by model, meta.region"
        ' where service == "support-bot" for 2m min 50 events\n'
        '  -> sev3 contain fallback(model="small-safe", strict=true) hold for 30m contain rate_limit(rps=50)'
        ' escalate sev2 if users > 100 escalate sev1 if events >= 1000 category adversarial notify "#ai-oncall"'
    )
    assert rule.name == "full"
    assert rule.path == "t.rules"
    assert rule.line == 1
    assert (rule.metric, rule.op, rule.window_ms, rule.step_ms) == (RATE, ">", 10 * M, 1 * M)
    assert rule.by == (("model",), ("meta", "region"))
    assert rule.for_ms == 2 * M
    assert rule.severity == 3
    sev1, sev2 = Severity.SEV1, Severity.SEV2
    assert rule.escalations == (Escalation(sev2, "users", ">", 100.0), Escalation(sev1, "events", ">=", 1000.0))
    assert rule.category == "adversarial"
    assert rule.contains[0] == ContainSpec("fallback", (("model", "small-safe"), ("strict", True)), True, 30 * M)
    assert (rule.contains[1].action, rule.contains[1].params, rule.contains[1].hold) == (
        "rate_limit",
        (("rps", 50),),
        False,
    )
    assert rule.notify == ("#ai-oncall",)
    assert rule.text == (
        "rule full:\n"
        "  rate(hallucination) > 3x baseline(2h) over 10m by model, meta.region"
        ' where service == "support-bot" for 2m min 50 events\n'
        '  -> sev3 contain fallback(model="small-safe", strict=true) hold for 30m contain rate_limit(rps=50)'
        ' escalate sev2 if users > 100 escalate sev1 if events >= 1000 category adversarial notify "#ai-oncall"'
    )
    assert rule.where({"service": "support-bot"}) and not rule.where({"service": "other"})
    assert rule.compare(0.5, 0.4) and not rule.compare(0.4, 0.4)


def test_rule_line_is_where_the_rule_starts() -> None:
    rules, _ = load_rules(
        {"t.rules": "# c\n\ncount() > 1 over 1m -> sev3\nrule b:\n  count() > 2 over 1m\n  -> sev3\n"}
    )
    assert [(r.path, r.line) for r in rules] == [("t.rules", 3), ("t.rules", 4)]


# ---- categories ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "category"),
    [
        ("rate(hallucination)", "hallucination"),
        ("rate(ungrounded_claim)", "hallucination"),
        ("count(pii)", "data_leakage"),
        ("count(system_prompt_leak)", "data_leakage"),
        ("count(cross_tenant)", "data_leakage"),
        ("count(secret_in_output)", "data_leakage"),
        ("rate(prompt_injection)", "adversarial"),
        ("rate(jailbreak)", "adversarial"),
        ("sum(cost_usd)", "cost"),
        ("sum(tokens_out)", "cost"),
        ("avg(scores.quality)", "quality_degradation"),
        ("avg(scores.groundedness)", "quality_degradation"),  # "score" matches; "groundedness" is not "ungrounded"
        ("rate(refusal)", "quality_degradation"),
        ("p95(latency_ms)", "other"),
        ("distinct(user)", "other"),
        ("count()", "other"),
        # the first category in the table that has a matching word wins, not the first word in the name
        ("rate(injection_leak)", "data_leakage"),
        ("sum(tokens_hallucinated)", "hallucination"),
        ("avg(SCORES.Quality)", "quality_degradation"),  # case does not matter
    ],
)
def test_category_inference(metric: str, category: str) -> None:
    assert compiled(f"{metric} > 1 over 1m -> sev3").category == category


def test_category_clause_overrides_inference() -> None:
    assert compiled("p95(latency_ms) > 1 over 1m -> sev3 category quality_degradation").category == (
        "quality_degradation"
    )
    assert compiled("rate(pii) > 0.1 over 1m -> sev3 category other").category == "other"


# ---- where predicates -----------------------------------------------------------------------------------


def where(expr: str):
    return compile_expr(parse_rule(f"count() > 1 over 1m where {expr} -> sev3").condition.where)


EVENT = {
    "model": "gpt-4o",
    "tenant": "acme",
    "latency_ms": 1200,
    "cost_usd": 0.25,
    "flags": {"pii": True, "count_one": 1, "off": False},
    "scores": {"quality": 0.9},
    "retries": 0,
    "note": "",
    "nan": float("nan"),
    "nothing": None,
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # equality
        ('model == "gpt-4o"', True),
        ('model != "gpt-4o"', False),
        ("latency_ms == 1200", True),
        ("latency_ms == 1200.0", True),  # numbers compare by value
        ('latency_ms == "1200"', False),  # but never with strings
        # booleans are not numbers: true != 1
        ("flags.pii == true", True),
        ("flags.pii == 1", False),
        ("flags.count_one == true", False),
        ("flags.count_one == 1", True),
        ("flags.off == false", True),
        ("flags.off == 0", False),
        ("retries == false", False),
        # missing fields (and null) equal nothing, so != is true
        ('region == "eu"', False),
        ('region != "eu"', True),
        ("nothing == false", False),
        ("scores.missing == 1", False),
        ("model.deeper == 1", False),  # a path through a non-mapping is missing
        # ordering: only numbers; anything else (missing, strings, booleans, NaN) is false
        ("latency_ms > 1000", True),
        ("latency_ms >= 1200", True),
        ("latency_ms < 1200", False),
        ("cost_usd <= 0.25", True),
        ("scores.quality < 0.95", True),
        ("model > 1", False),
        ("model < 1", False),
        ("flags.pii > 0", False),
        ("flags.pii < 2", False),
        ("nan > 0", False),
        ("nan < 0", False),
        ("region > 0", False),
        ("region < 0", False),
        ("not region < 0", True),
        # in / not in
        ('tenant in ["acme", "globex"]', True),
        ('tenant in ["globex"]', False),
        ('tenant not in ["globex"]', True),
        ('tenant not in ["acme", "globex"]', False),
        ("region in [1, 2]", False),
        ("region not in [1, 2]", True),  # missing: in nothing, so `not in` everything
        ("flags.pii in [1]", False),  # true is not 1 in lists either
        ("flags.pii in [true]", True),
        ("latency_ms in [1200.0]", True),
        # truthiness of a bare path
        ("flags.pii", True),
        ("flags.off", False),
        ("retries", False),
        ("note", False),
        ("model", True),
        ("region", False),
        # boolean structure
        ('model == "gpt-4o" and tenant == "acme"', True),
        ('model == "gpt-4o" and tenant == "globex"', False),
        ('model == "x" or tenant == "acme"', True),
        ('not model == "x"', True),
        ('model == "x" or tenant == "acme" and retries', False),  # and binds tighter
        ('(model == "x" or tenant == "acme") and not retries', True),
    ],
)
def test_where_semantics(expr: str, expected: bool) -> None:
    assert where(expr)(EVENT) is expected


def test_get_path() -> None:
    assert get_path(EVENT, ("scores", "quality")) == 0.9
    assert get_path(EVENT, ("scores", "missing")) is None
    assert get_path(EVENT, ("model", "x")) is None
    assert get_path({}, ("a",)) is None
    assert get_path({"a": {"b": False}}, ("a", "b")) is False


# ---- derived names of unnamed rules ------------------------------------------------------------------------


def test_derived_name_shape() -> None:
    assert re.fullmatch(r"rate_hallucination_[0-9a-f]{8}", compiled("rate(hallucination) > 0.1 over 1m -> sev2").name)
    assert re.fullmatch(r"avg_scores_quality_[0-9a-f]{8}", compiled("avg(scores.quality) < 0.5 over 1m -> sev2").name)
    assert re.fullmatch(r"count_all_[0-9a-f]{8}", compiled("count() > 10 over 1m -> sev2").name)


def test_derived_name_is_stable_across_reformatting_and_position() -> None:
    one = compiled('rate(hallucination) > 3x baseline over 10m by model where tenant in ["a","b"] -> sev2').name
    spaced = compiled(
        'rate( hallucination )>3x   baseline over 10m by model where tenant in [ "a" , "b" ]->sev2  # comment'
    ).name
    assert one == spaced
    rules, _ = load_rules(
        {
            "other/path.rules": "# moved\n\ncount() > 1 over 1m -> sev3\n"
            'rate(hallucination)  > 3x baseline over 10m by model where tenant in ["a", "b"] -> sev2'
        }
    )
    assert rules[1].name == one


def test_derived_name_follows_the_meaning() -> None:
    base = compiled("rate(hallucination) > 0.1 over 10m -> sev2").name
    assert compiled("rate(hallucination) > 0.2 over 10m -> sev2").name != base  # threshold
    assert compiled("rate(hallucination) > 0.1 over 15m -> sev2").name != base  # window
    assert compiled("rate(hallucination) > 0.1 over 10m -> sev1").name != base  # outcome
    assert compiled("rate(hallucination) > 0.1 over 10m -> sev2").name == base


def test_named_rules_keep_their_name() -> None:
    rule = parse_rule("rule spike: count() > 1 over 1m -> sev3")
    assert rule_name(rule) == "spike"
    assert compile_rule(rule).name == "spike"


# ---- firebreak check ------------------------------------------------------------------------------------------

GOOD = "rule a:\n  rate(hallucination) > 3x baseline over 10m\n  -> sev2 contain fallback\n"
GOOD_TWO = "count(pii) >= 1 over 1m by tenant -> sev1\np95(latency_ms) > 2000 over 5m -> sev3\n"
BAD = "rule broken:\n  rat(hallucination) > 3x baseline over 10m -> sev2\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "a.rules").write_text(GOOD)
    (tmp_path / "good" / "nested" / "deeper").mkdir(parents=True)
    (tmp_path / "good" / "nested" / "deeper" / "b.rules").write_text(GOOD_TWO)
    (tmp_path / "good" / "notes.txt").write_text("not a rules file: ignored in directories")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ok.rules").write_text(GOOD)
    (tmp_path / "bad" / "broken.rules").write_text(BAD)
    (tmp_path / "empty").mkdir()
    (tmp_path / "plain.txt").write_text(GOOD)
    return tmp_path


def test_check_good_directory_recursively(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tree / "good")]) == 0
    out, err = capsys.readouterr()
    assert out == "ok: 3 rules in 2 file(s)\n"
    assert err == ""


def test_check_files_named_directly_whatever_their_suffix(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tree / "plain.txt"), str(tree / "good" / "nested" / "deeper" / "b.rules")]) == 0
    assert capsys.readouterr().out == "ok: 3 rules in 2 file(s)\n"


def test_check_bad_directory(tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    assert main(["check", "bad"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "bad/broken.rules:2:3: error: unknown function `rat` — did you mean `rate`?\n"
        "      rat(hallucination) > 3x baseline over 10m -> sev2\n"
        "      ^^^\n"
        "1 error(s) in 2 file(s)\n"
    )


def test_check_duplicates_across_paths(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tree / "good" / "a.rules"), str(tree / "bad" / "ok.rules")]) == 1
    err = capsys.readouterr().err
    assert "duplicate rule name `a`" in err
    assert err.endswith("1 error(s) in 2 file(s)\n")


def test_check_missing_path(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tree / "nope.rules"
    assert main(["check", str(tree / "good"), str(missing)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"firebreak check: {missing}: no such file or directory\n"


def test_check_directory_without_rules(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tree / "empty")]) == 1
    assert capsys.readouterr().err == f"firebreak check: no *.rules files under {tree / 'empty'}\n"


def test_check_as_a_subprocess(tree: Path) -> None:
    good = subprocess.run([str(FIREBREAK), "check", "good"], cwd=tree, capture_output=True, text=True, timeout=60)
    assert (good.returncode, good.stdout, good.stderr) == (0, "ok: 3 rules in 2 file(s)\n", "")
    bad = subprocess.run([str(FIREBREAK), "check", "bad"], cwd=tree, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.startswith("bad/broken.rules:2:3: error: unknown function `rat`")
    missing = subprocess.run([str(FIREBREAK), "check", "nope"], cwd=tree, capture_output=True, text=True, timeout=60)
    assert (missing.returncode, missing.stderr) == (1, "firebreak check: nope: no such file or directory\n")
    assert "Traceback" not in missing.stderr


def test_module_entry_point(tree: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "firebreak.cli", "check", str(tree / "good")], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (0, "ok: 3 rules in 2 file(s)\n")


def test_defaults_of_outcome_clauses() -> None:
    rule = compiled("count(pii) >= 1 over 1m -> sev3 contain disable_feature contain rollback hold")
    # no `escalate`: one level up when more than 100 users are affected
    assert rule.escalations == (Escalation(Severity.SEV2, "users", ">", 100.0),)
    assert all(type(e.severity) is Severity for e in rule.escalations)
    # no `for`: ttl None, meaning the default TTL (1h), or no expiry for a `hold` command
    assert rule.contains == (ContainSpec("disable_feature", (), False, None), ContainSpec("rollback", (), True, None))
    assert rule.notify == ()
    assert compiled("count(pii) >= 1 over 1m -> sev1").escalations == ()  # nothing above sev1
