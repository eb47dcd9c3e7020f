"""Root causes as sets of dimension values: a generator of cases, the F1 of root-cause sets,
and two published baselines on the same cases (issue 29).

    .venv/bin/python benchmarks/rootcause_eval.py --seeds 0-199            # dev
    .venv/bin/python benchmarks/rootcause_eval.py --seeds 1000-1199        # held back: run once
    .venv/bin/python benchmarks/rootcause_eval.py --speed 1000000          # 1M events x 10 dimensions

Each case (``random.Random(f"rootcause:{seed}")``): 8-12 dimensions — a few of 2-12 values
with Zipf-like popularity, and one or two of high cardinality (users: 300-3000 values;
client builds: 100-200) —, a period before and an incident period of 10k-30k events each;
every value has its own normal level (a model that normally hallucinates more, a tenant
that spends more); noise: every value drifts by up to ±10% between the periods, and the
events are sampled (binomial flags, Poisson traffic, lognormal costs). Then 1-3 root causes
of 1-3 attributes each (pairwise disjoint: every two share a dimension with different
values), each raising its events by a factor 2-6 (lower when the cause is large), on one of
four measures:

- ``rate``  — a flag's rate (derived; the investigation's ratio mass: the flag);
- ``avg``   — a value's mean (derived; mass: the value beyond the normal period's 0.9 quantile);
- ``count`` — the number of events (fundamental; the cause's traffic rises);
- ``sum``   — a cost (fundamental; the cause's calls cost more).

A cause is redrawn until it covers at least 1% of the events and its expected excess is at
least 6 standard errors (an undetectable cause measures the noise, not the method).

Scoring as RiskLoc defines it: per case, a predicted cause is a true positive iff it equals
a true combination exactly (the same (dimension, value) pairs); TP, FP and FN summed over the
cases; F1 = 2TP / (2TP + FP + FN).

Methods: ``firebreak`` (engine/firebreak/investigate/rootcause.py), ``adtributor`` (Bhagwan
et al., NSDI 2014: per dimension, values by surprise (Jensen-Shannon) until their
explanatory power reaches T_EP; the dimension of most surprise; derived measures by the
paper's formula for a ratio), ``riskloc`` (Kalander 2022, simplified: leaves split into
anomalous and normal by a deviation cutoff, elements of layers 1-3 ranked by risk =
anomalous-weight purity with explanatory power pruning, greedy with removal). Our own
implementations; all three read the same leaves (high-cardinality values folded the same way).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from firebreak.investigate.rootcause import OTHER, search, tabulate  # noqa: E402

MEASURES = ("rate", "avg", "count", "sum")
DERIVED = {"rate", "avg"}


@dataclass(frozen=True)
class Case:
    seed: int
    measure: str
    dims: tuple[str, ...]
    now: list  # rows: (values, mass)
    before: list
    truth: frozenset  # of frozensets of (dimension, value)


def _zipf(rng: random.Random, k: int, s: float) -> list[float]:
    w = [1 / (i + 1) ** s for i in range(k)]
    rng.shuffle(w)
    t = sum(w)
    return [x / t for x in w]


def build(seed: int, events: int | None = None, measure: str | None = None) -> Case:
    rng = random.Random(f"rootcause:{seed}")
    measure = measure or MEASURES[seed % 4]
    ndims = rng.randint(8, 12)
    high = rng.randint(1, 2)
    names, cards = [], []
    for d in range(ndims - high):
        names.append(f"d{d}")
        cards.append(rng.randint(2, 12))
    names.append("user")
    cards.append(rng.randint(300, 3000))
    if high == 2:
        names.append("client")
        cards.append(rng.randint(100, 200))
    pops = [_zipf(rng, k, 1.1 if k > 50 else rng.uniform(0.3, 1.0)) for k in cards]
    cums = [_cum(p) for p in pops]
    # Each value's normal level (a multiplier of the rate / mean / traffic) and its drift.
    level = [[math.exp(rng.gauss(0, 0.25)) for _ in range(k)] for k in cards]
    drift = [[1 + rng.uniform(-0.1, 0.1) for _ in range(k)] for k in cards]
    n = events or rng.randint(10_000, 30_000)
    base_rate = rng.uniform(0.02, 0.06)

    def draw() -> list[int]:
        return [_pick(rng, c) for c in cums]

    def draws(k: int) -> list[list[int]]:  # column by column: rng.choices is C
        cols = [rng.choices(range(len(c)), cum_weights=c, k=k) for c in cums]
        return [list(r) for r in zip(*cols, strict=True)]

    # Root causes: 1-3, 1-3 attributes each, on dimensions of low cardinality (or a top user).
    ncauses = rng.randint(1, 3)
    causes: list[dict[int, int]] = []
    sample = draws(4000)
    tries = 0
    while len(causes) < ncauses and tries < 2000:
        tries += 1
        k = rng.randint(1, 3)
        if rng.random() < 0.08 and k == 1:
            cause = {ndims - high: rng.randrange(5)}  # a top user... by index in popularity order
            top = sorted(range(cards[ndims - high]), key=lambda v: -pops[ndims - high][v])
            cause = {ndims - high: top[rng.randrange(5)]}
        else:
            ds = rng.sample(range(ndims - high), k)
            row = sample[rng.randrange(len(sample))]
            cause = {d: row[d] for d in ds}  # a combination that exists
        cover = sum(all(r[d] == v for d, v in cause.items()) for r in sample) / len(sample)
        if cover < 0.01 or cover > 0.4:
            continue
        if not all(any(d in c and c[d] != v for d, v in cause.items()) for c in causes):
            continue
        factor = rng.uniform(2, 6) if cover < 0.15 else rng.uniform(1.8, 3)
        per = base_rate if measure in DERIVED else 1.0
        if measure in DERIVED:
            expect = n * cover * (0.1 if measure == "avg" else per)
            if expect * (factor - 1) / math.sqrt(expect * factor + 1) < 6:
                continue
        causes.append({**cause, -1: factor})  # type: ignore[dict-item]
    truth = frozenset(frozenset((names[d], _name(names[d], v)) for d, v in c.items() if d >= 0) for c in causes)

    def factor_of(row: list[int]) -> float:
        for c in causes:
            if all(row[d] == v for d, v in c.items() if d >= 0):
                return c[-1]
        return 1.0

    def lv(row: list[int], drifted: bool) -> float:
        x = 1.0
        for d, v in enumerate(row):
            if d < 4:  # a few dimensions carry their own normal levels
                x *= level[d][v] * (drift[d][v] if drifted else 1.0)
        return x

    before, now = [], []
    for period, out in ((0, before), (1, now)):
        for row in draws(n if period == 0 else int(n * rng.uniform(0.9, 1.1))):
            f = factor_of(row) if period else 1.0
            x = lv(row, period == 1)
            if measure == "count":
                # traffic: the cause's events are repeated (a Poisson number of copies)
                copies = _poisson(rng, f * min(x, 3) / 1.5) if period else _poisson(rng, min(x, 3) / 1.5)
                for _ in range(copies):
                    out.append((row, 1.0))
                continue
            if measure == "rate":
                w = 1.0 if rng.random() < min(0.95, base_rate * x * f) else 0.0
            elif measure == "avg":
                w = rng.lognormvariate(math.log(x) + (math.log(f) * 0.8 if f > 1 else 0), 0.5)
            else:  # sum: a cost
                w = rng.lognormvariate(math.log(0.01 * x * f), 0.6)
            out.append((row, w))
    if measure == "avg":  # mass: the value beyond the normal period's 0.9 quantile
        q = sorted(w for _, w in before)[int(0.9 * len(before))]
        before = [(r, 1.0 if w > q else 0.0) for r, w in before]
        now = [(r, 1.0 if w > q else 0.0) for r, w in now]

    def named(rows: list) -> list:
        return [([_name(names[d], v) for d, v in enumerate(r)], w) for r, w in rows]

    return Case(seed, measure, tuple(names), named(now), named(before), truth)


def _name(dim: str, v: int) -> str:
    return f"{dim}-{v}"


def _cum(p: list[float]) -> list[float]:
    out, t = [], 0.0
    for x in p:
        t += x
        out.append(t)
    return out


def _pick(rng: random.Random, cum: list[float]) -> int:
    from bisect import bisect_left

    return min(bisect_left(cum, rng.random() * cum[-1]), len(cum) - 1)


def _poisson(rng: random.Random, lam: float) -> int:
    L, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= L:
            return k
        k += 1


# --- methods ------------------------------------------------------------------------------------


def run_firebreak(case: Case):
    table = tabulate(case.dims, case.now, case.before, case.measure in DERIVED)
    found = search(table)
    return frozenset(frozenset(c.pairs) for c in found.causes), table


def _js(p: float, q: float) -> float:
    def t(a: float, b: float) -> float:
        return a * math.log(2 * a / (a + b)) if a > 0 else 0.0

    return 0.5 * (t(p, q) + t(q, p))


def run_adtributor(case: Case, table) -> frozenset:
    """Adtributor: T_EEP = 0.1, T_EP = 0.67, the dimension of most surprise."""
    derived = case.measure in DERIVED
    model = table.model
    ndim = len(table.dims)
    table.reset()
    tallies = {(d, c): t for d in range(ndim) for c, t in table.parts((), d)}
    tot = table.tally(())
    n, m, _, n0, m0, _, _ = tot
    scale_n = n / n0 if n0 else 1.0
    # forecasts: derived: F1 = m0 * n/n0 (flagged), F2 = n0 * n/n0 (events); fundamental: m0 * scale
    if derived:
        F1, F2, A1, A2 = m0 * scale_n, n, m, n
        Fm, Am = F1 / F2, A1 / A2
    else:
        F, A = m0 * model.scale, m
    best, best_s = None, -1.0
    for d in range(ndim):
        rows = []
        for (dd, c), s in tallies.items():
            if dd != d:
                continue
            if derived:
                f1, f2, a1, a2 = s[4] * scale_n, s[3] * scale_n, s[1], s[0]
                denom = F2 * (F2 + A2 - F2)
                ep = ((a1 - f1) * F2 - (a2 - f2) * F1) / denom / (Am - Fm) if Am != Fm else 0.0
                sur = _js(f1 / F1 if F1 else 0, a1 / A1 if A1 else 0) + _js(f2 / F2 if F2 else 0, a2 / A2 if A2 else 0)
            else:
                f, a = s[4] * model.scale, s[1]
                ep = (a - f) / (A - F) if A != F else 0.0
                sur = _js(f / F if F else 0, a / A if A else 0)
            rows.append((sur, ep, c))
        rows.sort(key=lambda r: -r[0])
        chosen, cum, s_sum = [], 0.0, 0.0
        for sur, ep, c in rows:
            if ep > 0.1:
                chosen.append(c)
                cum += ep
                s_sum += sur
                if cum > 0.67:
                    break
        if chosen and cum > 0.67 and s_sum > best_s:
            best, best_s = (d, chosen), s_sum
    if best is None:
        return frozenset()
    d, chosen = best
    return frozenset(frozenset({(table.dims[d], table.names[d][c])}) for c in chosen)


def run_riskloc(case: Case, table) -> frozenset:
    """RiskLoc, simplified: deviation per leaf, cutoff from the normal side, risk per element."""
    model = table.model
    leaves = []
    for key, s in _leaves(case, table).items():
        v = s[1]
        f = model.judge(s).expected
        dev = 2 * (f - v) / (f + v) if f + v > 0 else 0.0
        leaves.append((key, v, f, dev))
    # anomalies raise the measure: the anomalous side is negative deviation; the cutoff is the
    # largest deviation on the normal (positive) side, capped as RiskLoc's default
    pos = [dv for _, _, _, dv in leaves if dv > 0]
    cutoff = -min(max(pos, default=0.0), 1.0) if pos else -0.1
    # weights: |dev| of anomalous leaves; normal leaves weigh |dev| too (RiskLoc's w)
    total = sum(v - f for _, v, f, _ in leaves)
    if total <= 0:
        return frozenset()
    remaining = list(leaves)
    ndim = len(table.dims)
    found: list[frozenset] = []
    while len(found) < 5:
        rem_total = sum(v - f for _, v, f, _ in remaining)
        if rem_total < 0.05 * total:
            break
        best, best_r = None, 0.0
        for layer in range(1, 4):
            stats: dict[tuple, list[float]] = {}
            for key, v, f, dv in remaining:
                ab = dv < cutoff
                combos = _combos([(d, key[d]) for d in range(ndim) if key[d] != OTHER], layer)
                for e in combos:
                    cell = stats.get(e)
                    if cell is None:
                        stats[e] = cell = [0.0, 0.0, 0.0]
                    if ab:
                        cell[0] += abs(dv)
                    else:
                        cell[1] += abs(dv) if dv < 0 else 0.0
                        cell[1] += 0.0
                    cell[2] += v - f
            for e, (wa, wn, ex) in stats.items():
                ep = ex / total
                if ep < 0.02 or wa == 0:
                    continue
                risk = wa / (wa + wn) - (1 - ep) * 0.0
                r = risk * min(1.0, ep / max(rem_total / total, 1e-9)) ** 0.1
                if r > best_r + 1e-12:
                    best, best_r = e, r
            if best is not None and best_r >= 0.5 and layer == 1:
                break
            if layer == 3 and best is None:
                break
        if best is None or best_r < 0.5:
            break
        found.append(frozenset((table.dims[d], table.names[d][c]) for d, c in best))
        remaining = [lf for lf in remaining if not all(lf[0][d] == c for d, c in best)]
    return frozenset(found)


def _leaves(case: Case, table) -> dict[tuple[int, ...], list[float]]:
    """The leaves (one per combination of every dimension's kept value) and their tallies."""
    codes = [{v: c for c, v in enumerate(names)} for names in table.names]
    out: dict[tuple[int, ...], list[float]] = {}
    for now, rows in ((True, case.now), (False, case.before)):
        for values, w in rows:
            key = tuple(codes[d].get(v, OTHER) for d, v in enumerate(values))
            t = out.get(key)
            if t is None:
                out[key] = t = [0.0] * 7
            if now:
                t[0] += 1
                t[1] += w
                t[2] += w * w
                t[6] += w > 0
            else:
                t[3] += 1
                t[4] += w
                t[5] += w * w
    return out


def _combos(items: list, k: int) -> list[tuple]:
    from itertools import combinations

    return list(combinations(items, k))


# --- scoring ------------------------------------------------------------------------------------


def score(pred: frozenset, truth: frozenset) -> tuple[int, int, int]:
    tp = len(pred & truth)
    return tp, len(pred) - tp, len(truth) - tp


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def _seeds(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-99")
    ap.add_argument("--methods", default="firebreak,adtributor,riskloc")
    ap.add_argument("--speed", type=int, default=0, help="time one case of this many events (10 dimensions)")
    ap.add_argument("--show", action="store_true", help="print each case's truth and predictions")
    a = ap.parse_args(argv)
    if a.speed:
        return speed(a.speed)
    methods = a.methods.split(",")
    totals = {(m, k): [0, 0, 0] for m in methods for k in ("all", *MEASURES, "1", "2", "3", "multi")}
    secs = {m: 0.0 for m in methods}
    for seed in _seeds(a.seeds):
        case = build(seed)
        t = time.perf_counter()
        pred, table = run_firebreak(case)
        secs["firebreak"] = secs.get("firebreak", 0.0) + time.perf_counter() - t
        preds = {"firebreak": pred}
        for m in methods:
            if m == "adtributor":
                t = time.perf_counter()
                preds[m] = run_adtributor(case, table)
                secs[m] += time.perf_counter() - t
            elif m == "riskloc":
                t = time.perf_counter()
                preds[m] = run_riskloc(case, table)
                secs[m] += time.perf_counter() - t
        width = max(len(c) for c in case.truth)
        for m in methods:
            tp, fp, fn = score(preds[m], case.truth)
            for k in ("all", case.measure, str(width), "multi" if len(case.truth) > 1 else None):
                if k is None:
                    continue
                cell = totals[(m, k)]
                cell[0] += tp
                cell[1] += fp
                cell[2] += fn
        if a.show:
            ok = "ok " if preds["firebreak"] == case.truth else "BAD"
            print(f"{ok} seed {seed} {case.measure} truth {_fmt(case.truth)}")
            for m in methods:
                print(f"      {m:10s} {_fmt(preds[m])}")
    cases = len(_seeds(a.seeds))
    print(f"{cases} cases, seeds {a.seeds}")
    print(
        "| method | F1 all | rate | avg | count | sum | 1-attribute cases | 2 | 3 | several causes | TP/FP/FN "
        "| s per case |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in methods:
        cells = [f"{f1(*totals[(m, k)]):.3f}" for k in ("all", *MEASURES, "1", "2", "3", "multi")]
        tp, fp, fn = totals[(m, "all")]
        print(f"| {m} | " + " | ".join(cells) + f" | {tp}/{fp}/{fn} | {secs[m] / cases:.3f} |")
    return 0


def _fmt(s: frozenset) -> str:
    return "{" + "; ".join(" AND ".join(f"{d}={v}" for d, v in sorted(c)) for c in sorted(s, key=sorted)) + "}"


def speed(events: int) -> int:
    """``events`` events in all (half before, half in the incident) over 10 dimensions, one of
    5,000 values: tabulate + search, timed apart from building the rows."""
    rng = random.Random("speed")
    cards = [3, 5, 8, 12, 4, 6, 10, 2, 200, 5000]
    dims = tuple(f"d{i}" for i in range(len(cards)))
    names = [[f"v{v}" for v in range(k)] for k in cards]
    half = events // 2

    def period(hot: bool) -> list:
        cols = [rng.choices(names[d], k=half) for d in range(len(cards))]
        out = []
        for vals in zip(*cols, strict=True):
            p = 0.12 if hot and vals[1] == "v2" and vals[3] == "v7" else 0.03
            out.append((vals, 1.0 if rng.random() < p else 0.0))
        return out

    rows_b, rows_n = period(False), period(True)
    t, c = time.perf_counter(), time.process_time()
    table = tabulate(dims, rows_n, rows_b, True)
    t1, c1 = time.perf_counter(), time.process_time()
    found = search(table)
    t2, c2 = time.perf_counter(), time.process_time()
    print(
        f"{events:,} events ({half:,} per period) x {len(dims)} dimensions: tabulate {t1 - t:.2f} s "
        f"({c1 - c:.2f} s CPU), search {t2 - t1:.2f} s ({c2 - c1:.2f} s CPU); "
        f"causes: {[x.pairs for x in found.causes]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
