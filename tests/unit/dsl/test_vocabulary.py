"""The vocabulary: every flag, score and field a rule reads is standard or declared in a
vocabulary.toml next to the rules; anything else is an error with a did-you-mean."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from firebreak.adapters.rule_files import collect_rule_paths, collect_vocabulary_paths, read_vocabulary_sources
from firebreak.adapters.rule_tests import run_test_file
from firebreak.adapters.starter_pack import starter_rule_sources
from firebreak.cli import main
from firebreak.core.events import NUMBER_FIELDS, STANDARD_FLAGS, STANDARD_SCORES, STRING_FIELDS
from firebreak.dsl import Diagnostic, load_rules
from firebreak.dsl.diagnostics import render_all
from firebreak.dsl.vocabulary import MAPS, STANDARD, STANDARD_FIELDS, parse_vocabulary

SCHEMA = json.loads((Path(__file__).parents[3] / "docs" / "schemas" / "event.schema.json").read_text())
TYPOS = (
    "rate(halucination) > 3x baseline over 10m by model -> sev2 contain fallback\n"
    "avg(scores.qualty) < 0.8x baseline(6h) over 30m by modle -> sev3\n"
)


def problems(text: str, vocabularies: dict[str, str] | None = None) -> list[tuple[int, int, str]]:
    rules, found = load_rules({"r.rules": text}, {} if vocabularies is None else vocabularies)
    assert not rules or not found
    return [(d.line, d.column, d.message) for d in found]


# ---- the standard vocabulary is the event contract -----------------------------------------


def test_schema_and_code_agree_on_standard_names() -> None:
    props = SCHEMA["properties"]
    assert tuple(props["flags"]["properties"]) == STANDARD_FLAGS
    assert all(p["type"] == "boolean" for p in props["flags"]["properties"].values())
    assert tuple(props["scores"]["properties"]) == STANDARD_SCORES
    assert all(p["type"] == "number" for p in props["scores"]["properties"].values())
    assert set(props) == set(STANDARD_FIELDS) | set(MAPS)
    assert all(props[f]["type"] == "string" for f in STRING_FIELDS)
    assert all(props[f]["type"] == "number" for f in NUMBER_FIELDS)
    assert {"hallucination", "pii", "prompt_injection", "jailbreak", "error"} <= STANDARD.flags


def test_the_docs_list_the_standard_names() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "dsl.md").read_text()
    rows = dict(re.findall(r"^\| (fields|flags|scores)[^|]* \| (.*) \|$", doc, re.M))
    assert tuple(re.findall(r"`(\w+)`", rows["flags"])) == STANDARD_FLAGS
    assert tuple(re.findall(r"`(\w+)`", rows["scores"])) == STANDARD_SCORES
    assert set(re.findall(r"`(\w+)`", rows["fields"])) - {"where"} == set(STANDARD_FIELDS)  # "`where` only"


def test_the_starter_pack_reads_standard_names_only() -> None:
    rules, found = load_rules(starter_rule_sources(), {})
    assert found == [] and len(rules) > 20


def test_without_vocabularies_names_are_not_checked() -> None:
    rules, found = load_rules({"r.rules": "rate(anything_goes) > 0.1 over 1m by whatever -> sev2"})
    assert found == [] and len(rules) == 1


# ---- unknown names in rules ------------------------------------------------------------------


def test_the_issue_rules_are_errors_with_hints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "typos.rules").write_text(TYPOS)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "rules"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "rules/typos.rules:1:6: error: unknown flag `halucination` — did you mean `hallucination`?\n"
        "    rate(halucination) > 3x baseline over 10m by model -> sev2 contain fallback\n"
        "         ^^^^^^^^^^^^\n"
        "rules/typos.rules:2:5: error: unknown score `scores.qualty` — did you mean `scores.quality`?\n"
        "    avg(scores.qualty) < 0.8x baseline(6h) over 30m by modle -> sev3\n"
        "        ^^^^^^^^^^^^^\n"
        "rules/typos.rules:2:52: error: unknown field `modle` — did you mean `model`?\n"
        "    avg(scores.qualty) < 0.8x baseline(6h) over 30m by modle -> sev3\n"
        "                                                       ^^^^^\n"
        "3 error(s) in 1 file(s)\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count(jailbrake) > 1 over 1m -> sev2", (1, 7, "unknown flag `jailbrake` — did you mean `jailbreak`?")),
        ("count() > 1 over 1m by tenant, modle -> sev2", (1, 32, "unknown field `modle` — did you mean `model`?")),
        (
            'count() > 1 over 1m where servce == "a" -> sev2',
            (1, 27, "unknown field `servce` — did you mean `service`?"),
        ),
        ("count() > 1 over 1m where flags.pi -> sev2", (1, 27, "unknown flag `flags.pi` — did you mean `flags.pii`?")),
        (
            "count() > 1 over 1m where not scores.relevanse < 0.5 -> sev2",
            (1, 31, "unknown score `scores.relevanse` — did you mean `scores.relevance`?"),
        ),
        ("p95(latency) > 1 over 1m -> sev2", (1, 5, "unknown field `latency` — did you mean `latency_ms`?")),
        ("sum(cost) > 1 over 1m -> sev2", (1, 5, "unknown field `cost` — did you mean `cost_usd`?")),
        ("distinct(usr) > 1 over 1m -> sev2", (1, 10, "unknown field `usr` — did you mean `user`?")),
    ],
)
def test_each_kind_of_name_gets_a_hint(text: str, expected: tuple[int, int, str]) -> None:
    assert problems(text) == [expected]


def test_a_name_close_to_nothing_says_how_to_declare_it() -> None:
    assert problems('rate(off_topic) > 0.1 over 1m where region == "eu" -> sev2') == [
        (
            1,
            6,
            "unknown flag `off_topic`: not a standard flag; declare it in vocabulary.toml next to the rules "
            '(flags = ["off_topic"])',
        ),
        (
            1,
            37,
            "unknown field `region`: not a standard field; declare it in vocabulary.toml next to the rules "
            '(fields = ["region"])',
        ),
    ]


def test_a_numeric_function_over_text_or_a_flag_is_an_error() -> None:
    assert problems("avg(model) > 1 over 1m -> sev2") == [
        (1, 5, "`avg(model)` never has a value: `model` is text, not a number")
    ]
    assert problems("sum(flags.pii) > 1 over 1m -> sev2") == [
        (1, 5, "`flags.pii` is true or false, never a number: count it with `rate(pii)`")
    ]
    assert problems("distinct(model) > 1 over 1m -> sev2") == []  # distinct counts any values


def test_names_are_checked_in_every_rule_of_every_file() -> None:
    sources = {"a.rules": "count(pi) > 1 over 1m -> sev2", "b.rules": "count() > 1 over 1m by tenat -> sev2"}
    _, found = load_rules(sources, {})
    assert [(d.path, d.message) for d in found] == [
        ("a.rules", "unknown flag `pi` — did you mean `pii`?"),
        ("b.rules", "unknown field `tenat` — did you mean `tenant`?"),
    ]


# ---- declared names ----------------------------------------------------------------------------


VOCABULARY = """# our guard's extra verdicts, our evaluator's scores, our fields
flags = ["off_topic", "toxic_request"]
scores = ["helpfulness"]
fields = ["region", "attributes.*", "tokens.cached"]
"""


def test_declared_names_are_known() -> None:
    text = (
        "rate(off_topic) > 0.1 over 1m by region where flags.toxic_request -> sev2\n"
        "avg(scores.helpfulness) < 0.5 over 1m by attributes.customer.tier -> sev3\n"
        "sum(tokens.cached) > 10 over 1m where attributes and tokens -> sev3\n"
    )
    assert problems(text, {"v/vocabulary.toml": VOCABULARY}) == []
    assert problems("sum(tokens.uncached) > 1 over 1m -> sev2", {"v/vocabulary.toml": VOCABULARY}) == [
        (1, 5, "unknown field `tokens.uncached` — did you mean `tokens.cached`?")
    ]
    assert problems("rate(helpfulnes) > 0.1 over 1m -> sev2", {"v/vocabulary.toml": VOCABULARY})[0][2].startswith(
        "unknown flag `helpfulnes`"
    )  # a score is not a flag


def test_declared_names_hint_too() -> None:
    assert problems("rate(of_topic) > 0.1 over 1m -> sev2", {"v/vocabulary.toml": VOCABULARY}) == [
        (1, 6, "unknown flag `of_topic` — did you mean `off_topic`?")
    ]


def test_check_reads_the_vocabulary_next_to_the_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "team.rules").write_text("rate(off_topic) > 0.1 over 1m by region -> sev2\n")
    assert main(["check", str(tmp_path)]) == 1
    assert "unknown flag `off_topic`" in capsys.readouterr().err
    (tmp_path / "vocabulary.toml").write_text(VOCABULARY)
    assert main(["check", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"ok: 1 rules in 1 file(s) (names declared in {tmp_path / 'vocabulary.toml'})\n"
    assert main(["check", str(tmp_path / "team.rules")]) == 0  # a file named directly: its folder's vocabulary


def test_vocabulary_files_are_found_like_rule_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for path in ("a/vocabulary.toml", "a/b/vocabulary.toml", "a/b/x.rules"):
        (tmp_path / path).write_text("")
    top, deep = tmp_path / "a" / "vocabulary.toml", tmp_path / "a" / "b" / "vocabulary.toml"
    assert collect_vocabulary_paths([str(tmp_path / "a")]) == [deep, top]  # sorted by path, as rule files
    assert collect_vocabulary_paths([str(tmp_path / "a" / "b" / "x.rules")]) == [deep]
    assert collect_vocabulary_paths([str(top)]) == [top]
    assert collect_rule_paths([str(top), str(tmp_path / "a" / "b" / "x.rules")]) == [tmp_path / "a" / "b" / "x.rules"]
    assert collect_vocabulary_paths([str(tmp_path), str(top)]) == [deep, top]  # each once
    assert list(read_vocabulary_sources([str(tmp_path / "a" / "b")])) == [str(deep)]


def test_rule_tests_check_names(tmp_path: Path) -> None:
    (tmp_path / "e.rules").write_text("rule e: count(eror) >= 3 over 1m by model -> sev2\n")
    spec = tmp_path / "e.test.toml"
    spec.write_text(
        'start = "2026-01-05T00:00:00Z"\n[[input]]\nfrom = "0m"\nuntil = "1m"\nevery = "1s"\nevent = { model = "a" }\n'
    )
    outcome = run_test_file(spec)
    assert not outcome.passed
    assert "unknown flag `eror` — did you mean `error`?" in (outcome.error or "")


def test_the_worker_refuses_unknown_names_before_connecting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "w.rules").write_text("rate(halucination) > 0.1 over 1m -> sev2\n")
    # rules are loaded (and refused) before any broker is contacted: port 1 is never tried
    assert main(["worker", "--rules", str(tmp_path), "--bootstrap", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert "w.rules:1:6: error: unknown flag `halucination` — did you mean `hallucination`?" in err
    assert "no Kafka broker" not in err


# ---- mistakes in the vocabulary file -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('flags = ["a"\nscores = 3\n', (2, 1, "not valid TOML: Unclosed array")),
        ('flag = ["off_topic"]\n', (1, 1, "unknown key `flag` — did you mean `flags`?")),
        ('names = ["red"]\n', (1, 1, "unknown key `names`; expected flags, scores, labels or fields")),
        ('fields = "region"\n', (1, 1, '`fields` must be a list of names, e.g. fields = ["name"]')),
        (
            'flags = ["ok", "not ok"]\n',
            (1, 16, "`not ok` is not a flag name: letters, digits and `_`, not starting with a digit"),
        ),
        ('flags = ["flags.off_topic"]\n', (1, 10, "declare the bare name: `off_topic`, not `flags.off_topic`")),
        ('\nfields = ["flags.off_topic"]\n', (2, 11, 'declare flags under `flags`: flags = ["off_topic"]')),
        ('fields = ["a..b"]\n', (1, 11, "`a..b` is not a field path: names joined by dots, optionally ending `.*`")),
        ('fields = ["a.*.b"]\n', (1, 11, "`a.*.b` is not a field path: names joined by dots, optionally ending `.*`")),
    ],
)
def test_vocabulary_file_mistakes_are_located(text: str, expected: tuple[int, int, str]) -> None:
    _, found = parse_vocabulary(text, "v.toml")
    assert [(d.line, d.column, d.message) for d in found] == [expected]


def test_a_broken_vocabulary_stops_the_rules_and_renders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ok.rules").write_text("count(pii) > 1 over 1m -> sev2\n")
    (tmp_path / "vocabulary.toml").write_text('flags = ["off_topic"]\nfeilds = ["region"]\n')
    monkeypatch.chdir(tmp_path)
    assert main(["check", "."]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "vocabulary.toml:2:1: error: unknown key `feilds` — did you mean `fields`?\n"
        '    feilds = ["region"]\n'
        "    ^^^^^^\n"
        "1 error(s) in 2 file(s)\n"
    )
    assert main(["replay", "--rules", ".", "/dev/null"]) == 1  # every command loads the same way
    assert "unknown key `feilds`" in capsys.readouterr().err


def test_vocabulary_diagnostics_render_with_a_caret() -> None:
    _, found = load_rules({"r.rules": "count() > 1 over 1m -> sev2"}, {"v.toml": 'flags = ["a b"]\n'})
    assert found == [
        Diagnostic("v.toml", 1, 10, "`a b` is not a flag name: letters, digits and `_`, not starting with a digit", 15)
    ]
    assert render_all(found, {"v.toml": 'flags = ["a b"]\n'}).splitlines()[1:] == [
        '    flags = ["a b"]',
        "             ^^^^^",
    ]


def test_the_worker_reloads_through_the_same_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the running worker calls on SIGHUP or a changed file (LiveWorker._reload): the loader
    `firebreak worker` hands it, and the change detector, which watches vocabulary files too."""
    from firebreak.adapters.live import app, command

    handed: dict = {}

    class Worker:
        def __init__(self, settings: object, rules: tuple, load: object, mtime: object) -> None:
            handed.update(rules=rules, load=load, mtime=mtime)

        def run(self) -> int:
            return 0

    async def broker_is_there(_bootstrap: str) -> None:
        return None

    monkeypatch.setattr(app, "LiveWorker", Worker)
    monkeypatch.setattr(command, "_probe", broker_is_there)
    (tmp_path / "w.rules").write_text("rate(off_topic) > 0.1 over 1m -> sev2\n")
    (tmp_path / "vocabulary.toml").write_text('flags = ["off_topic"]\n')
    assert main(["worker", "--rules", str(tmp_path)]) == 0
    assert len(handed["rules"]) == 1
    (tmp_path / "w.rules").write_text("rate(of_topic) > 0.1 over 1m -> sev2\n")  # an edit with a typo
    rules, message = handed["load"]()
    assert rules is None
    assert "w.rules:1:6: error: unknown flag `of_topic` — did you mean `off_topic`?" in message
    seen = handed["mtime"]()
    (tmp_path / "vocabulary.toml").write_text('flags = ["off_topic", "of_topic"]\n')
    os.utime(tmp_path / "vocabulary.toml", (4_000_000_000, 4_000_000_000))
    assert handed["mtime"]() != seen  # a vocabulary change triggers a reload
    rules, message = handed["load"]()
    assert message == "" and [r.name[:14] for r in rules] == ["rate_of_topic_"]
