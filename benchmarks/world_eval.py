"""Evaluate a rule pack on randomized worlds nobody tuned it for (issue 30).

    python benchmarks/world_eval.py --jobs 2                        # the starter pack, development seeds 0-49
    python benchmarks/world_eval.py --seeds 0-9 --rules candidate/  # a candidate pack, fewer seeds
    python benchmarks/world_eval.py --seeds 2000-2049 --held-out    # ONLY at the end of a tuning session

Each seed's world (benchmarks/worlds.py) is replayed through the pack in process (the library
API benchmarks/pack_eval.py uses: ``Driver(rules, engine="native")`` fed JSON lines), and every
incident opened is matched to the injected truths:

- **match**: the incident's category is one of the truth's categories (its kind's primary
  category and the ones its effect legitimately shows in: a cost explosion's longer answers
  are slower, quality_degradation); the incident's window at opening, [ts − window, ts),
  overlaps [truth start, truth end + GRACE_MS) (GRACE_MS: reports come minutes after the
  answers they are about); and every field of the incident's group has a value seen on the
  events the injection added or whose distribution it changed (an empty group matches any).
- an incident is **true** if it matches at least one truth, **false** otherwise; a truth is
  **caught** if at least one incident matches it.

Reported: recall by size class (obvious / subtle / below_floor: benchmarks/worlds.py's
``size_truth``) and by kind, precision per severity (the highest severity the incident reached,
escalations included; sev1+sev2 together), false incidents a day per severity, and per rule
its incidents, true and false (which rules cost precision). ``--json`` writes everything.

The held-back seeds (worlds.HELD_OUT_RANGES: 11000-11049, and 1000-1049 to 10000-10049 whose
results were seen) are refused unless ``--held-out`` is passed: they are run
once, at the end of a tuning session, never while tuning (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from firebreak.adapters.drive import BATCH_LINES, Driver, default_engine  # noqa: E402
from firebreak.adapters.rule_files import read_companion_sources, read_rule_sources  # noqa: E402
from firebreak.adapters.starter_pack import starter_companion_sources, starter_rule_sources  # noqa: E402
from firebreak.core import parse_ts  # noqa: E402
from firebreak.dsl import load_rules  # noqa: E402
from worlds import DEV_SEEDS, DIMS, MINUTE, World, generate, held_out_ranges_text, is_held_out  # noqa: E402

GRACE_MS = 15 * MINUTE
CLASSES = ("obvious", "subtle", "below_floor")
SEVERITIES = ("sev1", "sev2", "sev3", "sev4")


def replay(rules: list, world: World, engine: str = "native", refused: Counter | None = None) -> list[dict[str, Any]]:
    """Every record of ``world``'s events replayed through ``rules`` with the default options a
    user gets. A world's events are all valid: an invalid one is the generator's bug (raised).
    Events the engine refuses as late or ahead (the maximum skew, after a gap in a quiet world)
    are counted in ``refused`` by the first word of their reason."""
    refused = Counter() if refused is None else refused
    driver = Driver(rules, engine=engine)
    records: list[dict[str, Any]] = []
    lines = [orjson.dumps(e) for e in world.events]
    for i in range(0, len(lines), BATCH_LINES):
        chunk = lines[i : i + BATCH_LINES]
        fed = driver.feed_lines(chunk)
        if fed.bad:
            raise RuntimeError(f"the engine refused world events as invalid: {fed.bad[:3]}")
        refused.update(reason.split(":", 1)[0] for _, reason in fed.late)
        records += fed.records
    return records + driver.finish()


def incidents_of(records: list[dict[str, Any]], severity: dict[str, int]) -> list[dict[str, Any]]:
    """One entry per opened incident: rule, category, group, opening time, its window, and the
    highest severity it reached (opened or escalated)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["type"] == "incident.opened":
            out[r["incident_id"]] = {
                "id": r["incident_id"],
                "rule": r["rule"],
                "rule_severity": severity.get(r["rule"]),
                "category": r["category"],
                "group": r["group"],
                "opened": parse_ts(r["ts"]),
                "window_start": parse_ts(r["window"]["start"]),
                "window_end": parse_ts(r["window"]["end"]),
                "severity": r["severity"],
                "on_reports": any("-r" in e for e in r.get("evidence", ())),  # report events: w{seed}-r{n}
            }
        elif r["type"] == "incident.escalated" and r["incident_id"] in out:
            inc = out[r["incident_id"]]
            inc["severity"] = min(inc["severity"], r["severity"])  # "sev1" < "sev2"
    return list(out.values())


def matches(incident: dict[str, Any], truth: dict[str, Any]) -> bool:
    """Category + overlapping time + scope (module docstring). ``truth``: Truth.to_json()."""
    if incident["category"] not in truth["categories"]:
        return False
    if not (incident["window_start"] < truth["end"] + GRACE_MS and incident["window_end"] > truth["start"]):
        return False
    affected = truth["affected"]
    for field, value in incident["group"].items():
        if field not in DIMS or value not in affected.get(field, ()):
            return False
    return True


def score(world_truths: list[dict[str, Any]], incidents: list[dict[str, Any]]) -> None:
    """Ties incidents and truths in place: incident["truths"], truth["caught_by"]."""
    for t in world_truths:
        t["caught_by"] = []
    for inc in incidents:
        inc["truths"] = [t["id"] for t in world_truths if matches(inc, t)]
        for tid in inc["truths"]:
            t = world_truths[tid]
            t["caught_by"].append(
                {"rule": inc["rule"], "severity": inc["severity"], "ttd_ms": inc["opened"] - t["start"]}
            )


CAUSES = ("reports", "bots", "after_gap", "cold_start", "other")
COLD_MS = 24 * 3_600_000
GAP_MS = 6 * 3_600_000


def tag_false(world: World, incidents: list[dict[str, Any]]) -> None:
    """What was going on where and when each false incident opened — a hint for whoever tunes,
    not part of the score. ``cause``, the first that applies: **reports** (its evidence is user
    reports), **bots** (bots' calls are at least half of the group's calls in its window),
    **after_gap** (an outage or lull of its service, or of everything, ended within 6 h before
    it opened), **cold_start** (it opened within 24 h of the deployment, of its tenant's
    arrival or of its model's introduction), else **other**."""
    calls = [e for e in world.events if "type" not in e]
    times = [e["ts"] for e in calls]
    arrives = {t["name"]: t["arrives"] for t in world.meta["tenants"]}
    since = world.meta["models"]
    gaps = [(b, s) for _, b, s, _ in world.meta["lulls"]] + [(b, s) for _, b, s in world.meta["outages"]]
    for inc in incidents:
        if inc["truths"]:
            continue
        group = inc["group"]
        if inc.get("on_reports"):
            inc["cause"] = "reports"
            continue
        lo, hi = bisect_left(times, inc["window_start"]), bisect_left(times, inc["window_end"])
        mine = [e for e in calls[lo:hi] if all(e.get(k) == v for k, v in group.items())]
        bots = sum(1 for e in mine if "-bot" in e["user"])
        at = inc["opened"]
        starts = [
            world.start,
            arrives.get(group.get("tenant", ""), world.start),
            since.get(group.get("model", ""), world.start),
        ]
        if mine and bots * 2 >= len(mine):
            inc["cause"] = "bots"
        elif any(0 <= at - b <= GAP_MS and (s is None or s == group.get("service", s)) for b, s in gaps):
            inc["cause"] = "after_gap"
        elif any(0 <= at - x <= COLD_MS for x in starts):
            inc["cause"] = "cold_start"
        else:
            inc["cause"] = "other"


def run_one(
    seed: int, sources: dict[str, str], scale: float, engine: str, companions: dict[str, str] | None = None
) -> dict[str, Any]:
    """One world replayed through the rules with their companions (policy.toml: its flapping
    cool-downs decide whether a recurrence opens an incident or reopens one; vocabulary.toml),
    as a user's worker and `pack_eval.py` load them."""
    rules, problems = load_rules(sources, companions or {})
    problems = [p for p in problems if p.level == "error"]
    if problems:
        raise SystemExit("\n".join(p.render() if hasattr(p, "render") else str(p) for p in problems))
    severity = {
        rule.name: f"sev{rule.severity}" if isinstance(rule.severity, int) else str(rule.severity) for rule in rules
    }
    began = time.perf_counter()
    world = generate(seed, scale)
    generated = time.perf_counter() - began
    began = time.perf_counter()
    refused: Counter = Counter()
    records = replay(rules, world, engine, refused)
    replayed = time.perf_counter() - began
    truths = [t.to_json() for t in world.truths]
    incidents = incidents_of(records, severity)
    score(truths, incidents)
    tag_false(world, incidents)
    for t in truths:  # keep the JSON small: value counts, not the values, beyond a few
        t["affected"] = {
            d: (v if len(v) <= 20 else v[:20] + [f"... {len(v) - 20} more"]) for d, v in t["affected"].items()
        }
    return {
        "seed": seed,
        "events": len(world.events),
        "refused": dict(sorted(refused.items())),
        "days": world.days,
        "start": world.start,
        "bot_share": world.meta["bot_events"] / max(1, world.meta["inference_events"]),
        "generate_s": generated,
        "replay_s": replayed,
        "truths": truths,
        "incidents": incidents,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    truths = [t for r in runs for t in r["truths"]]
    incidents = [i for r in runs for i in r["incidents"]]
    days = sum(r["days"] for r in runs)
    recall = {}
    for c in CLASSES:
        ts = [t for t in truths if t["size_class"] == c]
        caught = [t for t in ts if t["caught_by"]]
        caught12 = [t for t in ts if any(h["severity"] in ("sev1", "sev2") for h in t["caught_by"])]
        recall[c] = {
            "truths": len(ts),
            "caught": len(caught),
            "caught_sev12": len(caught12),
            "recall": len(caught) / len(ts) if ts else None,
        }
    by_kind: dict[str, dict[str, list[int]]] = defaultdict(lambda: {c: [0, 0] for c in CLASSES})
    for t in truths:
        by_kind[t["kind"]][t["size_class"]][1] += 1
        by_kind[t["kind"]][t["size_class"]][0] += bool(t["caught_by"])
    precision = {}
    for name, sevs in [(s, (s,)) for s in SEVERITIES] + [("sev1+sev2", ("sev1", "sev2"))]:
        inc = [i for i in incidents if i["severity"] in sevs]
        true = sum(1 for i in inc if i["truths"])
        precision[name] = {
            "incidents": len(inc),
            "true": true,
            "false": len(inc) - true,
            "precision": true / len(inc) if inc else None,
            "false_per_day": (len(inc) - true) / days if days else None,
        }
    rules: dict[str, Counter] = defaultdict(Counter)
    for i in incidents:
        rules[i["rule"]]["incidents"] += 1
        rules[i["rule"]]["true" if i["truths"] else "false"] += 1
        if not i["truths"]:
            rules[i["rule"]][f"false_{i['severity']}"] += 1
            rules[i["rule"]][f"cause_{i.get('cause', 'other')}"] += 1
    causes = {
        sev: dict(Counter(i.get("cause", "other") for i in incidents if not i["truths"] and i["severity"] == sev))
        for sev in SEVERITIES
    }
    per_rule = sorted(({"rule": k, **v} for k, v in rules.items()), key=lambda x: (-x.get("false", 0), x["rule"]))
    missed_obvious = [
        {
            "seed": r["seed"],
            "kind": t["kind"],
            "scope": t["scope"],
            "params": t["params"],
            "size": t["size"],
            "start_h": round((t["start"] - r["start"]) / 3_600_000, 2),
        }
        for r in runs
        for t in r["truths"]
        if t["size_class"] == "obvious" and not t["caught_by"]
    ]
    return {
        "runs": len(runs),
        "events": sum(r["events"] for r in runs),
        "days": days,
        "truths": len(truths),
        "bot_share_median": sorted(r.get("bot_share", 0.0) for r in runs)[len(runs) // 2] if runs else None,
        "incidents": len(incidents),
        "recall": recall,
        "recall_by_kind": {
            k: {c: {"caught": v[c][0], "truths": v[c][1]} for c in CLASSES} for k, v in sorted(by_kind.items())
        },
        "precision": precision,
        "false_by_cause": causes,
        "per_rule": per_rule,
        "missed_obvious": missed_obvious,
        "generate_s": sum(r["generate_s"] for r in runs),
        "replay_s": sum(r["replay_s"] for r in runs),
    }


def render(s: dict[str, Any]) -> str:
    out = [
        f"{s['runs']} worlds, {s['events']:,} events, {s['days']:.0f} simulated days, {s['truths']} truths, "
        f"{s['incidents']} incidents; bots' share of the calls, median over worlds: "
        f"{100 * (s.get('bot_share_median') or 0):.0f}%",
        "",
    ]
    out += ["| size class | truths | caught | recall | caught at sev1/sev2 |", "|---|---:|---:|---:|---:|"]
    for c in CLASSES:
        r = s["recall"][c]
        out.append(f"| {c} | {r['truths']} | {r['caught']} | {_pct(r['recall'])} | {r['caught_sev12']} |")
    out += [
        "",
        "| severity (highest reached) | incidents | true | false | precision | false/day |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, p in s["precision"].items():
        fpd = "-" if p["false_per_day"] is None else f"{p['false_per_day']:.2f}"
        out.append(f"| {name} | {p['incidents']} | {p['true']} | {p['false']} | {_pct(p['precision'])} | {fpd} |")
    out += ["", "| false incidents by cause | " + " | ".join(CAUSES) + " |", "|---|" + "---:|" * len(CAUSES)]
    for sev, got in s["false_by_cause"].items():
        if got:
            out.append(f"| {sev} | " + " | ".join(str(got.get(c, 0)) for c in CAUSES) + " |")
    out += ["", "| kind | obvious | subtle | below floor |", "|---|---:|---:|---:|"]
    for k, v in s["recall_by_kind"].items():
        out.append(
            f"| {k} | "
            + " | ".join(f"{v[c]['caught']}/{v[c]['truths']}" if v[c]["truths"] else "-" for c in CLASSES)
            + " |"
        )
    out += [
        "",
        "| rule | incidents | true | false | false sev1 | false sev2 | false sev3 | false by cause ("
        + " / ".join(CAUSES)
        + ") |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in s["per_rule"]:
        out.append(
            f"| {r['rule']} | {r['incidents']} | {r.get('true', 0)} | {r.get('false', 0)} | "
            f"{r.get('false_sev1', 0)} | {r.get('false_sev2', 0)} | {r.get('false_sev3', 0)} | "
            + " / ".join(str(r.get(f"cause_{c}", 0)) for c in CAUSES)
            + " |"
        )
    if s["missed_obvious"]:
        out += [
            "",
            "missed obvious: "
            + "; ".join(f"seed {m['seed']} {m['kind']} {m['scope']} at {m['start_h']}h" for m in s["missed_obvious"]),
        ]
    return "\n".join(out)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            seeds += range(int(a), int(b) + 1)
        elif part:
            seeds.append(int(part))
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", help="a rules directory or file (default: the starter pack)")
    parser.add_argument(
        "--seeds",
        default=f"{DEV_SEEDS.start}-{DEV_SEEDS.stop - 1}",
        help="e.g. 0-49 (the development range, default) or 0,3,7",
    )
    parser.add_argument(
        "--held-out",
        action="store_true",
        help=f"allow the held-back seeds ({held_out_ranges_text()}): only at the end of a tuning session",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="world size (1.0: ~50k-300k events a world)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--engine", choices=("native", "python"), default=None)
    parser.add_argument("--json", help="write the runs and the summary here")
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    held = [s for s in seeds if is_held_out(s)]
    if held and not args.held_out:
        print(
            f"refused: seeds {held[0]}..{held[-1]} are in a held-back range ({held_out_ranges_text()}); "
            "they are run only at the end of a tuning session, with --held-out "
            "(benchmarks/README.md)",
            file=sys.stderr,
        )
        return 2
    sources = read_rule_sources([args.rules]) if args.rules else starter_rule_sources()
    companions = read_companion_sources([args.rules]) if args.rules else starter_companion_sources()
    engine = args.engine or default_engine()
    print(
        f"{len(seeds)} worlds (seeds {args.seeds}{', HELD-OUT' if held else ''}), scale {args.scale}, "
        f"{args.jobs} job(s), {engine} engine",
        file=sys.stderr,
    )
    began = time.perf_counter()
    cpu0 = os.times()
    runs = []

    def progress(run: dict[str, Any]) -> None:
        runs.append(run)
        print(
            f"  [{len(runs)}/{len(seeds)}] seed {run['seed']}: {run['events']:,} events, {run['days']:.0f} days, "
            f"{len(run['incidents'])} incidents, generated {run['generate_s']:.1f} s, replayed {run['replay_s']:.1f} s",
            file=sys.stderr,
        )

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_one, seed, sources, args.scale, engine, companions) for seed in seeds]
            for future in as_completed(futures):
                progress(future.result())
    else:
        for seed in seeds:
            progress(run_one(seed, sources, args.scale, engine, companions))
    runs.sort(key=lambda r: r["seed"])
    wall = time.perf_counter() - began
    cpu1 = os.times()
    cpu = (
        (cpu1.user - cpu0.user)
        + (cpu1.system - cpu0.system)
        + (cpu1.children_user - cpu0.children_user)
        + (cpu1.children_system - cpu0.children_system)
    )
    summary = summarize(runs)
    summary["wall_s"] = wall
    print(render(summary))
    print(
        f"\n{wall:.0f} s wall, {args.jobs} job(s), {engine} engine; generation {summary['generate_s']:.0f} s, "
        f"replay {summary['replay_s']:.0f} s (CPU s summed over worlds); process CPU {cpu:.0f} s"
    )
    if args.json:
        Path(args.json).write_bytes(
            orjson.dumps(
                {
                    "summary": summary,
                    "runs": runs,
                    "seeds": seeds,
                    "scale": args.scale,
                    "engine": engine,
                    "held_out": bool(held),
                },
                option=orjson.OPT_INDENT_2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
