"""Investigations: how often does the ranking name the true cause, and what does it get wrong?

    python benchmarks/investigate_eval.py --seeds 10
    python benchmarks/investigate_eval.py --seeds 3 --rules scenario --categories cost adversarial --json

For every category of firebreak.synthetic and every seed (1..N), the log of
tests/unit/investigate_scenarios.py `build()` (one injected incident, the synthetic
decoys, and two hard decoys: the same kind of change on another target 3 minutes before
onset, and a change on the true target 100 minutes before) is replayed through

- ``scenario``: that module's one rule for the category (RULES), and
- ``starter``: the 28-rule starter pack (rules/),

and the earliest incident tied to the injection is investigated. Tied: opened within
[onset − 10 min, end]; for the starter pack the group must also point at the injection
(`GroundTruth.touches`). No tied incident is a detection miss, counted apart from ranking
misses.

Per investigation: whether the true cause ranks first (adversarial: the top cause is an
``attack`` whose user is one of the attackers), the true cause's rank among the listed
causes (the report keeps 10), whether the top contributor pins the target (a field=value
of `truth.scope`, or an attacking user), time to detect from the true onset, the
estimated start against the true onset, whether a monitoring change was suggested and
whether its backtest detects earlier, and the seconds `investigate()` takes (it includes
the suggestion's backtest replays; the rule-set replay is timed apart).

``--families`` evaluates on logs built unlike firebreak.synthetic instead
(benchmarks/investigate_families.py: a version shared by every model, a service whose calls
cost cents, a leak across all of one tenant's services, quality ramps of 1-4 h, changes
naming only the incident's group, three concurrent incidents, changes with missing or extra
dimensions), each with its own rules. Per planted incident: the earliest incident of its
rule in its group opened within [onset - 10 min, end]; cause@1 (the planted cause ranks
first), contrib@1 (the top contributor, or a value merged with it, is a field=value of the
truth's scope), and for ramps the start error as a fraction of the ramp's length.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import investigate_families  # noqa: E402
from firebreak.adapters.starter_pack import starter_rule_sources  # noqa: E402
from firebreak.core import parse_ts, run_events  # noqa: E402
from firebreak.dsl import CompiledRule, load_rules  # noqa: E402
from firebreak.investigate import Options, Selection, investigate, list_incidents  # noqa: E402
from firebreak.synthetic import CATEGORIES, MINUTE  # noqa: E402
from investigate_scenarios import Case, build  # noqa: E402

RULE_SETS = ("scenario", "starter")
TIE_BEFORE_MS = 10 * MINUTE
TOP = 3
NEAR_MISS = 0.05  # a right answer whose score lead is under this is listed with the failures


def starter_rules() -> tuple[CompiledRule, ...]:
    rules, problems = load_rules(starter_rule_sources())
    if problems:
        raise SystemExit(f"starter pack does not load: {problems}")
    return tuple(rules)


def tied_incidents(records: list[dict[str, Any]], case: Case, need_touch: bool) -> list[dict[str, Any]]:
    truth = case.truth
    tied = [
        i
        for i in list_incidents(records)
        if truth.onset_ts - TIE_BEFORE_MS <= parse_ts(i["opened"]) <= truth.end_ts
        and (not need_touch or truth.touches(i["group"]))
    ]
    return sorted(tied, key=lambda i: (parse_ts(i["opened"]), i["incident_id"]))


def label(event_id: str, case: Case) -> str:
    """What a cause candidate is, against the ground truth."""
    if event_id == case.truth.cause_event_id:
        return "TRUE"
    if event_id.startswith("decoy-near"):
        return "near-decoy"
    if event_id.startswith("decoy-old"):
        return "old-decoy"
    return "other"


def true_cause_rank(causes: list[dict[str, Any]], case: Case) -> int | None:
    truth = case.truth
    for c in causes:
        if truth.category == "adversarial":
            if c["kind"] == "attack" and c["dimensions"].get("user") in truth.users:
                return c["rank"]
        elif c["event_id"] == truth.cause_event_id:
            return c["rank"]
    return None


def pins_target(contributor: dict[str, Any], case: Case) -> bool:
    pinned = set(case.truth.scope) | {("user", u) for u in case.truth.users}
    return (contributor["dimension"], contributor["value"]) in pinned


def evaluate(rules_name: str, rules: tuple[CompiledRule, ...], case: Case, seed: int) -> dict[str, Any]:
    truth = case.truth
    row: dict[str, Any] = {"rules": rules_name, "category": case.category, "seed": seed, "target": truth.value}
    t0 = time.perf_counter()
    records = run_events(rules, case.events)
    row["replay_s"] = round(time.perf_counter() - t0, 3)
    tied = tied_incidents(records, case, need_touch=rules_name == "starter")
    row["tied"] = len(tied)
    row["detected"] = bool(tied)
    if not tied:
        return row
    chosen = tied[0]
    t0 = time.perf_counter()
    selection = Selection(incident_id=chosen["incident_id"])
    report = investigate(rules, case.events, selection, Options(), records=records).to_json()
    row["investigate_s"] = round(time.perf_counter() - t0, 3)

    causes, contributors = report["suspected_causes"], report["contributors"]
    rank = true_cause_rank(causes, case)
    pinning = [c["score"] for c in contributors if pins_target(c, case)]
    others = [c["score"] for c in contributors if not pins_target(c, case)]
    opened = parse_ts(chosen["opened"])
    suggestion = report["review"]["monitoring_suggestion"]
    backtest = suggestion["backtest"] if suggestion else None
    row.update(
        incident=chosen["incident_id"],
        rule=chosen["rule"],
        group=chosen["group"],
        ttd_ms=opened - truth.onset_ts,  # from the true onset
        report_ttd_ms=report["lags"]["time_to_detect_ms"],  # from the report's own estimate
        start_error_ms=parse_ts(report["anomaly"]["estimated_start"]) - truth.onset_ts,
        cause_rank=rank,
        cause_at_1=rank == 1,
        contributor_at_1=bool(contributors) and pins_target(contributors[0], case),
        # How close the ranking came to being wrong: the true cause's score minus the best
        # other candidate's (negative when it lost), and the same for contributors.
        cause_margin=_margin(causes, rank),
        runner_up=next((label(c["event_id"], case) for c in causes if c["rank"] != rank), None),
        contributor_margin=round(max(pinning) - max(others, default=0.0), 4) if pinning else None,
        suggested=suggestion is not None,
        suggestion_earlier=bool(backtest and backtest["opened"] and parse_ts(backtest["opened"]) < opened),
        suggestion_rule=suggestion["rule_text"] if suggestion else None,
        causes=[
            {k: c[k] for k in ("rank", "event_id", "kind", "score", "match", "proximity", "prior", "why")}
            | {"is": label(c["event_id"], case)}
            for c in causes
        ],
        contributors=[
            {k: c[k] for k in ("dimension", "value", "lift", "share", "score")} | {"pins": pins_target(c, case)}
            for c in contributors[:TOP]
        ],
        truth={"cause": truth.cause_event_id, "scope": truth.scope, "users": truth.users},
    )
    return row


def _margin(causes: list[dict[str, Any]], rank: int | None) -> float | None:
    if rank is None:
        return None
    true = causes[rank - 1]["score"]
    return round(true - max((c["score"] for c in causes if c["rank"] != rank), default=0.0), 4)


def run_case(args: tuple[str, int, float, tuple[str, ...]]) -> list[dict[str, Any]]:
    category, seed, rate, rule_sets = args
    case = build(category, seed=seed, rate=rate)
    rows = []
    for name in rule_sets:
        rules = tuple(case.rules) if name == "scenario" else _starter()
        rows.append(evaluate(name, rules, case, seed))
    return rows


_STARTER: tuple[CompiledRule, ...] | None = None


def _starter() -> tuple[CompiledRule, ...]:
    global _STARTER  # one load per worker process
    if _STARTER is None:
        _STARTER = starter_rules()
    return _STARTER


# ---- summary -----------------------------------------------------------------------------


def _pct(hits: int, n: int) -> str:
    return f"{hits}/{n} ({100 * hits / n:.0f}%)" if n else "—"


def _min(ms: float | None) -> str:
    return "—" if ms is None else f"{ms / MINUTE:.1f}m"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    hit = [r for r in rows if r["detected"]]
    ranks = [r["cause_rank"] for r in hit if r["cause_rank"] is not None]
    return {
        "n": len(rows),
        "detected": len(hit),
        "cause_at_1": sum(r["cause_at_1"] for r in hit),
        "mean_rank": round(statistics.fmean(ranks), 2) if ranks else None,
        "unlisted": sum(r["cause_rank"] is None for r in hit),
        "contributor_at_1": sum(r["contributor_at_1"] for r in hit),
        "median_ttd_ms": statistics.median(r["ttd_ms"] for r in hit) if hit else None,
        "median_start_error_ms": statistics.median(r["start_error_ms"] for r in hit) if hit else None,
        "suggested": sum(r["suggested"] for r in hit),
        "suggestion_earlier": sum(r["suggestion_earlier"] for r in hit),
        "median_investigate_s": round(statistics.median(r["investigate_s"] for r in hit), 2) if hit else None,
        "median_tied": statistics.median(r["tied"] for r in hit) if hit else None,
        "min_cause_margin": min((r["cause_margin"] for r in hit if r["cause_margin"] is not None), default=None),
        "min_contributor_margin": min(
            (r["contributor_margin"] for r in hit if r["contributor_margin"] is not None), default=None
        ),
    }


def table(groups: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    head = (
        "| rules | category | n | detected | cause@1 | mean rank | contrib@1 | median TTD | "
        "median start err | suggested (earlier) | median investigate s | tied | min cause margin | "
        "min contrib margin |"
    )
    lines = [head, "|" + "---|" * 2 + "---:|" * 12]
    for (rules, category), rows in groups.items():
        s = summarize(rows)
        d = s["detected"]
        rank = "—" if s["mean_rank"] is None else f"{s['mean_rank']:.2f}"
        if s["unlisted"]:
            rank += f" ({s['unlisted']} unlisted)"
        tied = "—" if rules == "scenario" or s["median_tied"] is None else f"{s['median_tied']:g}"
        lines.append(
            f"| {rules} | {category} | {s['n']} | {s['detected']} | {_pct(s['cause_at_1'], d)} | {rank} | "
            f"{_pct(s['contributor_at_1'], d)} | {_min(s['median_ttd_ms'])} | {_min(s['median_start_error_ms'])} | "
            f"{s['suggested']} ({s['suggestion_earlier']}) | {s['median_investigate_s'] or '—'} | {tied} | "
            f"{_num(s['min_cause_margin'])} | {_num(s['min_contributor_margin'])} |"
        )
    return "\n".join(lines)


def failures(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        where = f"{r['rules']} / {r['category']} / seed {r['seed']} (target {r['target']})"
        if not r["detected"]:
            out.append(f"- {where}: NOT DETECTED (no tied incident)")
            continue
        near = []
        if r["cause_at_1"] and r["cause_margin"] is not None and r["cause_margin"] < NEAR_MISS:
            near.append(f"cause margin {r['cause_margin']:.3f} over {r['runner_up']}")
        if r["contributor_at_1"] and r["contributor_margin"] is not None and r["contributor_margin"] < NEAR_MISS / 5:
            near.append(f"contributor margin {r['contributor_margin']:.4f}")
        if r["cause_at_1"] and r["contributor_at_1"] and not near:
            continue
        what = [f"near miss: {n}" for n in near]
        if not r["cause_at_1"]:
            what.append(f"true cause rank {r['cause_rank'] if r['cause_rank'] is not None else 'unlisted'}")
        if not r["contributor_at_1"]:
            what.append("top contributor misses the target")
        out.append(
            f"- {where}: {', '.join(what)}; incident {r['rule']} {r['group']}, "
            f"TTD {_min(r['ttd_ms'])}, estimated start {_min(r['start_error_ms'])} vs true onset"
        )
        for c in r["causes"][:TOP]:
            out.append(
                f"    cause #{c['rank']} [{c['is']}] {c['event_id']} {c['kind']} score {c['score']:.3f} "
                f"(match {c['match']:.2f}, prox {c['proximity']:.2f}, prior {c['prior']:g}): {c['why']}"
            )
        truth_row = next((c for c in r["causes"][TOP:] if c["is"] == "TRUE"), None)
        if truth_row:
            out.append(
                f"    ... true cause #{truth_row['rank']} {truth_row['event_id']} score {truth_row['score']:.3f} "
                f"(match {truth_row['match']:.2f}, prox {truth_row['proximity']:.2f}): {truth_row['why']}"
            )
        for c in r["contributors"]:
            out.append(
                f"    contributor {c['dimension']}={c['value']} score {c['score']:.3f} lift {c['lift']:g} "
                f"share {c['share']:.2f}{' [pins]' if c['pins'] else ''}"
            )
    return "\n".join(out) if out else "(none)"


# ---- families built unlike firebreak.synthetic ----------------------------------------------


def evaluate_family(family: str, seed: int) -> list[dict[str, Any]]:
    log = investigate_families.build(family, seed)
    t0 = time.perf_counter()
    records = run_events(log.rules, log.events)
    replay_s = round(time.perf_counter() - t0, 3)
    rows = []
    for truth in log.truths:
        row: dict[str, Any] = {
            "family": family,
            "seed": seed,
            "incident_of": truth.family,
            "target": truth.value,
            "events": len(log.events),
            "replay_s": replay_s,
        }
        tied = sorted(
            (
                i
                for i in list_incidents(records)
                if i["rule"] == truth.rule
                and i["group"] == truth.group
                and truth.onset_ts - TIE_BEFORE_MS <= parse_ts(i["opened"]) <= truth.end_ts
            ),
            key=lambda i: (parse_ts(i["opened"]), i["incident_id"]),
        )
        row["detected"] = bool(tied)
        rows.append(row)
        if not tied:
            continue
        t0 = time.perf_counter()
        report = investigate(
            log.rules,
            log.events,
            Selection(incident_id=tied[0]["incident_id"]),
            Options(suggest=False),
            records=records,
        ).to_json()
        row["investigate_s"] = round(time.perf_counter() - t0, 3)
        causes, contributors = report["suspected_causes"], report["contributors"]
        rank = next((c["rank"] for c in causes if c["event_id"] == truth.cause_event_id), None)

        def pins(c: dict[str, Any], scope: frozenset = truth.scope) -> bool:
            found = {(c["dimension"], c["value"])} | {(a["dimension"], a["value"]) for a in c.get("same_as", [])}
            return bool(found & scope)

        start_error = parse_ts(report["anomaly"]["estimated_start"]) - truth.onset_ts
        others = [c["score"] for c in causes if c["rank"] != rank]
        row.update(
            rule=truth.rule,
            group=truth.group,
            ttd_ms=parse_ts(tied[0]["opened"]) - truth.onset_ts,
            start_error_ms=start_error,
            ramp_ms=truth.ramp_ms or None,
            start_error_of_ramp=round(abs(start_error) / truth.ramp_ms, 3) if truth.ramp_ms else None,
            shape=report["anomaly"].get("shape"),
            cause_rank=rank,
            cause_at_1=rank == 1,
            cause_margin=round(causes[rank - 1]["score"] - max(others, default=0.0), 4) if rank else None,
            contributor_at_1=bool(contributors) and pins(contributors[0]),
            causes=[
                {k: c[k] for k in ("rank", "event_id", "kind", "score", "match", "proximity", "prior", "why")}
                for c in causes[:TOP]
            ],
            contributors=[
                {k: c[k] for k in ("dimension", "value", "lift", "share", "score")} | {"pins": pins(c)}
                for c in contributors[:TOP]
            ],
        )
    return rows


def run_family(args: tuple[str, int]) -> list[dict[str, Any]]:
    return evaluate_family(*args)


def family_table(rows: list[dict[str, Any]], families: list[str]) -> str:
    lines = [
        "| family | incidents | detected | cause@1 | contrib@1 | median start err | worst start err / ramp | "
        "min cause margin | median events | median investigate s |",
        "|---|" + "---:|" * 9,
    ]
    for fam in families:
        rs = [r for r in rows if r["family"] == fam]
        hit = [r for r in rs if r["detected"]]
        d = len(hit)
        ramps = [r["start_error_of_ramp"] for r in hit if r.get("start_error_of_ramp") is not None]
        margins = [r["cause_margin"] for r in hit if r.get("cause_margin") is not None and r["cause_at_1"]]
        lines.append(
            f"| {fam} | {len(rs)} | {d} | {_pct(sum(r['cause_at_1'] for r in hit), d)} | "
            f"{_pct(sum(r['contributor_at_1'] for r in hit), d)} | "
            f"{_min(statistics.median(r['start_error_ms'] for r in hit) if hit else None)} | "
            f"{f'{max(ramps):.0%}' if ramps else '—'} | {_num(min(margins) if margins else None)} | "
            f"{statistics.median(r['events'] for r in rs):.0f} | "
            f"{round(statistics.median(r['investigate_s'] for r in hit), 2) if hit else '—'} |"
        )
    return "\n".join(lines)


def family_failures(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        where = f"{r['family']} / seed {r['seed']} / {r['incident_of']} ({r['target']})"
        if not r["detected"]:
            out.append(f"- {where}: NOT DETECTED")
            continue
        ramp_bad = r.get("start_error_of_ramp") is not None and r["start_error_of_ramp"] > RAMP_TOLERANCE
        if r["cause_at_1"] and r["contributor_at_1"] and not ramp_bad:
            continue
        what = []
        if not r["cause_at_1"]:
            what.append(f"true cause rank {r['cause_rank']}")
        if not r["contributor_at_1"]:
            what.append("top contributor misses the target")
        if ramp_bad:
            what.append(f"start error {r['start_error_of_ramp']:.0%} of the ramp")
        out.append(f"- {where}: {', '.join(what)}; start err {_min(r['start_error_ms'])} ({r['shape']})")
        for c in r["causes"]:
            out.append(
                f"    cause #{c['rank']} {c['event_id']} {c['kind']} score {c['score']:.3f} "
                f"(match {c['match']:.2f}, prox {c['proximity']:.2f}): {c['why']}"
            )
        for c in r["contributors"]:
            out.append(
                f"    contributor {c['dimension']}={c['value']} score {c['score']:.3f} lift {c['lift']:g} "
                f"share {c['share']:.2f}{' [pins]' if c['pins'] else ''}"
            )
    return "\n".join(out) if out else "(none)"


RAMP_TOLERANCE = 0.15  # a drift's start is right within this fraction of its ramp


def main_families(a: argparse.Namespace) -> int:
    families = list(investigate_families.FAMILIES) if a.families == ["all"] else a.families
    work = [(fam, seed) for fam in families for seed in range(1, a.seeds + 1)]
    t0 = time.perf_counter()
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs) as pool:
            results = list(pool.map(run_family, work))
    else:
        results = []
        for item in work:
            results.append(run_family(item))
            if not a.json:
                print(f"  {item[0]} seed {item[1]} done ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    rows = [row for rs in results for row in rs]
    elapsed = time.perf_counter() - t0
    out = {"seeds": a.seeds, "families": families, "elapsed_s": round(elapsed, 1), "rows": rows}
    data = orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n"
    if a.save:
        Path(a.save).write_bytes(data)
    if a.json:
        sys.stdout.buffer.write(data)
        return 0
    print(f"families, seeds 1..{a.seeds}, {len(work)} logs, {elapsed:.0f}s\n")
    print(family_table(rows, families))
    print(f"\nFailures (ramps: start error over {RAMP_TOLERANCE:.0%} of the ramp counts as one):")
    print(family_failures(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="seeds 1..N per category (default 10)")
    p.add_argument("--rate", type=float, default=6.0, help="inference events per second (default 6.0)")
    p.add_argument("--rules", choices=RULE_SETS, nargs="+", default=list(RULE_SETS), help="rule sets (default both)")
    p.add_argument("--categories", choices=CATEGORIES, nargs="+", default=list(CATEGORIES))
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1; >1 inflates the timings)")
    p.add_argument("--json", action="store_true", help="print every row and the summaries as JSON")
    p.add_argument("--save", metavar="FILE", help="also write the JSON to FILE")
    p.add_argument(
        "--families",
        nargs="+",
        choices=[*investigate_families.FAMILIES, "all"],
        help="evaluate on the families built unlike firebreak.synthetic instead (all: every one)",
    )
    a = p.parse_args(argv)
    if a.families:
        return main_families(a)

    work = [(cat, seed, a.rate, tuple(a.rules)) for cat in a.categories for seed in range(1, a.seeds + 1)]
    t0 = time.perf_counter()
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs) as pool:
            results = list(pool.map(run_case, work))
    else:
        results = []
        for item in work:
            results.append(run_case(item))
            if not a.json:
                print(f"  {item[0]} seed {item[1]} done ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    rows = [row for rs in results for row in rs]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rules in a.rules:
        for cat in a.categories:
            groups[(rules, cat)] = [r for r in rows if r["rules"] == rules and r["category"] == cat]
    elapsed = time.perf_counter() - t0

    summary = [{"rules": k[0], "category": k[1], **summarize(v)} for k, v in groups.items()]
    out = {"seeds": a.seeds, "rate": a.rate, "elapsed_s": round(elapsed, 1), "summary": summary, "rows": rows}
    data = orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n"
    if a.save:
        Path(a.save).write_bytes(data)
    if a.json:
        sys.stdout.buffer.write(data)
        return 0
    print(f"seeds 1..{a.seeds}, rate {a.rate}/s, {len(work)} logs, {elapsed:.0f}s\n")
    print(table(groups))
    for rules in a.rules:
        limits = f"cause margin < {NEAR_MISS}, contributor margin < {NEAR_MISS / 5}"
        print(f"\nFailures and near misses ({rules}; {limits}):")
        print(failures([r for r in rows if r["rules"] == rules]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
