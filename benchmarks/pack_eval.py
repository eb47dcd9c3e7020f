"""How does a rule pack do on traffic it was not tuned on? Precision, recall, false incidents
per day and time to detect over the families of engine/firebreak/families.py.

    python benchmarks/pack_eval.py --jobs 2                       # the starter pack, 20 seeds
    python benchmarks/pack_eval.py --rules candidate/ --families heavy firehose --seeds 5
    python benchmarks/pack_eval.py --quick                        # tiny: what the unit test runs

For every family and seed 1..N the generator's events are fed to the engine (in process,
no files) with the pack, and every incident opened is tied to the injections:

- **detection**: opened within [onset − 5 min, end + 15 min] of an injection, its group
  pointing at it (the injection's tenant / model / service / template, or one of its
  accounts) and of the same category;
- **side effect**: the same but of another category (an attack's tenant also shows in a
  cost rule, say), or an incident whose evidence holds events the injection added (an
  attacker's calls tripling a quiet service's spend) — neither a detection nor a false
  incident;
- **false**: pointing at no injection.

Per family: injections caught / injected (recall), detections / (detections + false)
(precision), false incidents per simulated day — of all rules and of the rules written
sev1/sev2 — and time to detect (first detection − onset) per kind, median and worst. The
misses and the false incidents are listed. ``--json`` writes everything.

Beside the raw recall, **caught / detectable**: a sustained leak whose PII answers noise
alone gives its tenant, in a window as long as the leak, more often than once per
FLOOR_DAYS (`evidence`) is below the noise floor — no rule catches it without paging on
noise as often — and is listed apart with its numbers instead of among the misses.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from firebreak.adapters.demo import pack_fingerprint
from firebreak.adapters.drive import BATCH_LINES, Driver, default_engine
from firebreak.adapters.rule_files import read_companion_sources, read_rule_sources
from firebreak.adapters.starter_pack import starter_companion_sources, starter_rule_sources
from firebreak.core import Engine, Event
from firebreak.core.cases import CaseBook
from firebreak.core.significance import poisson_upper
from firebreak.dsl import load_rules
from firebreak.families import FAMILIES, MINUTE, Truth, days, expected_events, generate, quick

MATCH_BEFORE_MS = 5 * MINUTE
MATCH_AFTER_MS = 15 * MINUTE
# The noise floor: an injection whose evidence noise alone gives its group more often than once
# per FLOOR_DAYS is below it — no rule catches it without paging on noise as often. 10,000
# group-days is what the starter pack's sev1 tenant rules are designed to (rules/data_leakage.rules).
FLOOR_DAYS = 10_000
DAY_S = 86_400


def run_one(
    family_name: str,
    seed: int,
    sources: dict[str, str],
    tiny: bool,
    engine: str = "native",
    companions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One (family, seed): its truths, its incidents and its pages, tied. ``engine``: ``native``
    (the events as JSON lines, in batches, through engine/firebreak/native) or ``python`` (each
    event to the core); the records are the same (tests/unit/native/test_native_differential.py).
    ``companions``: policy.toml (who is paged, [grouping]) and vocabulary beside the rules."""
    family = FAMILIES[family_name]
    if tiny:
        family = quick(family)
    rules, problems = load_rules(sources, companions or {})
    if problems:
        raise SystemExit("\n".join(p.render() if hasattr(p, "render") else str(p) for p in problems))
    severity = {rule.name: rule.severity for rule in rules}
    began = time.perf_counter()
    run = generate(family, seed)
    generated = time.perf_counter() - began
    began = time.perf_counter()
    records = _replay(rules, run.events, engine)
    opened = [r for r in records if r["type"] == "incident.opened"]
    replayed = time.perf_counter() - began
    reads = {rule.name: rule.arg[-1] if rule.arg else None for rule in rules}
    caused = [_caused(truth, run.events) for truth in run.truths]
    incidents = []
    for record in opened:
        at = _ms(record["ts"])
        kind, truth_index = _tie(record, at, run.truths, caused, reads)
        incidents.append(
            {
                "rule": record["rule"],
                "rule_severity": severity[record["rule"]],
                "category": record["category"],
                "group": record["group"],
                "opened": at - run.start_ms,
                "tie": kind,
                "truth": truth_index,
            }
        )
    tied = {r["incident_id"]: inc for r, inc in zip(opened, incidents, strict=True)}
    pages = _pages(rules, records, run.events, tied)
    truths = []
    for i, truth in enumerate(run.truths):
        hits = [inc for inc in incidents if inc["tie"] == "detection" and inc["truth"] == i]
        first = min(hits, key=lambda inc: inc["opened"]) if hits else None
        truths.append(
            {
                "kind": truth.kind,
                "category": truth.category,
                "target": f"{truth.dimension}={truth.value}",
                "users": list(truth.users),
                "size": truth.size,
                "onset": truth.onset_ts - run.start_ms,
                "evidence": evidence(
                    truth.kind, truth.size, truth.trials, truth.end_ts - truth.onset_ts, family.pii_noise
                ),
                "detected_by": first["rule"] if first else None,
                "ttd_ms": first["opened"] - (truth.onset_ts - run.start_ms) if first else None,
            }
        )
    return {
        "family": family_name,
        "seed": seed,
        "events": len(run.events),
        "days": days(family),
        "generate_s": generated,
        "replay_s": replayed,
        "truths": truths,
        "incidents": incidents,
        "pages": pages,
    }


def _pages(
    rules: list, records: list[dict[str, Any]], events: list[dict[str, Any]], tied: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The pages the records' cases send (core/cases.py, as the demo),
    each tied as the incident that made it page: a detection's or side effect's truth, or false."""
    book = CaseBook.for_rules(rules)
    out = []
    for record in records:
        for case in book.process(record):
            if case["type"] in ("case.opened", "case.updated") and case.get("page"):
                incident = tied.get(case["incident_id"], {"tie": "false", "truth": None})
                out.append(
                    {
                        "case_id": case["case_id"],
                        "rule": case["rule"],
                        "tie": incident["tie"],
                        "truth": incident["truth"],
                    }
                )
    return out


def evidence(kind: str, size: int, trials: int, span_ms: int, noise: float) -> dict[str, Any] | None:
    """What a sustained leak left against what noise alone gives its tenant: ``size`` PII
    answers among the tenant's ``trials`` answers over ``span_ms``, each flagged by noise with
    probability ``noise``. ``p_value``: P(X ≥ size), X ~ Poisson(noise × trials) — the chance
    that one span-long window of noise holds as many; ``noise_every_days``: how often noise
    alone brings a sliding span-long window of the tenant to ``size`` (a flagged answer
    arriving while it holds size − 1: rate × noise × P(X = size − 1), as
    benchmarks/noise_budget.py counts crossings; None: never). ``detectable``: at most once per
    FLOOR_DAYS. None for the other kinds (their evidence is not assessed: counted detectable)."""
    if kind != "pii_leak" or trials <= 0 or span_ms <= 0:
        return None
    mean = noise * trials
    if size <= 0 or mean <= 0:
        return {
            "trials": trials,
            "expected": mean,
            "p_value": 1.0 if size <= 0 else 0.0,
            "noise_every_days": None if size > 0 else 0.0,
            "detectable": size > 0,
        }
    before = math.exp((size - 1) * math.log(mean) - mean - math.lgamma(size)) if size > 1 else math.exp(-mean)
    per_day = trials / (span_ms / 1000) * noise * before * DAY_S
    every = 1 / per_day if per_day > 0 else None
    return {
        "trials": trials,
        "expected": mean,
        "p_value": poisson_upper(size, mean),
        "noise_every_days": every,
        "detectable": every is None or every >= FLOOR_DAYS,
    }


def _detectable(truth: dict[str, Any]) -> bool:
    return truth.get("evidence") is None or truth["evidence"]["detectable"]


def _replay(rules: list, events: list[dict[str, Any]], engine: str) -> list[dict[str, Any]]:
    """Every record of one replay of ``events`` (in time order) through ``rules``."""
    if engine == "python":
        core = Engine(rules)
        records = []
        for data in events:
            records += core.process(Event(data["event_id"], data["ts"], "inference", data))
        return records + core.finish()
    driver = Driver(rules, engine="native")
    records = []
    for i in range(0, len(events), BATCH_LINES):
        fed = driver.feed_lines([orjson.dumps(data) for data in events[i : i + BATCH_LINES]])
        if fed.bad or fed.late or fed.events != min(BATCH_LINES, len(events) - i):
            raise RuntimeError(f"the native engine refused family events: {fed.bad[:3]} {fed.late[:3]}")
        records += fed.records
    return records + driver.finish()


def _ms(ts: str) -> int:
    from firebreak.core import parse_ts

    return parse_ts(ts)


# What an injection changes in the ordinary events it alters (`Truth.alters`): an incident of
# a rule reading one of these fields, with such events in its evidence, is the injection's.
CHANGES = {
    "cost": {"tokens_in", "tokens_out", "cost_usd", "latency_ms"},
    "hallucination": {"hallucination", "quality", "groundedness"},
    "pii_leak": {"pii"},
    "quality_ramp": {"quality"},
}


def _caused(truth: Truth, events: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """(ids of the events the injection added, ids of those it altered)."""
    return {e["event_id"] for e in events if truth.added(e)}, {e["event_id"] for e in events if truth.alters(e)}


def _tie(
    record: dict[str, Any],
    at: int,
    truths: list[Truth],
    caused: list[tuple[set[str], set[str]]] | None = None,
    reads: dict[str, str | None] | None = None,
) -> tuple[str, int | None]:
    """``caused[i]``: the events truth i added and altered (`_caused`); ``reads``: rule →
    the field its metric reads. An incident whose evidence holds events the injection added,
    or altered in a field its rule reads, is the injection's — a side effect if not a
    detection — also when it opens after the matching span (a 30m window still holding a
    burst's answers when a later noise one tips it over)."""
    side = None
    added = any(e.startswith("x") for e in record["evidence"])  # events an injection added
    field = (reads or {}).get(record.get("rule", ""))
    for i, truth in enumerate(truths):
        its_events = caused is not None and (
            any(e in caused[i][0] for e in record["evidence"])
            or (field in CHANGES.get(truth.kind, ()) and any(e in caused[i][1] for e in record["evidence"]))
        )
        if not truth.onset_ts - MATCH_BEFORE_MS <= at <= truth.end_ts + MATCH_AFTER_MS:
            if its_events and side is None:
                side = i
            continue
        if truth.touches(record["group"]):
            if truth.category == record["category"]:
                return "detection", i
            side = i if side is None else side
        elif (its_events or (added and truth.kind in {"attacker", "pii_burst"})) and side is None:
            side = i  # an attacker's calls tripling a quiet service's spend; a cost explosion's
            # doubled answers making a model's chat slow
    return ("side effect", side) if side is not None else ("false", None)


# ---- the summary --------------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]], severe: int = 2) -> list[dict[str, Any]]:
    by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_family[run["family"]].append(run)
    out = []
    for name, family_runs in by_family.items():
        truths = [t for run in family_runs for t in run["truths"]]
        incidents = [i for run in family_runs for i in run["incidents"]]
        sim_days = sum(run["days"] for run in family_runs)
        caught = [t for t in truths if t["detected_by"] is not None]
        detectable = [t for t in truths if _detectable(t)]
        detections = sum(1 for i in incidents if i["tie"] == "detection")
        false = [i for i in incidents if i["tie"] == "false"]
        false_severe = [i for i in false if i["rule_severity"] <= severe]
        pages = [p for run in family_runs for p in run.get("pages", ())]
        true_pages = [p for p in pages if p["tie"] != "false"]
        ttd: dict[str, list[int]] = defaultdict(list)
        for t in caught:
            ttd[t["kind"]].append(t["ttd_ms"])
        out.append(
            {
                "family": name,
                "note": FAMILIES[name].note,
                "runs": len(family_runs),
                "events": sum(run["events"] for run in family_runs),
                "days": sim_days,
                "injected": len(truths),
                "caught": len(caught),
                "recall": len(caught) / len(truths) if truths else None,
                "detectable": len(detectable),
                "caught_detectable": sum(1 for t in detectable if t["detected_by"] is not None),
                "incidents": len(incidents),
                "detections": detections,
                "side_effects": sum(1 for i in incidents if i["tie"] == "side effect"),
                "false": len(false),
                "false_severe": len(false_severe),
                "precision": detections / (detections + len(false)) if detections + len(false) else None,
                "false_per_day": len(false) / sim_days,
                "false_severe_per_day": len(false_severe) / sim_days,
                # one problem, one page (docs/response.md#cases): pages of the injected problems (their
                # detections and side effects) per problem, and pages of nothing per day
                "pages": len(pages),
                "pages_per_problem": len(true_pages) / len(truths) if truths else None,
                "false_pages_per_day": (len(pages) - len(true_pages)) / sim_days,
                "ttd": {
                    kind: {"median_s": statistics.median(v) / 1000, "max_s": max(v) / 1000}
                    for kind, v in sorted(ttd.items())
                },
                "misses": [
                    {
                        "seed": run["seed"],
                        **{k: t[k] for k in ("kind", "target", "users", "size", "onset")},
                        "evidence": t.get("evidence"),
                    }
                    for run in family_runs
                    for t in run["truths"]
                    if t["detected_by"] is None and _detectable(t)
                ],
                "below_floor": [
                    {
                        "seed": run["seed"],
                        **{k: t[k] for k in ("kind", "target", "size", "onset", "evidence")},
                        "caught": t["detected_by"] is not None,
                    }
                    for run in family_runs
                    for t in run["truths"]
                    if not _detectable(t)
                ],
                "false_by_rule": dict(Counter(i["rule"] for i in false).most_common()),
                "replay_events_per_s": sum(run["events"] for run in family_runs)
                / max(1e-9, sum(run["replay_s"] for run in family_runs)),
            }
        )
    return out


def render(summary: list[dict[str, Any]]) -> str:
    rows = [
        (
            "family",
            "runs",
            "events",
            "sim days",
            "caught",
            "recall",
            "caught / detectable",
            "precision",
            "false/day",
            "sev1-2 false/day",
            "side eff.",
            "pages/problem",
            "false pages/day",
            "time to detect (median / worst)",
        )
    ]
    for s in summary:
        ttd = "; ".join(f"{k} {_dur(v['median_s'])} / {_dur(v['max_s'])}" for k, v in s["ttd"].items()) or "-"
        rows.append(
            (
                s["family"],
                str(s["runs"]),
                f"{s['events']:,}",
                f"{s['days']:.2f}",
                f"{s['caught']}/{s['injected']}",
                _pct(s["recall"]),
                _detectable_cell(s),
                _pct(s["precision"]),
                f"{s['false_per_day']:.2f}",
                f"{s['false_severe_per_day']:.2f}",
                str(s["side_effects"]),
                _ratio(s.get("pages_per_problem")),
                f"{s.get('false_pages_per_day', 0):.2f}",
                ttd,
            )
        )
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("---" for _ in rows[0]) + "|")
    for s in summary:
        if s["misses"]:
            lines.append("")
            lines.append(
                f"missed in {s['family']}: "
                + "; ".join(f"seed {m['seed']} {m['kind']} {m['target']}" + _miss_detail(m) for m in s["misses"])
            )
        if s.get("below_floor"):
            lines.append("")
            lines.append(
                f"below the noise floor in {s['family']} (noise alone gives as many in that tenant more often "
                f"than once per {FLOOR_DAYS:,} days): "
                + "; ".join(
                    f"seed {m['seed']} {m['kind']} {m['target']}"
                    + _evidence_detail(m)
                    + (" caught" if m["caught"] else " missed")
                    for m in s["below_floor"]
                )
            )
        if s["false_by_rule"]:
            lines.append("")
            lines.append(f"false in {s['family']}: " + ", ".join(f"{r} {n}" for r, n in s["false_by_rule"].items()))
    return "\n".join(lines)


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _detectable_cell(s: dict[str, Any]) -> str:
    if "detectable" not in s:
        return "-"
    return f"{s['caught_detectable']}/{s['detectable']}"


def _miss_detail(miss: dict[str, Any]) -> str:
    if miss["kind"] == "pii_burst":
        return f" ({miss['size']} answers to {miss['users'][0]})"
    if miss["kind"] == "pii_leak":
        return _evidence_detail(miss)
    return ""


def _evidence_detail(miss: dict[str, Any]) -> str:
    ev = miss.get("evidence")
    if not ev:
        return f" ({miss['size']} PII answers in 30 min)"
    every = "never" if ev["noise_every_days"] is None else f"once per {_days(ev['noise_every_days'])}"
    return (
        f" ({miss['size']} PII answers of {ev['trials']:,} in 30 min, {ev['expected']:.2f} from noise, "
        f"p = {ev['p_value']:.1e}: noise gives as many {every})"
    )


def _days(d: float) -> str:
    return f"{d:.1f} days" if d < 10 else f"{d:,.0f} days"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _dur(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.1f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def command_line(argv: list[str]) -> str:
    """The command as the README shows it: without where its outputs went."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in {"--json", "--demo-summary", "--from-json"}:
            skip = True
        elif not arg.startswith(("--json=", "--demo-summary=", "--from-json=")):
            shown.append(arg)
    return " ".join(["python benchmarks/pack_eval.py", *shown])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", help="a rules directory or file (default: the starter pack)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1, help="seeds FIRST..FIRST+SEEDS-1 (default 1)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument(
        "--engine",
        choices=("native", "python"),
        default=None,
        help="the engine replaying the families (default: native where it is built; the records are the same)",
    )
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--quick", action="store_true", help="tiny families and 2 seeds (seconds, for tests)")
    parser.add_argument("--json", help="write the runs and the summary here")
    parser.add_argument("--from-json", metavar="PATH", help="score the runs a --json file holds instead of running")
    parser.add_argument(
        "--demo-summary",
        metavar="PATH",
        help="write the numbers `firebreak demo` prints (engine/firebreak/adapters/pack_evaluation.json)",
    )
    args = parser.parse_args(argv)
    sources = read_rule_sources([args.rules]) if args.rules else starter_rule_sources()
    companions = read_companion_sources([args.rules]) if args.rules else starter_companion_sources()
    seeds = 2 if args.quick and args.seeds == 20 else args.seeds
    tasks = [(name, seed) for name in args.families for seed in range(args.first_seed, args.first_seed + seeds)]
    planned = sum(expected_events(quick(FAMILIES[n]) if args.quick else FAMILIES[n]) for n, _ in tasks)
    engine = args.engine or default_engine()
    if not args.from_json:
        print(f"{len(tasks)} runs, ~{planned:,} events, {args.jobs} job(s), {engine} engine", file=sys.stderr)
    began = time.perf_counter()
    if args.from_json:
        saved = orjson.loads(Path(args.from_json).read_bytes())
        runs = [r for r in saved["runs"] if r["family"] in args.families]
        seeds = len({r["seed"] for r in runs})
    elif args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            # the biggest runs first, so that the pool is not left waiting on one at the end
            order = sorted(tasks, key=lambda t: -expected_events(FAMILIES[t[0]]))
            futures = [
                pool.submit(run_one, name, seed, sources, args.quick, engine, companions) for name, seed in order
            ]
            runs = [f.result() for f in futures]
    else:
        runs = [run_one(name, seed, sources, args.quick, engine, companions) for name, seed in tasks]
    runs.sort(key=lambda r: (args.families.index(r["family"]), r["seed"]))
    summary = summarize(runs)
    wall = saved["wall_s"] if args.from_json else time.perf_counter() - began
    print(render(summary))
    print(
        f"\n{len(runs)} runs, {sum(r['events'] for r in runs):,} events in {wall:.0f} s wall "
        f"({args.jobs} job(s), {saved.get('engine', '?') if args.from_json else engine} engine)"
    )
    if args.json:
        Path(args.json).write_bytes(
            orjson.dumps(
                {
                    "summary": summary,
                    "runs": runs,
                    "wall_s": wall,
                    "engine": saved.get("engine") if args.from_json else engine,
                },
                option=orjson.OPT_INDENT_2,
            )
        )
    if args.demo_summary:
        rules, _ = load_rules(sources)
        compact = {
            "pack": pack_fingerprint(rules),
            "command": command_line(argv if argv is not None else sys.argv[1:]),
            "seeds": seeds,
            "wall_s": round(wall),
            "families": [
                {
                    k: s[k]
                    for k in (
                        "family",
                        "note",
                        "runs",
                        "events",
                        "days",
                        "injected",
                        "caught",
                        "detectable",
                        "caught_detectable",
                        "precision",
                        "false_per_day",
                        "false_severe_per_day",
                        "pages_per_problem",
                        "false_pages_per_day",
                    )
                }
                | {"ttd_median_s": {k: v["median_s"] for k, v in s["ttd"].items()}}
                for s in summary
            ],
        }
        Path(args.demo_summary).write_bytes(orjson.dumps(compact, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
