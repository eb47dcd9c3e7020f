"""Families of traffic unlike firebreak.synthetic, with incidents injected on purpose: what a rule
pack is evaluated on (benchmarks/pack_eval.py).

    family = FAMILIES["heavy"]
    run = generate(family, seed=3)
    run.truths            # what was injected: kind, category, field=value, onset, end
    for event in run.events: ...

firebreak.synthetic is the traffic the starter pack was tuned on: ten tenants of similar size,
thousands of users with a mild skew, fixed classifier noise. Here each family draws its own
world from a few knobs, so thresholds meet volumes they were not tuned for:

- **volume**: from 0.1 to 1000 events/s, optionally growing linearly over the span
  (``growth=2``: the volume doubles);
- **tenants of very different sizes**: shares falling geometrically from the largest to
  the smallest tenant by a factor ``spread`` (1000: the smallest sends 1000× less);
- **heavy accounts**: in every tenant one backend integration sending ``heavy_share`` of
  the tenant's events; ordinary users average about one call a minute;
- **classifier noise**: ``noise`` is the rate at which the prompt-injection and jailbreak
  classifiers flag ordinary calls (0 to 2%); PII is flagged on ``pii_noise`` of answers,
  hallucination on 1–2% per model, refusals on 2%.

Injections (``kinds``), each with its ground truth:

- ``pii_burst`` — a few answers (3 to 6) carrying a customer's personal data within 30
  seconds, sent to one ordinary user of a tenant picked uniformly among the tenants (so
  small and large tenants alike): the short leak;
- ``pii_leak`` — 2% of one tenant's answers carry PII for 30 minutes;
- ``attacker`` — a new account of one of the three largest tenants calling every 8–20 s
  (``attack_every_s``) for 15 minutes, half of its calls prompt injections, a third of the
  rest jailbreaks;
- ``hallucination`` — one model's hallucination rate rises by 12 points for 30 minutes;
- ``cost`` — one service's prompts 5× and answers 2× longer for 30 minutes;
- ``quality_ramp`` — one prompt template's quality slides from 0.85 to 0.55 over 3 hours
  (the slow ramp), then stays there until the end.

Pure and deterministic: ``random.Random(f"{seed}:{family.name}")``; events are produced in
time order with integer epoch-ms ``ts`` (no disorder: lateness is tested elsewhere).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field, replace
from typing import Any

SECOND = 1_000
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
START_MS = 1_772_409_600_000  # 2026-03-02T00:00:00Z

KIND_CATEGORY = {
    "pii_burst": "data_leakage",
    "pii_leak": "data_leakage",
    "attacker": "adversarial",
    "hallucination": "hallucination",
    "cost": "cost",
    "quality_ramp": "quality_degradation",
}
KIND_DIMENSION = {
    "pii_burst": "tenant",
    "pii_leak": "tenant",
    "attacker": "tenant",
    "hallucination": "model",
    "cost": "service",
    "quality_ramp": "prompt_template",
}
INCIDENT_MS = 30 * MINUTE
ATTACK_MS = 15 * MINUTE
RAMP_MS = 3 * HOUR
BURST_MS = 30 * SECOND

# (service, feature, prompt template, grounded, weight, tokens in, tokens out)
TEMPLATES = (
    ("assistant", "chat", "chat-v3", True, 0.40, 1200, 250),
    ("assistant", "account-help", "account-v2", True, 0.15, 1800, 200),
    ("search", "answer", "answer-v9", True, 0.25, 2800, 320),
    ("coder", "completion", "complete-v4", False, 0.20, 1500, 140),
)
MODELS = (("model-a", 0.012, 2.0, 8.0), ("model-b", 0.018, 0.3, 1.2), ("model-c", 0.015, 1.0, 3.0))


@dataclass(frozen=True)
class Family:
    name: str
    rate: float  # mean events/s at the start
    duration_ms: int
    tenants: int
    spread: float  # largest tenant's share / smallest's
    heavy_share: float  # each tenant's heavy account's share of its events
    noise: float  # injection / jailbreak classifier noise on ordinary calls
    kinds: tuple[str, ...]  # one injection of each per run
    growth: float = 1.0  # volume at the end / at the start (linear)
    pii_noise: float = 0.0004
    warmup_ms: int = 0  # no onset before this (relative rules need their baseline)
    note: str = ""
    attack_every_s: tuple[int, int] = (8, 20)  # an attacker's pause between calls


@dataclass(frozen=True)
class Truth:
    kind: str
    category: str
    dimension: str
    value: str
    onset_ts: int
    end_ts: int
    users: tuple[str, ...] = ()  # the accounts involved (attacker, burst recipient)
    size: int = 0  # pii_burst: leaked answers; pii_leak: the tenant's PII answers during the leak
    trials: int = 0  # pii_leak: the tenant's answers during the leak (the evidence's denominator)
    scope: tuple[tuple[str, str], ...] = ()  # every field=value that pins the target down

    def touches(self, group: dict[str, Any]) -> bool:
        """Whether an incident's group points at this injection: one of its accounts, a
        user of its tenant (users are named ``TENANT-…``), or a group sharing at least one
        field with its scope and agreeing on all the shared ones."""
        user = group.get("user")
        if user is not None and (
            user in self.users or (self.dimension == "tenant" and str(user).split("-")[0] == self.value)
        ):
            return True
        scope = self.scope or ((self.dimension, self.value),)
        shared = [(k, v) for k, v in scope if k in group]
        return bool(shared) and all(group[k] == v for k, v in shared)

    def added(self, event: dict[str, Any]) -> bool:
        """Whether the injection added this event (a burst's answers, an attacker's calls)."""
        return event["event_id"].startswith("x") and event.get("user") in self.users

    def alters(self, event: dict[str, Any]) -> bool:
        """Whether the injection changed this ordinary event (the conditions `_inference`
        applies): the model's answers during a hallucination spike, the service's during a
        cost explosion, the tenant's during a leak, the template's from a ramp's onset on."""
        field = {
            "hallucination": "model",
            "cost": "service",
            "pii_leak": "tenant",
            "quality_ramp": "prompt_template",
        }.get(self.kind)
        return field is not None and self.onset_ts <= event["ts"] < self.end_ts and event.get(field) == self.value


@dataclass
class Run:
    family: Family
    seed: int
    events: list[dict[str, Any]]
    truths: list[Truth]
    start_ms: int
    end_ms: int


@dataclass
class _Tenant:
    name: str
    share: float
    users: list[str]
    heavy: str
    cumulative: list[float] = field(default_factory=list)


def _tenants(rng: random.Random, family: Family) -> list[_Tenant]:
    n = family.tenants
    ratio = family.spread ** (1 / (n - 1)) if n > 1 else 1.0
    weights = [ratio**-i for i in range(n)]
    total = sum(weights)
    out = []
    for i, w in enumerate(weights):
        share = w / total
        # ordinary users average about one call a minute each at the starting volume
        per_minute = family.rate * share * (1 - family.heavy_share) * 60
        count = max(5, min(50_000, int(per_minute)))
        name = f"t{i:02d}"
        users = [f"{name}-u{j:05d}" for j in range(count)]
        out.append(_Tenant(name, share, users, f"{name}-backend"))
    return out


def generate(family: Family, seed: int) -> Run:
    rng = random.Random(f"{seed}:{family.name}")
    start, end = START_MS, START_MS + family.duration_ms
    tenants = _tenants(rng, family)
    tenant_cum = _cumulative([t.share for t in tenants])
    template_cum = _cumulative([t[4] for t in TEMPLATES])
    truths = [_plan(rng, family, kind, tenants, start, end) for kind in family.kinds]
    extra: list[tuple[int, dict[str, Any]]] = []  # attack calls and burst answers, merged by time
    for truth in truths:
        extra.extend(_extra_events(rng, truth, family.attack_every_s))
    extra.sort(key=lambda item: item[0])
    events: list[dict[str, Any]] = []
    ids = 0
    ts = float(start)
    k = 0
    span = family.duration_ms
    while True:
        progress = (ts - start) / span
        rate = family.rate * (1 + (family.growth - 1) * progress)
        ts += rng.expovariate(rate) * 1000
        t = int(ts)
        if t >= end:
            break
        while k < len(extra) and extra[k][0] <= t:
            ids += 1
            events.append(_finish(extra[k][1], extra[k][0], f"x{seed}-{ids}"))
            k += 1
        tenant = tenants[bisect.bisect_right(tenant_cum, rng.random() * tenant_cum[-1])]
        if rng.random() < family.heavy_share:
            user = tenant.heavy
        else:
            user = tenant.users[int(len(tenant.users) * rng.random() ** 1.5)]
        ids += 1
        template = TEMPLATES[bisect.bisect_right(template_cum, rng.random() * template_cum[-1])]
        events.append(_inference(rng, family, t, f"e{seed}-{ids}", tenant.name, user, template, truths))
    while k < len(extra) and extra[k][0] < end:
        ids += 1
        events.append(_finish(extra[k][1], extra[k][0], f"x{seed}-{ids}"))
        k += 1
    truths = [_leak_size(t, events) if t.kind == "pii_leak" else t for t in truths]
    return Run(family, seed, events, truths, start, end)


def _leak_size(truth: Truth, events: list[dict[str, Any]]) -> Truth:
    """A sustained leak's evidence: how many PII answers its tenant gave while it lasted
    (its 2% of answers and the 0.04% of noise alike), and of how many answers."""
    during = [e for e in events if truth.alters(e)]
    return replace(truth, size=sum(1 for e in during if e["flags"]["pii"]), trials=len(during))


def _plan(rng: random.Random, family: Family, kind: str, tenants: list[_Tenant], start: int, end: int) -> Truth:
    length = {"pii_burst": BURST_MS, "attacker": ATTACK_MS, "quality_ramp": end - start}.get(kind, INCIDENT_MS)
    earliest = start + max(family.warmup_ms, family.duration_ms // 5)
    latest = end - min(length, family.duration_ms // 4) - max(BURST_MS, family.duration_ms // 10)
    if kind == "quality_ramp":
        latest = end - RAMP_MS
    onset = rng.randint(earliest, max(earliest, latest))
    onset -= onset % SECOND
    stop = min(end, onset + length) if kind != "quality_ramp" else end
    category, dimension = KIND_CATEGORY[kind], KIND_DIMENSION[kind]
    if kind in {"pii_burst", "pii_leak", "attacker"}:
        tenant = rng.choice(tenants) if kind == "pii_burst" else tenants[rng.randrange(min(3, len(tenants)))]
        if kind == "pii_burst":
            user = tenant.users[rng.randrange(len(tenant.users) // 2, len(tenant.users))]  # an ordinary user
            return Truth(kind, category, dimension, tenant.name, onset, stop, (user,), rng.randint(3, 6))
        if kind == "attacker":
            account = f"{tenant.name}-new{rng.randrange(999)}"
            return Truth(kind, category, dimension, tenant.name, onset, stop, (account,))
        return Truth(kind, category, dimension, tenant.name, onset, stop)
    if kind == "hallucination":
        value = rng.choice(MODELS)[0]
        return Truth(kind, category, dimension, value, onset, stop)
    if kind == "cost":
        value = rng.choice(sorted({t[0] for t in TEMPLATES}))
        return Truth(kind, category, dimension, value, onset, stop)
    template = rng.choice([t for t in TEMPLATES if t[3]])
    scope = (("prompt_template", template[2]), ("service", template[0]), ("feature", template[1]))
    return Truth(kind, category, dimension, template[2], onset, stop, scope=scope)


def _extra_events(rng: random.Random, truth: Truth, every_s: tuple[int, int]) -> list[tuple[int, dict[str, Any]]]:
    out: list[tuple[int, dict[str, Any]]] = []
    if truth.kind == "pii_burst":
        times = sorted(rng.randint(truth.onset_ts, truth.onset_ts + BURST_MS - 1) for _ in range(truth.size))
        for t in times:
            out.append((t, _plain(rng, truth.value, truth.users[0], TEMPLATES[1], MODELS[0], pii=True)))
    elif truth.kind == "attacker":
        t = truth.onset_ts
        while t < truth.end_ts:
            injection = rng.random() < 0.5
            jailbreak = not injection and rng.random() < 1 / 3
            event = _plain(rng, truth.value, truth.users[0], TEMPLATES[0], MODELS[0])
            event["flags"]["prompt_injection"], event["flags"]["jailbreak"] = injection, jailbreak
            out.append((t, event))
            t += rng.randint(*every_s) * SECOND
    return out


def _plain(rng: random.Random, tenant: str, user: str, template: tuple, model: tuple, pii: bool = False) -> dict:
    service, feature, name, grounded, _, tin, tout = template
    tokens_in, tokens_out = int(tin * rng.lognormvariate(0, 0.4)), int(tout * rng.lognormvariate(0, 0.5))
    event = {
        "type": "inference",
        "service": service,
        "feature": feature,
        "model": model[0],
        "prompt_template": name,
        "tenant": tenant,
        "user": user,
        "latency_ms": int(300 + tokens_out * 9 * rng.lognormvariate(0, 0.25)),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": round((tokens_in * model[2] + tokens_out * model[3]) / 1e6, 6),
        "flags": {
            "hallucination": False,
            "pii": pii,
            "system_prompt_leak": False,
            "cross_tenant": False,
            "prompt_injection": False,
            "jailbreak": False,
            "refusal": False,
        },
        "scores": {"quality": round(min(1.0, max(0.0, rng.gauss(0.85, 0.06))), 3)},
    }
    if grounded:
        event["scores"]["groundedness"] = round(min(1.0, max(0.0, rng.gauss(0.9, 0.05))), 3)
    return event


def _finish(event: dict[str, Any], ts: int, event_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "ts": ts, **event}


def _inference(
    rng: random.Random,
    family: Family,
    ts: int,
    event_id: str,
    tenant: str,
    user: str,
    template: tuple,
    truths: list[Truth],
) -> dict[str, Any]:
    service, feature, name, grounded, _, tin, tout = template
    model = MODELS[int(rng.random() * len(MODELS))]
    p_halluc, p_pii, quality = model[1], family.pii_noise, 0.85
    in_scale = out_scale = 1.0
    for truth in truths:
        if not truth.onset_ts <= ts < truth.end_ts:
            continue
        if truth.kind == "hallucination" and model[0] == truth.value:
            p_halluc += 0.12
        elif truth.kind == "pii_leak" and tenant == truth.value:
            p_pii = 0.02
        elif truth.kind == "cost" and service == truth.value:
            in_scale, out_scale = 5.0, 2.0
        elif truth.kind == "quality_ramp" and name == truth.value:
            quality -= 0.30 * min(1.0, (ts - truth.onset_ts) / RAMP_MS)
    tokens_in = max(8, int(tin * in_scale * rng.lognormvariate(0, 0.4)))
    tokens_out = max(1, int(tout * out_scale * rng.lognormvariate(0, 0.5)))
    hallucination = rng.random() < p_halluc
    q = quality + rng.gauss(0, 0.06) - (0.25 if hallucination else 0.0)
    scores = {"quality": round(min(1.0, max(0.0, q)), 3)}
    if grounded:
        g = rng.gauss(0.45, 0.15) if hallucination else rng.gauss(0.9, 0.05)
        scores["groundedness"] = round(min(1.0, max(0.0, g)), 3)
    noise = family.noise
    return {
        "event_id": event_id,
        "ts": ts,
        "type": "inference",
        "service": service,
        "feature": feature,
        "model": model[0],
        "prompt_template": name,
        "tenant": tenant,
        "user": user,
        "latency_ms": int(250 + tokens_out * 9 * rng.lognormvariate(0, 0.25) + tokens_in * 0.02),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": round((tokens_in * model[2] + tokens_out * model[3]) / 1e6, 6),
        "flags": {
            "hallucination": hallucination,
            "pii": rng.random() < p_pii,
            "system_prompt_leak": rng.random() < 0.0001,
            "cross_tenant": rng.random() < 0.00002,
            "prompt_injection": rng.random() < noise,
            "jailbreak": rng.random() < noise / 3,
            "refusal": rng.random() < 0.02,
        },
        "scores": scores,
    }


def _cumulative(weights: list[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


# ---- the families -----------------------------------------------------------------------------

ALL_KINDS = ("pii_burst", "pii_leak", "attacker", "hallucination", "cost")
PII_ATTACK = ("pii_burst", "attacker")
# One family a row: name, events/s, span, tenants, spread, heavy share, noise, kinds; then the
# options that differ from Family's defaults, and what the family is.
# fmt: off
_TABLE: tuple[tuple[str, float, int, int, int, float, float, tuple[str, ...], dict[str, Any], str], ...] = (
    ("trickle", 0.1, 2 * DAY, 6, 50, 0.17, 0.006, PII_ATTACK, {},
     "0.1 events/s over two days: counts never build up"),
    ("small", 1.0, 12 * HOUR, 8, 100, 0.17, 0.01, ALL_KINDS, {"warmup_ms": 2 * HOUR},
     "1 event/s, tenants 100x apart"),
    ("heavy", 10.0, 2 * HOUR, 5, 20, 0.17, 0.006, (*PII_ATTACK, "hallucination"), {"warmup_ms": 75 * MINUTE},
     "10 events/s, one account per tenant sends 17% of its events"),
    ("noisy", 5.0, 3 * HOUR, 8, 100, 0.10, 0.02, (*PII_ATTACK, "cost"), {"warmup_ms": 2 * HOUR},
     "injection classifier noise 2%"),
    ("clean", 5.0, 3 * HOUR, 8, 100, 0.10, 0.0, (*PII_ATTACK, "pii_leak"), {"warmup_ms": 30 * MINUTE},
     "no classifier noise at all"),
    ("ramp", 2.0, 6 * HOUR, 6, 30, 0.17, 0.003, ("quality_ramp", "pii_burst"), {"growth": 2.0},
     "volume doubling over 6 h; a 3-hour quality ramp"),
    ("quiet", 0.5, DAY, 8, 100, 0.17, 0.006, (), {"growth": 2.0},
     "a quiet day, volume doubling, nothing injected"),
    ("firehose", 1000.0, 90 * SECOND, 10, 1000, 0.17, 0.006, PII_ATTACK, {"attack_every_s": (2, 5)},
     "1000 events/s for 90 s: a burst in any of 10 tenants 1000x apart"),
)
# fmt: on
FAMILIES = {row[0]: Family(*row[:8], **row[8], note=row[9]) for row in _TABLE}


def quick(family: Family) -> Family:
    """A tiny version for tests: the same shape, at most 5,000 events over 20 minutes or a hundredth of the span
    (an attacker gets at least 7 of its 15 minutes: one cut to 4 minutes is too weak a signal at 2% noise)."""
    duration = max(20 * MINUTE, family.duration_ms // 100)
    rate = family.rate if family.rate * duration / 1000 <= 5_000 else 5_000 * 1000 / duration
    return Family(
        family.name,
        rate,
        duration,
        family.tenants,
        family.spread,
        family.heavy_share,
        family.noise,
        tuple(k for k in family.kinds if k in {"pii_burst", "attacker"}),
        family.growth,
        family.pii_noise,
        0,
        family.note,
        family.attack_every_s,
    )


def expected_events(family: Family) -> int:
    return int(family.rate * (1 + family.growth) / 2 * family.duration_ms / 1000)


def days(family: Family) -> float:
    return family.duration_ms / DAY


__all__ = ["FAMILIES", "Family", "Run", "Truth", "generate", "quick", "expected_events", "days"]
