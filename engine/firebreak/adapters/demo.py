"""`firebreak demo`: a realistic log with one incident of each category, replayed
through the starter pack, shown as an incident table checked against the ground truth.

Everything it needs is in the package: the traffic comes from firebreak.synthetic,
the rules from the starter pack (engine/firebreak/_rules in a wheel, rules/ in a checkout),
and the replay is the one `firebreak replay` runs. It writes the log, the records
and the ground truth to a directory and leaves them there for a closer look.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from firebreak.adapters.file_replay import ReplayResult, replay_files
from firebreak.core import format_ts, parse_ts
from firebreak.core.cases import CaseBook
from firebreak.dsl import CompiledRule
from firebreak.event_types import EventType
from firebreak.records import RecordKind
from firebreak.synthetic import HOUR, MINUTE, GroundTruth, Injection, Traffic

DEMO_SEED = 2026
DEMO_START = "2026-03-02T10:00:00Z"
DEMO_DURATION_MS = 3 * HOUR
DEMO_RATE = 8.0  # mean inference events per second (~100k events); the pack wants ~0.8/s for its bigger tenants
INCIDENT_MS = 30 * MINUTE
# (category, onset in minutes, target). Relative rules fire only once 6 windows of baseline
# are behind them: 70 minutes for the 10m hallucination rule, 105 for 15m quality and cost.
SCHEDULE = (
    ("hallucination", 75, "gpt-4o"),
    ("data_leakage", 90, "acme"),
    ("adversarial", 100, "globex"),
    ("quality_degradation", 110, "rag-answer-v12"),
    ("cost", 125, "support-bot"),
)
EVALUATION_FILE = Path(__file__).with_name("pack_evaluation.json")  # written by benchmarks/pack_eval.py
MATCH_BEFORE_MS = 5 * MINUTE  # an incident opened this long before an onset can still be its detection
MATCH_AFTER_MS = 15 * MINUTE  # ... or this long after its end


def demo_traffic(seed: int = DEMO_SEED, rate: float = DEMO_RATE) -> Traffic:
    injections = [Injection(category, minutes * MINUTE, INCIDENT_MS, target) for category, minutes, target in SCHEDULE]
    return Traffic(seed, parse_ts(DEMO_START), DEMO_DURATION_MS, rate, injections)


# ---- incidents, from records ---------------------------------------------------------------


@dataclass
class IncidentRow:
    incident_id: str
    rule: str
    category: str
    group: dict[str, Any]
    opened: int
    severity: str  # final, after escalations
    first_severity: str
    value: float | None
    threshold: float | None
    baseline: float | None
    users: int
    evidence: list[str] = field(default_factory=list)
    resolved: int | None = None
    actions: list[str] = field(default_factory=list)
    truth: GroundTruth | None = None  # the injection it detects: same category, same target
    related: GroundTruth | None = None  # else an injection its group or evidence points at (a side effect)
    response: dict[str, Any] | None = None  # who responds at the latest severity (the response policy)
    case_id: str | None = None  # the case it belongs to (core/cases.py)
    reopened: int = 0  # times it reopened within its cool-down instead of a new incident opening


def incident_rows(records: Iterable[dict[str, Any]]) -> list[IncidentRow]:
    rows: dict[str, IncidentRow] = {}
    for r in records:
        kind = r["type"]
        if kind == RecordKind.OPENED:
            rows[r["incident_id"]] = IncidentRow(
                r["incident_id"],
                r["rule"],
                r["category"],
                r["group"],
                parse_ts(r["ts"]),
                r["severity"],
                r["severity"],
                r["value"],
                r["threshold"],
                r["baseline"],
                r["users_affected"],
                list(r["evidence"]),
                response=r.get("response"),
                case_id=r.get("case_id"),
            )
            continue
        row = rows.get(r.get("incident_id", ""))
        if row is None:
            continue
        if kind == RecordKind.ESCALATED:
            row.severity = r["severity"]
            row.users = max(row.users, r["users_affected"])
            row.response = r.get("response")
        elif kind == RecordKind.RESOLVED:
            row.resolved = parse_ts(r["ts"])
        elif kind == RecordKind.REOPENED:
            row.resolved = None
            row.reopened += 1
            row.response = r.get("response")
        elif kind == RecordKind.COMMAND:
            params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
            row.actions.append(f"{r['action']}({params})" if params else r["action"])
    return list(rows.values())


def _touches(row: IncidentRow, truth: GroundTruth) -> bool:
    in_time = truth.onset_ts - MATCH_BEFORE_MS <= row.opened <= truth.end_ts + MATCH_AFTER_MS
    return in_time and truth.touches(row.group)


def match(rows: list[IncidentRow], truths: list[GroundTruth], affected: dict[str, tuple[int, ...]]) -> None:
    """Tie incidents to injections. ``affected``: event id → indexes in ``truths`` of the
    injections that changed that event: an incident's evidence can show a side effect."""
    for row in rows:
        for truth in truths:
            if _touches(row, truth):
                if truth.category == row.category:
                    row.truth = truth
                    break
                row.related = row.related or truth
        if row.truth is None and row.related is None:
            hits = Counter(i for e in row.evidence for i in affected.get(e, ()))
            row.related = truths[hits.most_common(1)[0][0]] if hits else None


def affected_events(truths: list[GroundTruth], events: Iterable[dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    out = {}
    for event in events:
        ts = parse_ts(event["ts"])
        hits = tuple(i for i, truth in enumerate(truths) if truth.affects(event, ts))
        if hits:
            out[event["event_id"]] = hits
    return out


# ---- running it ------------------------------------------------------------------------------


@dataclass
class DemoResult:
    out_dir: Path
    events_path: Path
    records_path: Path
    truth_path: Path
    events: int
    changes: int
    users: int
    replay: ReplayResult
    rows: list[IncidentRow]
    truths: list[GroundTruth]
    seconds: float
    cases: CaseBook | None = None
    pages: list[dict[str, Any]] = field(default_factory=list)  # the case records that paged, in order


def run_demo(
    out_dir: Path,
    rules: tuple[CompiledRule, ...],
    seed: int = DEMO_SEED,
    rate: float = DEMO_RATE,
    say: Callable[[str], None] = lambda _: None,
) -> DemoResult:
    began = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    events_path, records_path, truth_path = (out_dir / n for n in ("events.jsonl", "records.jsonl", "truth.json"))
    traffic = demo_traffic(seed, rate)
    say(f"generating {DEMO_DURATION_MS / HOUR:g} h of traffic at ~{rate:g} events/s → {events_path}")
    count = changes = 0
    users: set[str] = set()
    affected: dict[str, tuple[int, ...]] = {}
    with events_path.open("wb") as f:
        stream = traffic.events()
        while batch := list(itertools.islice(stream, 10_000)):
            count += len(batch)
            changes += sum(1 for e in batch if e["type"] == EventType.CHANGE)
            users.update(e["user"] for e in batch if "user" in e)
            affected.update(affected_events(traffic.truths, batch))
            f.write(b"\n".join(orjson.dumps(e) for e in batch) + b"\n")
    truth_path.write_bytes(orjson.dumps([dataclasses.asdict(t) for t in traffic.truths], option=orjson.OPT_INDENT_2))
    say(f"replaying {count:,} events through {len(rules)} rules")
    records: list[dict[str, Any]] = []
    with records_path.open("wb") as out:

        def emit(record: dict[str, Any]) -> None:
            records.append(record)
            out.write(orjson.dumps(record) + b"\n")

        cases = CaseBook.for_rules(rules)
        replay = replay_files([str(events_path)], rules, emit, cases=cases)
    rows = incident_rows(records)
    match(rows, traffic.truths, affected)
    pages = [r for r in records if r["type"] in (RecordKind.CASE_OPENED, RecordKind.CASE_UPDATED) and r["page"]]
    return DemoResult(
        out_dir,
        events_path,
        records_path,
        truth_path,
        count,
        changes,
        len(users),
        replay,
        rows,
        traffic.truths,
        time.perf_counter() - began,
        cases,
        pages,
    )


def first_page(result: DemoResult, truth: GroundTruth) -> int | None:
    """When the first case holding an incident that detects ``truth`` paged (None: none did)."""
    cases = {row.case_id for row in result.rows if row.truth is truth}
    times = [parse_ts(p["ts"]) for p in result.pages if p["case_id"] in cases]
    return min(times) if times else None


def case_lines(result: DemoResult) -> list[str]:
    """N incidents in M cases: P pages, and what grouping, inhibition and flapping held back."""
    if result.cases is None:
        return []
    stats = result.cases.stats
    reopened = sum(row.reopened for row in result.rows)
    held = [
        f"{stats['grouped']} joined a case without paging (grouping)",
        f"{stats['inhibited']} muted by a sev1 case on their scope (inhibition)",
        f"{stats['updates']} severity rises or reopenings sent as updates of a page already out",
        f"{reopened} reopenings of a resolved incident instead of a new one (flapping)",
    ]
    teams = Counter((p.get("response") or {}).get("team") for p in result.pages)
    suppressed = stats["grouped"] + stats["inhibited"] + stats["updates"]  # nothing held back without a count
    return [
        f"{len(result.rows)} incidents in {stats['cases']} cases: {stats['pages']} pages, {suppressed} suppressed "
        f"({', '.join(f'{team} {n}' for team, n in sorted(teams.items())) or 'nobody'} paged); held back: "
        f"{'; '.join(held)}",
    ]


# ---- the report --------------------------------------------------------------------------------


def render(result: DemoResult, rules: tuple[CompiledRule, ...], rules_path: str = "rules/") -> str:
    ops = {rule.name: rule.op for rule in rules}
    start = parse_ts(DEMO_START)
    day = format_ts(start)[:10]
    lines = [
        f"Firebreak demo: {DEMO_DURATION_MS / HOUR:g} h of synthetic traffic on {day} "
        f"({result.events:,} events, {result.users:,} users, {result.changes} change events), "
        f"{len(result.truths)} injected incidents, replayed through {len(rules)} rules "
        f"in {result.seconds:.1f} s",
        "",
    ]
    header = (
        "opened",
        "rule",
        "category",
        "severity",
        "group",
        "value vs limit",
        "users",
        "detected",
        "resolved",
        "case",
        "containment",
    )
    case_numbers: dict[str, int] = {}
    for row in sorted(result.rows, key=lambda r: (r.opened, r.rule)):
        if row.case_id is not None:
            case_numbers.setdefault(row.case_id, len(case_numbers) + 1)
    table = [header]
    for row in sorted(result.rows, key=lambda r: (r.opened, r.rule)):
        severity = row.severity if row.severity == row.first_severity else f"{row.severity} (from {row.first_severity})"
        limit = f"{_num(row.value)} {ops.get(row.rule, '?')} {_num(row.threshold)}"
        if row.baseline is not None:
            limit += f" (baseline {_num(row.baseline)})"
        if row.truth is not None:
            detected = "+" + _minutes(row.opened - row.truth.onset_ts)
        elif row.related is not None:
            detected = f"side effect of {row.related.category}"
        else:
            detected = "not injected"
        table.append(
            (
                _clock(row.opened),
                row.rule,
                row.category,
                severity,
                _group(row.group),
                limit,
                f"{row.users:,}",
                detected,
                (_clock(row.resolved) if row.resolved is not None else "still open")
                + (f" ({row.reopened}x reopened)" if row.reopened else ""),
                f"#{case_numbers[row.case_id]}" if row.case_id in case_numbers else "-",
                ", ".join(row.actions) or "-",
            )
        )
    lines += _table(table) if result.rows else ["no incidents opened"]
    lines += ["", "injected (ground truth):"]
    truth_table = [("category", "target", "cause", "onset", "end", "first detected by", "after", "paged")]
    for truth in result.truths:
        hits = sorted((r for r in result.rows if r.truth is truth), key=lambda r: r.opened)
        cause = f"{truth.cause_event_id} {truth.description}" if truth.cause_event_id else truth.description
        truth_table.append(
            (
                truth.category,
                f"{truth.dimension}={truth.value}",
                cause,
                _clock(truth.onset_ts),
                _clock(truth.end_ts),
                hits[0].rule if hits else "MISSED",
                "+" + _minutes(hits[0].opened - truth.onset_ts) if hits else "-",
                "+" + _minutes(paged - truth.onset_ts) if (paged := first_page(result, truth)) is not None else "-",
            )
        )
    lines += _table(truth_table)
    lines += evaluation_lines(rules)
    detected = sum(1 for t in result.truths if any(r.truth is t for r in result.rows))
    stray = sum(1 for r in result.rows if r.truth is None and r.related is None)
    side = sum(1 for r in result.rows if r.truth is None and r.related is not None)
    lines += [
        "",
        f"{detected}/{len(result.truths)} injected incidents detected; {side} side effects of them; "
        f"{stray} incidents on normal traffic (false positives); {result.replay.late} late events; times are UTC",
        *_sources_and_responses(result.rows, rules),
        *case_lines(result),
        f"records: {result.records_path} ({result.replay.records:,} records)   "
        f"events: {result.events_path}   ground truth: {result.truth_path}",
    ]
    example = next((r for r in result.rows if r.truth is not None and r.truth.cause_event_id), None)
    if example is not None:
        lines += [
            "what happened? reconstruct one (timeline, ranked causes, contributors, review; docs/investigate.md):",
            f"  firebreak investigate --rules {rules_path} --events {result.events_path}"
            f" --incident {example.incident_id} --format html --out report.html",
        ]
    return "\n".join(lines)


def _sources_and_responses(rows: list[IncidentRow], rules: tuple[CompiledRule, ...]) -> list[str]:
    """Which detection source opened the incidents, and who the response policy sends them to."""
    from_reports = {r.name for r in rules if r.source is EventType.REPORT}
    reported = [row for row in rows if row.rule in from_reports]
    lines = []
    if reported:
        named = ", ".join(sorted({f"{row.rule} ({_group(row.group)})" for row in reported}))
        lines.append(
            f"opened by user reports: {len(reported)} ({named}); by inference events: {len(rows) - len(reported)}"
        )
    paged: dict[str, int] = {}
    tickets: dict[str, int] = {}
    for row in rows:
        if row.response:
            into = paged if row.response["page"] else tickets
            into[row.response["team"]] = into.get(row.response["team"], 0) + 1
    if paged or tickets:
        text = lambda d: ", ".join(f"{team} {n}" for team, n in sorted(d.items())) or "none"  # noqa: E731
        lines.append(f"who responds (the response policy), by incident: paging {text(paged)}; tickets {text(tickets)}")
    return lines


def pack_fingerprint(rules: Iterable[CompiledRule]) -> str:
    """Which rules an evaluation measured: a hash of their canonical texts, in any order. Only
    rules over inference events: the evaluated traffic holds no user reports, so rules over
    reports are not measured by it (and adding one leaves the evaluation standing)."""
    texts = sorted(rule.text for rule in rules if rule.source is EventType.INFERENCE)
    return hashlib.sha256("\n\n".join(texts).encode()).hexdigest()[:16]


def evaluation_lines(rules: tuple[CompiledRule, ...], path: Path = EVALUATION_FILE) -> list[str]:
    """What benchmarks/pack_eval.py measured for exactly these rules on traffic they were not
    tuned on, one line per family; nothing when it measured other rules (or nothing)."""
    if not path.is_file():
        return []
    data = orjson.loads(path.read_bytes())
    if data.get("pack") != pack_fingerprint(rules):
        return []
    rows = [
        (
            "family",
            "events",
            "sim. days",
            "caught",
            "precision",
            "false/day",
            "sev1-2 false/day",
            "caught / detectable",
            "pages/problem",
            "false pages/day",
            "time to detect (median)",
        )
    ]
    for f in data["families"]:
        precision = "-" if f["precision"] is None else f"{100 * f['precision']:.0f}%"
        ttd = ", ".join(f"{kind} {_minutes(int(s * 1000))}" for kind, s in f["ttd_median_s"].items()) or "-"
        detectable = f"{f['caught_detectable']}/{f['detectable']}" if "detectable" in f else "-"
        per_problem = "-" if f.get("pages_per_problem") is None else f"{f['pages_per_problem']:.2f}"
        false_pages = "-" if f.get("false_pages_per_day") is None else f"{f['false_pages_per_day']:.2f}"
        rows.append(
            (
                f["family"],
                f"{f['events']:,}",
                f"{f['days']:.2f}",
                f"{f['caught']}/{f['injected']}",
                precision,
                f"{f['false_per_day']:.2f}",
                f"{f['false_severe_per_day']:.2f}",
                detectable,
                per_problem,
                false_pages,
                ttd,
            )
        )
    below = (
        []
        if not any("detectable" in f for f in data["families"])
        else [
            "caught / detectable: of the injections leaving more evidence than noise alone gives (a leak's PII "
            "answers against its tenant's noise: benchmarks/README.md)"
        ]
    )
    return [
        "",
        f"these rules on traffic they were not tuned on ({len(data['families'])} families × {data['seeds']} seeds, "
        f"`{data['command']}`, benchmarks/README.md):",
        *_table(rows),
        *below,
    ]


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def _clock(ms: int) -> str:
    return format_ts(ms - ms % 1000)[11:19]


def _minutes(ms: int) -> str:
    sign, ms = ("-" if ms < 0 else ""), abs(ms)
    minutes, seconds = divmod(ms // 1000, 60)
    return f"{sign}{minutes}m{seconds:02d}s" if seconds else f"{sign}{minutes}m"


def _group(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items()) or "(all)"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 1 else f"{value:,.2f}" if abs(value) < 1e6 else f"{value:.4g}"
