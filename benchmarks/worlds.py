"""Randomized worlds for evaluating a rule pack on traffic nobody tuned it for (issue 30).

    from worlds import generate
    world = generate(seed=7)            # scale=1.0: ~50k-250k events over 3-7 days
    world.events                        # dicts in time order, valid per docs/schemas/event.schema.json
    world.truths                        # what was injected, with its size class

    python benchmarks/worlds.py --seed 7 --out /tmp/w7        # events.jsonl + truth.json for `firebreak replay`

Written apart from engine/firebreak/families.py and engine/firebreak/synthetic.py (the traffic the
starter pack was tuned on): nothing of their traffic logic is imported, only the event schema's
names (firebreak.core.events). benchmarks/README.md ("Randomized worlds") says what a world holds,
how truths are sized and how benchmarks/world_eval.py matches incidents to them.

Per seed: a deployment that starts at the world's first event (cold start: no history), 3-7 days
long; tenants of Zipf sizes that arrive over time, each with its own daily curve, time zone and
weekend; lulls and outages (gaps); services, features, prompt templates and models (some models
introduced mid-world); ordinary users (new ones arriving all the time) and bots (steady, business
hours, batch bursts every few hours); classifier noise, scores, latency, tokens, cost; sparse user
reports at background rates; decoy change events; and 4-9 injected incidents of many kinds and
sizes, from below the noise floor to obvious.

Deterministic: everything is drawn from ``random.Random(f"world:{seed}")`` (and per-part children
seeded from it); the same seed gives the same events and truths, byte for byte.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firebreak.core.events import CHANGE_KINDS, STANDARD_FLAGS, STANDARD_LABELS  # the schema's names only

SECOND = 1_000
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z; a world starts 0-120 days after it, at any hour

DEV_SEEDS = range(0, 50)
# Held back: run only at the end of a tuning session (benchmarks/README.md). 11000-11049 is the
# current held-back range; 1000-1049 to 10000-10049 were held back until they were scored (issue
# 30, second, fourth to twelfth rounds) and stay guarded so that nobody tunes against them.
HELD_OUT_SEEDS = range(11000, 11050)
SEEN_HELD_OUT_SEEDS = tuple(
    range(start, start + 50) for start in (1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000)
)
HELD_OUT_RANGES = (HELD_OUT_SEEDS, *SEEN_HELD_OUT_SEEDS)


def is_held_out(seed: int) -> bool:
    """Whether ``seed`` is in a held-back range (the current one or an earlier one)."""
    return any(seed in held for held in HELD_OUT_RANGES)


def held_out_ranges_text() -> str:
    return " and ".join(f"{r.start}-{r.stop - 1}" for r in HELD_OUT_RANGES)


# The noise floor: an injection whose evidence (in its best window of its primary scope) noise
# alone gives that scope more often than once per FLOOR_SCOPE_DAYS is below it. Obvious: its
# effect is OBVIOUS_FACTOR times the least effect above the floor, or more.
FLOOR_SCOPE_DAYS = 10_000
OBVIOUS_FACTOR = 2.0
MIN_WINDOW_MIN = 2
MAX_WINDOW_MIN = 60

# name, [(feature, template, grounded, tokens_in, tokens_out, quality)]
SERVICE_POOL = (
    (
        "support-bot",
        (("chat", "support-v4", True, 1400, 260, 0.86), ("ticket-summary", "ticket-sum-v2", False, 3000, 300, 0.84)),
    ),
    ("assistant", (("chat", "chat-v7", False, 900, 300, 0.83), ("account-help", "account-v3", True, 1700, 220, 0.87))),
    ("search", (("answer", "answer-v12", True, 2600, 330, 0.82),)),
    (
        "code-helper",
        (("completion", "complete-v5", False, 1500, 160, 0.80), ("review", "review-v1", False, 4000, 500, 0.78)),
    ),
    ("summarizer", (("summary", "summary-v2", True, 6000, 400, 0.85),)),
    (
        "agent",
        (("task", "agent-plan-v1", False, 2200, 600, 0.79), ("tool-call", "agent-tool-v3", False, 1800, 120, 0.88)),
    ),
)
MODEL_POOL = (
    "atlas-large",
    "atlas-mini",
    "orca-2",
    "orca-2-fast",
    "lumen-7b",
    "lumen-70b",
    "nimbus-pro",
    "nimbus-lite",
)
REPORT_LABELS = ("thumbs_down", "wrong", "harmful", "data_exposure", "offensive", "other")
assert set(REPORT_LABELS) <= set(STANDARD_LABELS)
_FLAGS = (
    "hallucination",
    "pii",
    "prompt_injection",
    "jailbreak",
    "refusal",
    "error",
    "toxicity",
    "system_prompt_leak",
    "cross_tenant",
)
assert set(_FLAGS) <= set(STANDARD_FLAGS)

# kind -> (primary category, the categories its effect legitimately shows in)
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "hallucination_spike": ("hallucination", ("hallucination", "quality_degradation")),
    "pii_concentrated": ("data_leakage", ("data_leakage",)),
    "pii_scattered": ("data_leakage", ("data_leakage",)),
    "cross_tenant_leak": ("data_leakage", ("data_leakage",)),
    "system_prompt_leak": ("data_leakage", ("data_leakage",)),
    "quality_drop": ("quality_degradation", ("quality_degradation",)),
    "latency_explosion": ("quality_degradation", ("quality_degradation",)),
    "cost_explosion": ("cost", ("cost", "quality_degradation")),
    "attack_single": ("adversarial", ("adversarial",)),
    "attack_distributed": ("adversarial", ("adversarial",)),
    "template_regression": ("quality_degradation", ("quality_degradation", "hallucination")),
    "report_surge": ("other", ("other",)),  # category set per label when drawn
}
DIMS = ("tenant", "service", "feature", "model", "prompt_template", "user")


@dataclass
class Truth:
    """One injected incident. ``scope``: the field=value pairs that define it (its primary scope,
    e.g. {"model": "orca-2"}); ``affected``: per dimension, every value seen on the events it
    added or whose distribution it changed (how world_eval.py matches an incident's group);
    ``size``: obvious / subtle / below_floor with the numbers behind it."""

    id: int
    kind: str
    category: str
    categories: tuple[str, ...]
    start: int
    end: int
    scope: dict[str, str]
    params: dict[str, Any]
    signal: str  # what the size is measured on
    size_class: str = ""
    size: dict[str, Any] = field(default_factory=dict)
    affected: dict[str, set[str]] = field(default_factory=lambda: {d: set() for d in DIMS})
    affected_events: int = 0
    # per-minute accumulators of the primary scope: count signals (background, excess expected
    # counts) or continuous ones (events, sum of per-event shifts in noise sigmas)
    _bg: dict[int, float] = field(default_factory=dict)
    _ex: dict[int, float] = field(default_factory=dict)

    def note(self, ev: dict[str, Any], background: float, excess: float) -> None:
        self.affected_events += 1
        aff = self.affected
        for d in DIMS:
            v = ev.get(d)
            if v is not None:
                aff[d].add(v)
        m = (ev["ts"] - self.start) // MINUTE
        self._bg[m] = self._bg.get(m, 0.0) + background
        self._ex[m] = self._ex.get(m, 0.0) + excess

    def note_background(self, ev: dict[str, Any], background: float) -> None:
        """An ordinary event of the primary scope during the span: noise only (not affected)."""
        m = (ev["ts"] - self.start) // MINUTE
        self._bg[m] = self._bg.get(m, 0.0) + background

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "category": self.category,
            "categories": list(self.categories),
            "start": self.start,
            "end": self.end,
            "scope": self.scope,
            "params": self.params,
            "signal": self.signal,
            "size_class": self.size_class,
            "size": self.size,
            "affected": {d: sorted(v) for d, v in self.affected.items() if v},
            "affected_events": self.affected_events,
        }


@dataclass
class World:
    seed: int
    start: int
    end: int
    events: list[dict[str, Any]]
    truths: list[Truth]
    meta: dict[str, Any]

    @property
    def days(self) -> float:
        return (self.end - self.start) / DAY


# ---- noise statistics (own code: no engine import) ----------------------------------------------


def poisson_sf(k: int, mean: float) -> float:
    """P(X >= k), X ~ Poisson(mean)."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    # sum the upper tail directly from k (terms fall fast once past the mean)
    log_term = k * math.log(mean) - mean - math.lgamma(k + 1)
    if k > mean + 50 * math.sqrt(mean) + 50:
        return math.exp(log_term)
    total, term, i = 0.0, math.exp(log_term), k
    while term > 1e-300 and (term > total * 1e-16 or i < mean):
        total += term
        i += 1
        term *= mean / i
        if i > k + 100_000:
            break
    if total == 0.0 and k <= mean:  # underflowed head: use the complement
        return 1.0
    return min(1.0, total)


def normal_sf_inv(p: float) -> float:
    """z with P(Z > z) = p (bisection on erfc: enough for class boundaries)."""
    lo, hi = -10.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(mid / math.sqrt(2)) > p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def size_truth(truth: Truth) -> None:
    """The size class from the per-minute accumulators: the best window of w minutes, w the
    injection's span clamped to [MIN_WINDOW_MIN, MAX_WINDOW_MIN]; p_floor = w / (1440 × FLOOR_SCOPE_DAYS)
    (noise reaching the evidence once per FLOOR_SCOPE_DAYS of non-overlapping windows of the scope).
    Count signals: B = background expected count, E = excess expected count in the window,
    k_floor = least k with P(Poisson(B) >= k) <= p_floor; above the floor iff B + E >= k_floor,
    obvious iff E >= OBVIOUS_FACTOR × (k_floor − B). Continuous signals (quality, log latency, log
    cost): z = sum of per-event shifts (in noise sigmas) / sqrt(n); above iff z >= z_floor,
    obvious iff z >= OBVIOUS_FACTOR × z_floor."""
    span_min = max(1, math.ceil((truth.end - truth.start) / MINUTE))
    w = min(MAX_WINDOW_MIN, max(MIN_WINDOW_MIN, span_min))
    minutes = sorted(set(truth._bg) | set(truth._ex))
    p_floor = w / (1440 * FLOOR_SCOPE_DAYS)
    best = (0.0, 0.0, 0)
    if minutes:
        lo_m, hi_m = min(minutes), max(minutes)
        for s in range(lo_m, hi_m + 1):
            bg = sum(truth._bg.get(m, 0.0) for m in range(s, s + w))
            ex = sum(truth._ex.get(m, 0.0) for m in range(s, s + w))
            key = _strength(truth.signal, bg, ex)
            if key > _strength(truth.signal, best[0], best[1]):
                best = (bg, ex, s)
    bg, ex, s = best
    if truth.signal.startswith("count:"):
        k_floor = 1
        while poisson_sf(k_floor, bg) > p_floor:
            k_floor += 1
        need = k_floor - bg
        above = bg + ex >= k_floor
        obvious = ex >= OBVIOUS_FACTOR * need
        truth.size = {
            "window_min": w,
            "background": round(bg, 3),
            "excess": round(ex, 3),
            "floor_count": k_floor,
            "p_value": poisson_sf(max(1, round(bg + ex)), bg),
        }
    else:
        n = bg  # for continuous signals _bg holds event counts, _ex shift sums
        z = ex / math.sqrt(n) if n > 0 else 0.0
        z_floor = normal_sf_inv(p_floor)
        above = z >= z_floor
        obvious = z >= OBVIOUS_FACTOR * z_floor
        truth.size = {"window_min": w, "events": int(n), "z": round(z, 2), "z_floor": round(z_floor, 2)}
    truth.size["best_window_start"] = truth.start + s * MINUTE
    truth.size_class = "obvious" if obvious else "subtle" if above else "below_floor"


def _strength(signal: str, bg: float, ex: float) -> float:
    if signal.startswith("count:"):
        return ex / math.sqrt(bg + 1.0)
    return ex / math.sqrt(bg) if bg > 0 else 0.0


# ---- the world -------------------------------------------------------------------------------------


@dataclass
class Template:
    service: str
    feature: str
    name: str
    grounded: bool
    tin: float
    tout: float
    quality: float
    refusal: float
    hmult: float
    weight: float


@dataclass
class Model:
    name: str
    halluc: float
    error: float
    lat_med: float
    lat_sigma: float
    price_in: float  # USD per 1k tokens
    price_out: float
    since: int  # first ts it serves
    version: str = ""


@dataclass
class Tenant:
    name: str
    weight: float
    tz: int  # hours from UTC
    peak: float  # local hour of the daily peak
    trough: float  # night level / peak
    weekend: float
    arrives: int
    users0: int
    users_growth: float  # users at the end / at arrival
    services: list[tuple[str, float]]
    pii_mult: float
    inj_mult: float


@dataclass
class Bot:
    name: str
    tenant: str
    mode: str  # steady | business | batch
    template: Template
    every_ms: int  # steady/business: mean gap; batch: gap between bursts
    burst: int = 0  # batch: calls per burst
    burst_ms: int = 0  # batch: burst length
    phase: int = 0


def _loguniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


class _Builder:
    def __init__(self, seed: int, scale: float) -> None:
        self.seed = seed
        self.rng = random.Random(f"world:{seed}")
        self.scale = scale
        self.events: list[dict[str, Any]] = []
        self.truths: list[Truth] = []
        self.next_id = 0
        self._states: dict[int, Any] = {}

    # -- the world's shape ----------------------------------------------------------------------

    def shape(self) -> None:
        rng = self.rng
        self.days = rng.randint(3, 7)
        self.start = BASE_MS + rng.randrange(120) * DAY + rng.randrange(24) * HOUR + rng.randrange(60) * MINUTE
        self.end = self.start + self.days * DAY
        self.minutes = self.days * 1440
        self.target = _loguniform(rng, 40_000, 160_000) * self.scale  # human calls
        # classifier noise of this world
        self.noise = {
            "pii": _loguniform(rng, 0.0001, 0.0008),
            "prompt_injection": _loguniform(rng, 0.001, 0.02),
            "jailbreak_share": rng.uniform(0.15, 0.5),
            "toxicity": _loguniform(rng, 0.0001, 0.001),
            "system_prompt_leak": _loguniform(rng, 0.00003, 0.0002),
            "cross_tenant": _loguniform(rng, 0.000005, 0.00005),
        }
        self.report_rates = {
            "thumbs_down": _loguniform(rng, 0.001, 0.006),
            "wrong": _loguniform(rng, 0.0003, 0.002),
            "harmful": _loguniform(rng, 0.00001, 0.0001),
            "data_exposure": _loguniform(rng, 0.000005, 0.00005),
            "offensive": _loguniform(rng, 0.00002, 0.0002),
            "other": _loguniform(rng, 0.0002, 0.001),
        }
        self.report_any = sum(self.report_rates.values())
        self.report_wrong_if_halluc = rng.uniform(0.01, 0.05)
        self.report_exposure_if_pii = rng.uniform(0.01, 0.06)
        # services and templates
        n_services = rng.randint(2, 5)
        pool = rng.sample(range(len(SERVICE_POOL)), n_services)
        self.templates: dict[str, list[Template]] = {}
        for i in pool:
            sname, tpls = SERVICE_POOL[i]
            chosen = [t for t in tpls if rng.random() < 0.85] or [tpls[0]]
            self.templates[sname] = [
                Template(
                    sname,
                    f,
                    t,
                    g,
                    tin * rng.uniform(0.7, 1.4),
                    tout * rng.uniform(0.7, 1.4),
                    min(0.95, max(0.6, q + rng.gauss(0, 0.03))),
                    _loguniform(rng, 0.003, 0.04),
                    rng.uniform(0.6, 1.6),
                    rng.uniform(0.2, 1.0),
                )
                for f, t, g, tin, tout, q in chosen
            ]
        self.services = list(self.templates)
        self.template_by_name = {t.name: t for tpls in self.templates.values() for t in tpls}
        # models: 2-5 at deployment, 0-2 introduced later (cold start of a model)
        names = rng.sample(MODEL_POOL, 7)
        n0 = rng.randint(2, 5)
        self.models: dict[str, Model] = {}
        for j, name in enumerate(names[: n0 + rng.randint(0, 2)]):
            since = (
                self.start
                if j < n0
                else self.start + rng.randrange(DAY // 2 // MINUTE, (self.days - 1) * 1440) * MINUTE
            )
            self.models[name] = Model(
                name,
                _loguniform(rng, 0.004, 0.035),
                _loguniform(rng, 0.002, 0.02),
                _loguniform(rng, 300, 4000),
                rng.uniform(0.35, 0.75),
                _loguniform(rng, 0.0002, 0.01),
                0.0,
                since,
            )
            self.models[name].price_out = self.models[name].price_in * rng.uniform(2, 5)
            self.models[name].version = f"{name}@{rng.randrange(1, 20)}.{rng.randrange(10)}"
        initial = [m for m in self.models.values() if m.since == self.start]
        # routing per service: [(from_ts, [(model, weight)])]
        self.routing: dict[str, list[tuple[int, list[tuple[str, float]]]]] = {}
        for s in self.services:
            k = rng.randint(1, min(3, len(initial)))
            mix = [(m.name, rng.uniform(0.2, 1.0)) for m in rng.sample(initial, k)]
            self.routing[s] = [(self.start, mix)]
        self.changes: list[dict[str, Any]] = []
        for m in self.models.values():
            if m.since > self.start:
                for s in rng.sample(self.services, rng.randint(1, len(self.services))):
                    old = self.routing[s][-1][1]
                    share = rng.uniform(0.3, 1.0)
                    mix = [(n, w * (1 - share)) for n, w in old] + [(m.name, share * sum(w for _, w in old))]
                    self.routing[s].append((m.since, mix))
                    self.changes.append(
                        self.change(
                            m.since,
                            "model_update",
                            service=s,
                            model=m.name,
                            description=f"route {share:.0%} of {s} to {m.name}",
                        )
                    )
        # tenants: Zipf sizes, some arriving later (cold start of a tenant)
        n_t = rng.randint(4, 14)
        zipf = rng.uniform(0.7, 1.6)
        weights = [1 / (i + 1) ** zipf for i in range(n_t)]
        total_w = sum(weights)
        self.tenants: list[Tenant] = []
        for i in range(n_t):
            arrives = self.start if rng.random() < 0.75 else self.start + rng.randrange(HOUR, (self.days - 1) * DAY)
            svc = [(s, rng.uniform(0.1, 1.0)) for s in rng.sample(self.services, rng.randint(1, len(self.services)))]
            users0 = max(3, int(weights[i] / total_w * _loguniform(rng, 300, 5000) * math.sqrt(self.scale)))
            self.tenants.append(
                Tenant(
                    f"t{i:02d}-{rng.choice('abcdefghkmnprstvwxz')}{rng.randrange(100):02d}",
                    weights[i] / total_w,
                    rng.choice((-8, -5, -3, 0, 1, 2, 5, 8, 9)),
                    rng.uniform(10, 16),
                    rng.uniform(0.08, 0.5),
                    rng.uniform(0.1, 1.0),
                    arrives,
                    users0,
                    rng.uniform(1.3, 3.0),
                    svc,
                    _loguniform(rng, 0.5, 2.0),
                    _loguniform(rng, 0.5, 2.0),
                )
            )
        # lulls (traffic x0.02-0.3) and outages (no events), world-wide or per service
        self.lulls: list[tuple[int, int, str | None, float]] = []
        for _ in range(rng.randint(0, 3)):
            a = self.start + rng.randrange(self.minutes) * MINUTE
            self.lulls.append(
                (a, a + rng.randrange(60, 8 * 60) * MINUTE, rng.choice([None, *self.services]), rng.uniform(0.02, 0.3))
            )
        self.outages: list[tuple[int, int, str | None]] = []
        for _ in range(rng.randint(0, 3)):
            a = self.start + rng.randrange(self.minutes) * MINUTE
            self.outages.append((a, a + rng.randrange(15, 4 * 60) * MINUTE, rng.choice([None, *self.services])))
        # bots
        self.bots: list[Bot] = []
        for t in self.tenants:
            for j in range(rng.choice((0, 0, 1, 1, 1, 2, 3))):
                svc = rng.choice([s for s, _ in t.services])
                tpl = rng.choice(self.templates[svc])
                mode = rng.choice(("steady", "business", "batch", "batch"))
                if mode == "batch":
                    bot = Bot(
                        f"{t.name}-bot{j}",
                        t.name,
                        mode,
                        tpl,
                        rng.randrange(2, 9) * HOUR,
                        int(_loguniform(rng, 80, 1000) * min(1.0, self.scale * 2)),
                        rng.randrange(5, 40) * MINUTE,
                        rng.randrange(8 * HOUR),
                    )
                else:
                    bot = Bot(
                        f"{t.name}-bot{j}",
                        t.name,
                        mode,
                        tpl,
                        int(
                            _loguniform(rng, 10 if mode == "business" else 30, 600) * SECOND / min(1.0, self.scale * 2)
                        ),
                    )
                self.bots.append(bot)
        # decoy changes: deploys and updates that change nothing
        for _ in range(rng.randint(3, 12)):
            ts = self.start + rng.randrange(self.days * DAY)
            kind = rng.choice(CHANGE_KINDS)
            s = rng.choice(self.services)
            self.changes.append(
                self.change(
                    ts,
                    kind,
                    service=s,
                    description=f"decoy {kind} of {s}",
                    **({"model": rng.choice(list(self.models))} if kind == "model_update" else {}),
                )
            )

    def change(self, ts: int, kind: str, **fields: Any) -> dict[str, Any]:
        self.next_id += 1
        return {"event_id": f"w{self.seed}-c{self.next_id}", "ts": ts, "type": "change", "kind": kind, **fields}

    # -- traffic --------------------------------------------------------------------------------

    def level(self, t: Tenant, ts: int) -> float:
        """The tenant's relative rate at ts (1.0 = its average working-day peak-ish level)."""
        local_h = ((ts - BASE_MS) / HOUR + t.tz) % 24
        day = int(((ts - BASE_MS) / HOUR + t.tz) // 24)
        x = math.cos(2 * math.pi * (local_h - t.peak) / 24)
        f = t.trough + (1 - t.trough) * ((x + 1) / 2) ** 2
        if (day + 3) % 7 in (5, 6):  # 2026-01-01 is a Thursday: day 0 -> index 3
            f *= t.weekend
        return f

    def state(self, m: int) -> tuple[dict[str, float], list[Truth], dict[str, tuple[list[str], list[float]]]]:
        """Minute m's (traffic kept per service: 0 in an outage, the lulls' factor; the truths
        active in it; each service's model mix as (names, cumulative weights)). Outages, lulls
        and model introductions start and end on whole minutes."""
        got = self._states.get(m)
        if got is None:
            ts = self.start + m * MINUTE
            keep = {}
            for svc in self.services:
                f = 1.0
                for a, b, s, k in self.lulls:
                    if a <= ts < b and (s is None or s == svc):
                        f *= k
                if any(a <= ts < b and (s is None or s == svc) for a, b, s in self.outages):
                    f = 0.0
                keep[svc] = f
            active = [tr for tr in self.active if tr.start < ts + MINUTE and tr.end > ts]
            routes = {}
            for svc in self.services:
                mix = self.routing[svc][0][1]
                for since, mx in self.routing[svc]:
                    if since <= ts:
                        mix = mx
                cum, acc = [], 0.0
                for _, w in mix:
                    acc += w
                    cum.append(acc)
                routes[svc] = ([n for n, _ in mix], cum)
            got = self._states[m] = (keep, active, routes)
        return got

    def in_outage(self, ts: int, service: str) -> bool:
        return self.state((ts - self.start) // MINUTE)[0].get(service, 1.0) == 0.0

    def traffic(self) -> None:
        rng = random.Random(f"world:{self.seed}:traffic")
        # normalize so the expected human calls are ~target
        mean_level = sum(
            self.level(t, self.start + m * 10 * MINUTE) * t.weight
            for t in self.tenants
            for m in range(0, self.minutes // 10)
        ) / max(1, self.minutes // 10)
        per_min = self.target / self.minutes / max(1e-9, mean_level)
        for t in self.tenants:
            svcs = [s for s, _ in t.services]
            svc_cum = []
            acc = 0.0
            for _, w in t.services:
                acc += w
                svc_cum.append(acc)
            tpl_lists = {s: (self.templates[s], [x.weight for x in self.templates[s]]) for s in svcs}
            for m in range((t.arrives - self.start) // MINUTE, self.minutes):
                ts0 = self.start + m * MINUTE
                keep = self.state(m)[0]
                lam = per_min * t.weight * self.level(t, ts0)
                for _ in range(poisson(rng, lam)):
                    svc = rng.choices(svcs, cum_weights=svc_cum)[0]
                    k = keep[svc]
                    if k < 1.0 and rng.random() >= k:
                        continue
                    tpls, weights = tpl_lists[svc]
                    tpl = tpls[0] if len(tpls) == 1 else rng.choices(tpls, weights)[0]
                    ts = ts0 + int(rng.random() * MINUTE)
                    self.emit(rng, ts, t, tpl, self.user(rng, t, ts))
        for bot in self.bots:
            t = next(x for x in self.tenants if x.name == bot.tenant)
            for ts in self.bot_times(rng, bot, t):
                if not self.in_outage(ts, bot.template.service):
                    self.emit(rng, ts, t, bot.template, bot.name, bot=True)

    def user(self, rng: random.Random, t: Tenant, ts: int) -> str:
        frac = (ts - t.arrives) / max(1, self.end - t.arrives)
        n = max(1, int(t.users0 * (1 + (t.users_growth - 1) * frac)))
        if rng.random() < 0.25:  # the newest tenth of users: new users are active
            k = n - 1 - int(rng.random() * max(1, n // 10))
        else:
            k = int(n * rng.random() ** 1.8)
        return f"{t.name}-u{k:05d}"

    def bot_times(self, rng: random.Random, bot: Bot, t: Tenant) -> list[int]:
        out = []
        if bot.mode == "batch":
            at = max(self.start, t.arrives) + bot.phase
            while at < self.end:
                for _ in range(bot.burst):
                    out.append(at + rng.randrange(bot.burst_ms))
                at += int(bot.every_ms * rng.uniform(0.8, 1.2))
            return [x for x in out if x < self.end]
        at = max(self.start, t.arrives)
        while at < self.end:
            at += int(rng.expovariate(1 / bot.every_ms)) + 1
            if bot.mode == "business":
                local_h = ((at - BASE_MS) / HOUR + t.tz) % 24
                day = int(((at - BASE_MS) / HOUR + t.tz) // 24)
                if not 8 <= local_h < 18 or (day + 3) % 7 in (5, 6):
                    continue
            out.append(at)
        return [x for x in out if x < self.end]

    def emit(
        self,
        rng: random.Random,
        ts: int,
        t: Tenant,
        tpl: Template,
        user: str,
        bot: bool = False,
        overrides: dict[str, float] | None = None,
        added_by: Truth | None = None,
    ) -> None:
        _, candidates, routes = self.state((ts - self.start) // MINUTE)
        names, cum = routes[tpl.service]
        model = self.models[names[0] if len(names) == 1 else rng.choices(names, cum_weights=cum)[0]]
        ev: dict[str, Any] = {
            "event_id": "",
            "ts": ts,
            "service": tpl.service,
            "feature": tpl.feature,
            "model": model.name,
            "model_version": model.version,
            "prompt_template": tpl.name,
            "tenant": t.name,
            "user": user,
        }
        noise = self.noise
        inj = noise["prompt_injection"] * t.inj_mult
        p = {
            "hallucination": min(0.9, model.halluc * tpl.hmult),
            "refusal": tpl.refusal,
            "error": model.error,
            # the rare flags: one draw, at most one of them per ordinary call
            "pii": noise["pii"] * t.pii_mult,
            "prompt_injection": inj,
            "jailbreak": inj * noise["jailbreak_share"],
            "toxicity": noise["toxicity"],
            "system_prompt_leak": noise["system_prompt_leak"],
            "cross_tenant": noise["cross_tenant"],
        }
        mod = _MOD_DEFAULT.copy()
        if overrides:
            p.update(overrides)
        active = [tr for tr in candidates if tr.start <= ts < tr.end] if candidates else ()
        for tr in active:
            _INJECT[tr.kind](self, tr, ev, p, mod, bot)
        if added_by is not None:
            added_by.note(ev, *_added_evidence(added_by, self, p, t))
        else:
            for tr in active:
                if tr.kind in _ADDS and _in_scope(tr, ev):
                    tr.note_background(ev, _ordinary_background(tr, p))
        # sample: three independent flags, then one draw among the rare ones
        random_ = rng.random
        flags = {}
        for name in _COMMON:
            if random_() < p[name]:
                flags[name] = True
        u = random_()
        for name in _RARE:
            u -= p[name]
            if u < 0:
                flags[name] = True
                break
        gauss = rng.gauss
        tin = tpl.tin * math.exp(gauss(0, 0.35)) * mod["tokens_in"]
        tout = tpl.tout * math.exp(gauss(0, 0.5)) * mod["tokens_out"]
        if bot:
            tin *= 2.0
        if "error" in flags:
            tout = 0.0
        lat = model.lat_med * math.exp(gauss(0, model.lat_sigma)) * (max(tout, 20) / 300) ** 0.3 * mod["latency"]
        halluc = "hallucination" in flags
        q = gauss(tpl.quality, 0.08) - (0.25 if halluc else 0.0) + mod["quality"]
        if "refusal" in flags:
            q -= 0.3
        scores = {"quality": int(min(1.0, max(0.0, q)) * 1000) / 1000}
        if tpl.grounded:
            g = gauss(0.45, 0.15) if halluc else gauss(0.86, 0.07)
            scores["groundedness"] = int(min(1.0, max(0.0, g + min(0.0, mod["quality"]) * 0.3)) * 1000) / 1000
        self.next_id += 1
        ev["event_id"] = f"w{self.seed}-{self.next_id}"
        ev["latency_ms"] = int(lat)
        ev["tokens_in"] = int(tin)
        ev["tokens_out"] = int(tout)
        ev["cost_usd"] = int((tin * model.price_in + tout * model.price_out) * 1000) / 1_000_000
        if flags:
            ev["flags"] = flags
        ev["scores"] = scores
        self.events.append(ev)
        # reports: at most one per answer, at background rates; `wrong`/`thumbs_down` more
        # likely on hallucinated answers, `data_exposure` on PII / cross-tenant answers
        u = random_()
        if u > self.report_any + self.report_wrong_if_halluc * 2 + self.report_exposure_if_pii and mod["report"] == 1.0:
            return  # the common case: no report possible
        probs = dict(self.report_rates)
        if halluc:
            probs["wrong"] += self.report_wrong_if_halluc
            probs["thumbs_down"] += self.report_wrong_if_halluc
        if "pii" in flags or "cross_tenant" in flags:
            probs["data_exposure"] += self.report_exposure_if_pii
        if mod["report"] != 1.0:
            for tr in active:
                if tr.kind == "report_surge" and _in_scope(tr, ev):
                    probs[tr.params["label"]] *= tr.params["mult"]
        for lab, pr in probs.items():
            u -= pr
            if u < 0:
                self.next_id += 1
                rep = {
                    "event_id": f"w{self.seed}-r{self.next_id}",
                    "ts": ts + int(rng.expovariate(1 / (4 * MINUTE))) + SECOND,
                    "type": "report",
                    "labels": [lab],
                    "ref": ev["event_id"],
                    "service": ev["service"],
                    "model": ev["model"],
                    "prompt_template": ev["prompt_template"],
                    "tenant": ev["tenant"],
                    "user": ev["user"],
                }
                if rep["ts"] < self.end:
                    self.events.append(rep)
                break

    # -- incidents ------------------------------------------------------------------------------

    def incidents(self) -> None:
        rng = random.Random(f"world:{self.seed}:incidents")
        kinds = list(KINDS)
        n = rng.randint(4, 9)
        self.active: list[Truth] = []
        self.added: list[tuple[Truth, Any]] = []
        busy = sorted(self.tenants, key=lambda t: -t.weight)
        for _ in range(n):
            kind = rng.choice(kinds)
            category, cats = KINDS[kind]
            dur = int(_loguniform(rng, 20, 300) * MINUTE)
            start = self.start + rng.randrange(max(1, self.days * DAY - dur))
            params: dict[str, Any] = {}
            scope: dict[str, str] = {}
            signal = ""
            if kind == "hallucination_spike":
                m = rng.choice(list(self.models.values()))
                if m.since > self.start and rng.random() < 0.5:
                    start = m.since  # a bad model introduced: no history for its baseline
                params["mult"] = round(_loguniform(rng, 1.5, 10), 2)
                scope = {"model": m.name}
                signal = "count:hallucination"
            elif kind in ("pii_concentrated", "attack_single"):
                t = rng.choice(self.tenants)
                start = max(start, t.arrives)
                if kind == "pii_concentrated":
                    dur = int(rng.uniform(0.5, 15) * MINUTE)
                    params.update(calls=rng.randint(3, 14), p=round(rng.uniform(0.2, 1.0), 2))
                    user = self.user(rng, t, start)
                    signal = "count:pii"
                else:
                    dur = int(rng.uniform(8, 90) * MINUTE)
                    params.update(
                        every_s=rng.randint(3, 60),
                        injection=round(rng.uniform(0.05, 0.7), 2),
                        jailbreak=round(rng.uniform(0.0, 0.3), 2),
                    )
                    user = f"{t.name}-n{rng.randrange(10**6):06d}"
                    signal = "count:prompt_injection+jailbreak"
                scope = {"tenant": t.name, "user": user}
            elif kind in ("pii_scattered", "cross_tenant_leak"):
                t = rng.choice(busy[: max(1, len(busy) // 2)]) if rng.random() < 0.7 else rng.choice(self.tenants)
                start = max(start, t.arrives)
                if kind == "pii_scattered":
                    params["p"] = round(_loguniform(rng, 0.001, 0.05), 5)
                    signal = "count:pii"
                else:
                    params["p"] = round(_loguniform(rng, 0.0005, 0.03), 5)
                    signal = "count:cross_tenant"
                scope = {"tenant": t.name}
            elif kind == "system_prompt_leak":
                t = rng.choice(self.tenants)
                start = max(start, t.arrives)
                svc = rng.choice([s for s, _ in t.services])
                scope = {"tenant": t.name, "prompt_template": rng.choice(self.templates[svc]).name}
                params["p"] = round(_loguniform(rng, 0.002, 0.1), 5)
                signal = "count:system_prompt_leak"
            elif kind == "quality_drop":
                if rng.random() < 0.5:
                    scope = {"model": rng.choice(list(self.models))}  # uniform: quiet models as often
                else:
                    svc = rng.choice(self.services)
                    scope = {"prompt_template": rng.choice(self.templates[svc]).name}
                params["delta"] = round(-_loguniform(rng, 0.01, 0.3), 3)
                dur = int(_loguniform(rng, 60, 8 * 60) * MINUTE)
                signal = "mean:quality"
            elif kind == "latency_explosion":
                scope = {"model": rng.choice(list(self.models))}
                params["mult"] = round(_loguniform(rng, 1.2, 6), 2)
                signal = "mean:log_latency"
            elif kind == "cost_explosion":
                scope = {"service": rng.choice(self.services)}
                params.update(
                    tokens_in=round(_loguniform(rng, 1.3, 6), 2), tokens_out=round(_loguniform(rng, 1.0, 4), 2)
                )
                signal = "mean:log_cost"
            elif kind == "attack_distributed":
                t = rng.choice(self.tenants)
                start = max(start, t.arrives)
                dur = int(rng.uniform(20, 120) * MINUTE)
                params.update(
                    users=rng.randint(5, 80), calls=(2, rng.randint(3, 12)), injection=round(rng.uniform(0.1, 0.8), 2)
                )
                scope = {"tenant": t.name}
                signal = "count:prompt_injection+jailbreak"
            elif kind == "template_regression":
                svc = rng.choice(self.services)
                scope = {"prompt_template": rng.choice(self.templates[svc]).name}
                params.update(
                    delta=round(-_loguniform(rng, 0.02, 0.3), 3), refusal_mult=round(_loguniform(rng, 1.2, 8), 2)
                )
                dur = int(_loguniform(rng, 60, 8 * 60) * MINUTE)
                signal = "mean:quality"
            elif kind == "report_surge":
                label = rng.choice(("wrong", "thumbs_down", "harmful"))
                category = {"wrong": "hallucination", "thumbs_down": "quality_degradation"}.get(label, "other")
                cats = (category,)
                scope = {"service": rng.choice(self.services)}
                params.update(label=label, mult=round(_loguniform(rng, 2, 30), 2))
                dur = int(_loguniform(rng, 30, 240) * MINUTE)
                signal = f"count:report:{label}"
            end = min(self.end, start + dur)
            if end <= start + MINUTE:
                continue
            truth = Truth(len(self.truths), kind, category, cats, start, end, scope, params, signal)
            self.truths.append(truth)
            self.active.append(truth)
            if rng.random() < 0.6 and kind not in ("attack_single", "attack_distributed", "report_surge"):
                # a cause logged as a change event (the rest: no change event at all)
                ckind = {
                    "hallucination_spike": "model_update",
                    "template_regression": "prompt_change",
                    "cost_explosion": "config_change",
                    "quality_drop": "data_pipeline",
                }.get(kind, "deploy")
                self.changes.append(
                    self.change(
                        start - rng.randrange(0, 5 * MINUTE), ckind, description=f"change before {kind}", **scope
                    )
                )

    def added_traffic(self) -> None:
        """Events an injection adds (attackers, a PII burst to one user)."""
        rng = random.Random(f"world:{self.seed}:added")
        by_name = {t.name: t for t in self.tenants}
        for tr in self.truths:
            if tr.kind == "attack_single":
                t = by_name[tr.scope["tenant"]]
                ts = tr.start
                while ts < tr.end:
                    if not self.in_outage(ts, "x"):
                        svc = rng.choice([s for s, _ in t.services])
                        self.emit(
                            rng,
                            ts,
                            t,
                            rng.choice(self.templates[svc]),
                            tr.scope["user"],
                            overrides=self.attack_probs(tr.params["injection"], tr.params["jailbreak"]),
                            added_by=tr,
                        )
                    ts += int(tr.params["every_s"] * SECOND * rng.uniform(0.5, 1.5))
            elif tr.kind == "attack_distributed":
                t = by_name[tr.scope["tenant"]]
                for _ in range(tr.params["users"]):
                    user = f"{t.name}-n{rng.randrange(10**6):06d}"
                    first = tr.start + rng.randrange(max(1, tr.end - tr.start))
                    for _ in range(rng.randint(*tr.params["calls"])):
                        ts = min(tr.end - 1, first + rng.randrange(10 * MINUTE))
                        svc = rng.choice([s for s, _ in t.services])
                        self.emit(
                            rng,
                            ts,
                            t,
                            rng.choice(self.templates[svc]),
                            user,
                            overrides=self.attack_probs(tr.params["injection"], 0.15),
                            added_by=tr,
                        )
            elif tr.kind == "pii_concentrated":
                t = by_name[tr.scope["tenant"]]
                for _ in range(tr.params["calls"]):
                    ts = tr.start + rng.randrange(max(1, tr.end - tr.start))
                    svc = rng.choice([s for s, _ in t.services])
                    self.emit(
                        rng,
                        ts,
                        t,
                        rng.choice(self.templates[svc]),
                        tr.scope["user"],
                        overrides={"pii": tr.params["p"]},
                        added_by=tr,
                    )

    def attack_probs(self, injection: float, jailbreak: float) -> dict[str, float]:
        return {"prompt_injection": injection, "jailbreak": jailbreak * (1 - injection)}


_COMMON = ("hallucination", "refusal", "error")
_RARE = ("pii", "prompt_injection", "jailbreak", "toxicity", "system_prompt_leak", "cross_tenant")
_MOD_DEFAULT = {"quality": 0.0, "latency": 1.0, "tokens_in": 1.0, "tokens_out": 1.0, "report": 1.0}
_ADDS = ("pii_concentrated", "attack_single", "attack_distributed")


def _added_evidence(tr: Truth, b: _Builder, p: dict[str, float], tenant: Tenant) -> tuple[float, float]:
    """(background, excess) expected counts of an added event, for the truth's signal: what an
    ordinary call of its tenant would have had against what this one has."""
    if tr.kind == "pii_concentrated":
        bg = b.noise["pii"] * tenant.pii_mult
        return bg, p["pii"] - bg
    bg = b.noise["prompt_injection"] * tenant.inj_mult * (1 + b.noise["jailbreak_share"])
    return bg, p["prompt_injection"] + p["jailbreak"] - bg


def _ordinary_background(tr: Truth, p: dict[str, float]) -> float:
    return p["pii"] if tr.kind == "pii_concentrated" else p["prompt_injection"] + p["jailbreak"]


def _in_scope(tr: Truth, ev: dict[str, Any]) -> bool:
    return all(ev.get(k) == v for k, v in tr.scope.items())


def _inj_halluc(
    b: _Builder, tr: Truth, ev: dict[str, Any], p: dict[str, float], mod: dict[str, float], bot: bool
) -> None:
    if _in_scope(tr, ev):
        old = p["hallucination"]
        p["hallucination"] = min(0.95, old * tr.params["mult"])
        tr.note(ev, old, p["hallucination"] - old)


def _inj_rate(flag: str) -> Any:
    def inject(
        b: _Builder, tr: Truth, ev: dict[str, Any], p: dict[str, float], mod: dict[str, float], bot: bool
    ) -> None:
        if _in_scope(tr, ev):
            old = p[flag]
            p[flag] = min(1.0, old + tr.params["p"])
            tr.note(ev, old, p[flag] - old)

    return inject


def _inj_quality(
    b: _Builder, tr: Truth, ev: dict[str, Any], p: dict[str, float], mod: dict[str, float], bot: bool
) -> None:
    if _in_scope(tr, ev):
        mod["quality"] += tr.params["delta"]
        if "refusal_mult" in tr.params:
            p["refusal"] = min(0.9, p["refusal"] * tr.params["refusal_mult"])
        tr.note(ev, 1.0, -tr.params["delta"] / 0.08)  # quality noise: sigma 0.08


def _inj_latency(
    b: _Builder, tr: Truth, ev: dict[str, Any], p: dict[str, float], mod: dict[str, float], bot: bool
) -> None:
    if _in_scope(tr, ev):
        mod["latency"] *= tr.params["mult"]
        tr.note(ev, 1.0, math.log(tr.params["mult"]) / b.models[ev["model"]].lat_sigma)


def _inj_cost(
    b: _Builder, tr: Truth, ev: dict[str, Any], p: dict[str, float], mod: dict[str, float], bot: bool
) -> None:
    if _in_scope(tr, ev):
        mod["tokens_in"] *= tr.params["tokens_in"]
        mod["tokens_out"] *= tr.params["tokens_out"]
        # the shift of log(cost) against its noise (tokens' lognormal spread: sigma ~0.45)
        tpl, model = b.template_by_name[ev["prompt_template"]], b.models[ev["model"]]
        before = tpl.tin * model.price_in + tpl.tout * model.price_out
        after = tpl.tin * tr.params["tokens_in"] * model.price_in + tpl.tout * tr.params["tokens_out"] * model.price_out
        tr.note(ev, 1.0, math.log(after / before) / 0.45)


def _inj_reports(
    b: _Builder, tr: Truth, ev: dict[str, Any], p: dict[str, float], mod: dict[str, float], bot: bool
) -> None:
    if _in_scope(tr, ev):
        lab = tr.params["label"]
        base = b.report_rates[lab]
        if lab in ("wrong", "thumbs_down"):
            base += p["hallucination"] * b.report_wrong_if_halluc
        mod["report"] = tr.params["mult"]
        tr.note(ev, base, base * (tr.params["mult"] - 1))


def _noop(*_: Any) -> None:
    return None


_INJECT = {
    "hallucination_spike": _inj_halluc,
    "pii_scattered": _inj_rate("pii"),
    "cross_tenant_leak": _inj_rate("cross_tenant"),
    "system_prompt_leak": _inj_rate("system_prompt_leak"),
    "quality_drop": _inj_quality,
    "template_regression": _inj_quality,
    "latency_explosion": _inj_latency,
    "cost_explosion": _inj_cost,
    "report_surge": _inj_reports,
    "pii_concentrated": _noop,  # added events only
    "attack_single": _noop,
    "attack_distributed": _noop,
}


def generate(seed: int, scale: float = 1.0) -> World:
    """The world of ``seed``. ``scale`` multiplies the human traffic (and bots' volume, up to
    1.0 at scale 0.5): 1.0 for the evaluation, ~0.02 for unit tests."""
    b = _Builder(seed, scale)
    b.shape()
    b.incidents()
    b.traffic()
    b.added_traffic()
    events = b.events + b.changes
    events.sort(key=lambda e: (e["ts"], e["event_id"]))
    for tr in b.truths:
        size_truth(tr)
    meta = {
        "days": b.days,
        "tenants": [{"name": t.name, "weight": round(t.weight, 4), "arrives": t.arrives} for t in b.tenants],
        "services": b.services,
        "models": {m.name: m.since for m in b.models.values()},
        "bots": [{"name": x.name, "mode": x.mode, "service": x.template.service} for x in b.bots],
        "lulls": b.lulls,
        "outages": b.outages,
        "noise": b.noise,
        "report_rates": b.report_rates,
        "inference_events": sum(1 for e in events if "type" not in e),
        "bot_events": sum(1 for e in events if "type" not in e and "-bot" in e["user"]),
        "reports": sum(1 for e in events if e.get("type") == "report"),
    }
    return World(seed, b.start, b.end, events, b.truths, meta)


def write(world: World, out: Path) -> None:
    import orjson

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "events.jsonl", "wb") as f:
        for e in world.events:
            f.write(orjson.dumps(e) + b"\n")
    (out / "truth.json").write_bytes(
        orjson.dumps(
            {
                "seed": world.seed,
                "start": world.start,
                "end": world.end,
                "truths": [t.to_json() for t in world.truths],
                "meta": world.meta,
            },
            option=orjson.OPT_INDENT_2,
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write one randomized world (events.jsonl, truth.json)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--held-out", action="store_true", help="allow a seed of the held-back range")
    args = parser.parse_args(argv)
    if is_held_out(args.seed) and not args.held_out:
        raise SystemExit(
            f"seed {args.seed} is in a held-back range ({held_out_ranges_text()}): "
            "pass --held-out (only at the end of a tuning session)"
        )
    world = generate(args.seed, args.scale)
    write(world, Path(args.out))
    print(f"{len(world.events):,} events over {world.days:.0f} days, {len(world.truths)} truths -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
