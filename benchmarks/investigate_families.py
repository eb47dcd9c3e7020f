"""Incidents built unlike firebreak.synthetic, for `benchmarks/investigate_eval.py --families`.

    log = build("cheap_service", seed=3)
    log.events, log.rules, log.truths      # events in time order; what was planted, and why

firebreak.synthetic is what the investigation was tuned on. This generator shares none of its
code or shapes: its own world (five services whose calls cost from a twentieth of a cent to
tens of cents, tenants of geometric sizes in three regions, each using three of the services,
templates served by two models each, Poisson arrivals, Zipf users), its own incidents and
its own decoys. Every family plants one incident (``concurrent``: three) with the change
that caused it, and changes built to be mistaken for it:

- ``shared_version`` — one model_version value carried by every event of every model
  (a provider's date-stamped release); a cost explosion in one service (rule by service) or
  a PII leak of one tenant (rule over all traffic); decoys: a model update naming the shared
  version 2 min before onset, the same kind of change on another target 1 min after the cause;
- ``cheap_service`` — the cheapest service (a twentieth of a cent per call) costs 6×
  (rule `sum(cost_usd)` by service); decoys: a config change on an expensive service 1 min
  after the cause, a prompt change on another service 3 min before it;
- ``tenant_leak`` — PII in 4% of the answers of *all* of one tenant's services (rule by tenant,
  or over all traffic on odd seeds); the cause names only the tenant; decoys: a prompt
  change on one of that tenant's services 4 min before, one on another tenant 2 min before;
- ``ramp`` — one template's quality slides linearly by 0.3 over 1–4 h (by seed), then stays
  (rule: absolute `avg(scores.quality)` by service); decoys: a config change on the same
  template 45% into the ramp (a fix attempt: after the start), a data-pipeline change on a
  sibling template 5 min before the ramp, a deploy of another service near detection;
- ``group_only`` — hallucinations across a whole region (rule by the custom field `region`,
  even seeds) or a whole service (odd seeds), every model; the cause names only that region
  or service; decoys: the same kind of change on another region/service 1 min after, a model
  update naming one model 3 min before;
- ``concurrent`` — a cost explosion in one service, a PII leak of one tenant and a
  hallucination spike of one model within 20 minutes, each with its own cause and rule;
  each incident must rank its own cause above the others' (they are each other's decoys);
- ``odd_changes`` — change events with missing or extra dimensions: the cause names the model
  but no version (hallucination) or the service with extra fields (cost), plus fields no
  event has (`cluster`, `ticket`, a `labels` object); decoys: a change with no dimensions 1 min
  before onset, one naming a model that serves no traffic, one on another target with the
  same extra fields.

Ground truth comes from the generator: the cause's event id, the field=value set that pins
the target (``scope``), the true onset (for a ramp: where it begins, and its length).
Pure and deterministic: ``random.Random(f"{family}:{seed}")``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firebreak.core import Event, format_ts, parse_ts, validate_event
from firebreak.dsl import CompiledRule, load_rules

MINUTE = 60_000
T0 = parse_ts("2026-05-04T00:00:00Z")
LEAD_MS = 2 * MINUTE  # the cause precedes the onset by this much
RATE = 2.0  # inference events per second: small logs, the evaluation runs on shared cores

# service → (cost per call in USD, templates); each template is its own feature.
SERVICES = {
    "autocomplete": (0.0005, ("ac-inline-v3", "ac-block-v1")),
    "ticket-triage": (0.004, ("triage-v7", "route-v2")),
    "voice-bot": (0.012, ("greeting-v2", "intent-v9")),
    "contract-review": (0.06, ("clause-extract-v4", "redline-v2")),
    "research-agent": (0.3, ("plan-v1", "browse-summarize-v5")),
}
MODELS = ("orca-7b", "lynx-70b", "heron-mini", "kestrel-pro")
TENANT_NAMES = ("northwind", "umbrella", "tyrell", "wonka", "oscorp", "stark")
REGIONS = ("eu", "us", "ap")
USERS_PER_TENANT = 60

RULES = {
    "spend_by_service": "sum(cost_usd) > 3x baseline over 15m by service min 20 events -> sev2",
    "leak_all": "rate(pii) > 0.004 over 10m min 300 events -> sev2",
    "leak_by_tenant": "rate(pii) > 0.015 over 10m by tenant min 60 events -> sev2",
    "quality_by_service": "avg(scores.quality) < 0.78 over 15m by service min 30 events -> sev3",
    "halluc_by_region": "rate(hallucination) > 0.06 over 10m by region min 100 events -> sev2",
    "halluc_by_service": "rate(hallucination) > 0.06 over 10m by service min 60 events -> sev2",
    "halluc_by_model": "rate(hallucination) > 0.05 over 10m by model min 100 events -> sev2",
}
FAMILIES = ("shared_version", "cheap_service", "tenant_leak", "ramp", "group_only", "concurrent", "odd_changes")


@dataclass(frozen=True)
class Truth:
    family: str
    category: str
    rule: str  # the rule whose incident is investigated
    group: dict[str, str]  # the incident's group ({} for a rule without `by`)
    cause_event_id: str
    scope: frozenset[tuple[str, str]]  # every field=value that pins the target down
    onset_ts: int  # first event affected (a ramp: where it begins)
    end_ts: int
    ramp_ms: int = 0  # drifts: the ramp's length

    @property
    def value(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(self.scope))


@dataclass
class Log:
    family: str
    seed: int
    events: list[Event]
    rules: tuple[CompiledRule, ...]
    truths: list[Truth]
    decoys: list[str]  # event ids of the planted decoy changes


@dataclass
class _Effect:
    """What an incident does to the events it touches, from ``start`` to ``end``."""

    touches: Callable[[dict[str, Any]], bool]
    start: int
    end: int
    cost: float = 1.0  # cost multiplier
    pii: float = 0.0  # probability of PII in an answer
    halluc: float = 0.0  # added hallucination probability
    quality_drop: float = 0.0  # at the end of the ramp
    ramp_ms: int = 0


@dataclass
class _World:
    rng: random.Random
    tenants: list[tuple[str, float, str, tuple[str, ...]]]  # name, share, region, services
    serving: dict[str, tuple[str, ...]]  # template → the two models serving it
    versions: dict[str, str]  # model → the model_version its events carry
    halluc: dict[str, float]  # model → base hallucination rate
    quality: dict[str, float]  # template → base quality
    effects: list[_Effect] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)


def _world(rng: random.Random, shared_version: str | None = None) -> _World:
    names = list(TENANT_NAMES)
    rng.shuffle(names)
    shares = [0.32 * 0.72**i for i in range(len(names))]
    total = sum(shares)
    services = list(SERVICES)
    tenants = []
    for i, name in enumerate(names):
        used = tuple(sorted({services[i % len(services)], *rng.sample(services, 2)}))
        tenants.append((name, shares[i] / total, REGIONS[i % len(REGIONS)], used))
    templates = [t for _, ts in SERVICES.values() for t in ts]
    return _World(
        rng,
        tenants,
        {t: tuple(rng.sample(MODELS, 2)) for t in templates},
        {m: shared_version or f"{m}@2026-0{rng.randint(1, 4)}" for m in MODELS},
        {m: rng.uniform(0.008, 0.02) for m in MODELS},
        {t: rng.uniform(0.84, 0.9) for t in templates},
    )


def _service_of(template: str) -> str:
    return next(s for s, (_, ts) in SERVICES.items() if template in ts)


def _events(w: _World, start: int, span_ms: int) -> list[dict[str, Any]]:
    rng = w.rng
    names = [t[0] for t in w.tenants]
    weights = [t[1] for t in w.tenants]
    by_name = {t[0]: t for t in w.tenants}
    user_weights = [1 / (k + 1) ** 1.1 for k in range(USERS_PER_TENANT)]
    out = []
    ts = start
    per_ms = RATE / 1000
    n = 0
    while True:
        ts += max(1, int(rng.expovariate(per_ms)))
        if ts >= start + span_ms:
            return out
        n += 1
        tenant = rng.choices(names, weights)[0]
        _, _, region, services = by_name[tenant]
        service = rng.choice(services)
        cost, templates = SERVICES[service]
        template = rng.choice(templates)
        model = rng.choice(w.serving[template])
        user = f"{tenant}-u{rng.choices(range(USERS_PER_TENANT), user_weights)[0]:03d}"
        e: dict[str, Any] = {
            "event_id": f"ev-{n:07d}",
            "ts": ts,
            "type": "inference",
            "tenant": tenant,
            "region": region,
            "service": service,
            "feature": template.rsplit("-", 1)[0],
            "prompt_template": template,
            "model": model,
            "model_version": w.versions[model],
            "user": user,
        }
        mult, pii, halluc, quality = 1.0, 0.0008, w.halluc[model], w.quality[template]
        for eff in w.effects:
            if eff.start <= ts < eff.end and eff.touches(e):
                mult *= eff.cost
                pii = max(pii, eff.pii)
                halluc += eff.halluc
                if eff.ramp_ms:
                    quality -= eff.quality_drop * min(1.0, (ts - eff.start) / eff.ramp_ms)
        tokens_in = int(rng.lognormvariate(math.log(600), 0.4) * mult)
        e.update(
            tokens_in=tokens_in,
            tokens_out=int(rng.lognormvariate(math.log(250), 0.5) * mult),
            cost_usd=round(cost * rng.lognormvariate(0, 0.3) * mult, 7),
            latency_ms=int(rng.lognormvariate(math.log(900), 0.35)),
            flags={
                "pii": rng.random() < pii,
                "hallucination": rng.random() < halluc,
                "prompt_injection": rng.random() < 0.002,
                "jailbreak": rng.random() < 0.001,
            },
            scores={"quality": round(min(1.0, max(0.0, rng.gauss(quality, 0.05))), 4)},
        )
        out.append(e)


def _change(w: _World, event_id: str, ts: int, kind: str, description: str, **dims: Any) -> str:
    w.changes.append(
        {"event_id": event_id, "ts": ts, "type": "change", "kind": kind, **dims, "description": description}
    )
    return event_id


def _tenant_of_service(w: _World, service: str, rng: random.Random) -> str:
    return rng.choice([t[0] for t in w.tenants if service in t[3]])


# ---- families --------------------------------------------------------------------------


def _cost(w: _World, fam: str, service: str, onset: int, rule: str, cause: str | None = None, **extra: Any) -> Truth:
    end = onset + 40 * MINUTE
    w.effects.append(_Effect(lambda e: e["service"] == service, onset, end, cost=6.0))
    cause = cause or _change(
        w,
        f"{fam}-cause",
        onset - LEAD_MS,
        "config_change",
        f"{service}: max_tokens 512 → 4096, retries 1 → 3",
        service=service,
        **extra,
    )
    group = {"service": service} if "by_service" in rule else {}
    return Truth(fam, "cost", rule, group, cause, frozenset({("service", service)}), onset, end)


def _leak(w: _World, fam: str, tenant: str, onset: int, rule: str, **extra: Any) -> Truth:
    end = onset + 40 * MINUTE
    w.effects.append(_Effect(lambda e: e["tenant"] == tenant, onset, end, pii=0.04))
    cause = _change(
        w,
        f"{fam}-cause",
        onset - LEAD_MS,
        "prompt_change",
        f"{tenant}: answers may now quote the account's CRM notes",
        tenant=tenant,
        **extra,
    )
    group = {"tenant": tenant} if "by_tenant" in rule else {}
    return Truth(fam, "data_leakage", rule, group, cause, frozenset({("tenant", tenant)}), onset, end)


def _shared_version(w: _World, rng: random.Random, seed: int) -> tuple[list[Truth], list[str]]:
    onset = T0 + 110 * MINUTE
    shared = w.versions[MODELS[0]]
    decoys = [
        _change(
            w,
            "decoy-shared-version",
            onset - 2 * MINUTE,
            "model_update",
            f"all models: provider release {shared}",
            model_version=shared,
        )
    ]
    if seed % 2:
        service = rng.choice(["ticket-triage", "voice-bot", "contract-review"])
        truth = _cost(w, "shared_version", service, onset, "spend_by_service")
        other = rng.choice([s for s in SERVICES if s != service])
        decoys.append(
            _change(
                w,
                "decoy-near",
                onset - LEAD_MS + MINUTE,
                "config_change",
                f"{other}: max_tokens 1024 → 2048",
                service=other,
            )
        )
    else:
        tenant = w.tenants[rng.randint(0, 2)][0]
        truth = _leak(w, "shared_version", tenant, onset, "leak_all")
        other = rng.choice([t[0] for t in w.tenants if t[0] != tenant])
        decoys.append(
            _change(w, "decoy-near", onset - LEAD_MS + MINUTE, "prompt_change", f"{other}: new greeting", tenant=other)
        )
    return [truth], decoys


def _cheap_service(w: _World, rng: random.Random, seed: int) -> tuple[list[Truth], list[str]]:
    onset = T0 + rng.randint(100, 130) * MINUTE
    truth = _cost(w, "cheap_service", "autocomplete", onset, "spend_by_service")
    pricey = rng.choice(["contract-review", "research-agent"])
    decoys = [
        _change(
            w,
            "decoy-near",
            onset - LEAD_MS + MINUTE,
            "config_change",
            f"{pricey}: temperature 0.2 → 0.3",
            service=pricey,
        ),
        _change(
            w,
            "decoy-before",
            onset - LEAD_MS - 3 * MINUTE,
            "prompt_change",
            "ticket-triage: shorter system prompt",
            service="ticket-triage",
        ),
    ]
    return [truth], decoys


def _tenant_leak(w: _World, rng: random.Random, seed: int) -> tuple[list[Truth], list[str]]:
    onset = T0 + rng.randint(100, 130) * MINUTE
    tenant, _, _, services = w.tenants[rng.randint(0, 2)]
    truth = _leak(w, "tenant_leak", tenant, onset, "leak_all" if seed % 2 else "leak_by_tenant")
    other = rng.choice([t[0] for t in w.tenants if t[0] != tenant])
    sibling = rng.choice(services)
    decoys = [
        _change(
            w,
            "decoy-sibling",
            onset - LEAD_MS - 4 * MINUTE,
            "prompt_change",
            f"{sibling} for {tenant}: tone of voice",
            tenant=tenant,
            service=sibling,
        ),
        _change(
            w,
            "decoy-near",
            onset - LEAD_MS - 2 * MINUTE,
            "prompt_change",
            f"{other}: answers may now quote the account's CRM notes",
            tenant=other,
        ),
    ]
    return [truth], decoys


def _ramp(w: _World, rng: random.Random, seed: int) -> tuple[list[Truth], list[str]]:
    ramp = (60 + 60 * (seed % 4)) * MINUTE
    onset = T0 + 90 * MINUTE
    service = rng.choice(["ticket-triage", "voice-bot", "contract-review"])
    template, sibling = rng.sample(SERVICES[service][1], 2)
    end = onset + ramp + 60 * MINUTE
    w.effects.append(_Effect(lambda e: e["prompt_template"] == template, onset, end, quality_drop=0.3, ramp_ms=ramp))
    cause = _change(
        w,
        "ramp-cause",
        onset - LEAD_MS,
        "data_pipeline",
        f"re-embed the corpus behind {template} (new tokenizer)",
        service=service,
        prompt_template=template,
    )
    other = rng.choice([s for s in SERVICES if s != service])
    decoys = [
        _change(
            w,
            "decoy-fix-attempt",
            onset + int(0.45 * ramp),
            "config_change",
            f"{template}: top_k 8 → 12 (quality complaints)",
            service=service,
            prompt_template=template,
        ),
        _change(
            w,
            "decoy-sibling",
            onset - LEAD_MS - 5 * MINUTE,
            "data_pipeline",
            f"re-embed the corpus behind {sibling}",
            service=service,
            prompt_template=sibling,
        ),
        _change(w, "decoy-late", onset + int(0.6 * ramp), "deploy", f"{other} v2.3.1", service=other),
    ]
    scope = frozenset({("prompt_template", template), ("feature", template.rsplit("-", 1)[0])})
    truth = Truth(
        "ramp",
        "quality_degradation",
        "quality_by_service",
        {"service": service},
        cause,
        scope | {("service", service)},
        onset,
        end,
        ramp,
    )
    return [truth], decoys


def _group_only(w: _World, rng: random.Random, seed: int) -> tuple[list[Truth], list[str]]:
    onset = T0 + rng.randint(100, 130) * MINUTE
    end = onset + 40 * MINUTE
    if seed % 2 == 0:
        dim, rule = "region", "halluc_by_region"
        value = rng.choice(REGIONS[:2])
        other = next(r for r in REGIONS if r != value)
        what = "inference cluster moved to a new GPU pool"
    else:
        dim, rule = "service", "halluc_by_service"
        value = rng.choice(["ticket-triage", "voice-bot", "contract-review", "research-agent"])
        other = rng.choice([s for s in SERVICES if s != value])
        what = "retrieval disabled by a feature flag"
    w.effects.append(_Effect(lambda e: e[dim] == value, onset, end, halluc=0.12))
    cause = _change(w, "group-cause", onset - LEAD_MS, "config_change", f"{value}: {what}", **{dim: value})
    decoys = [
        _change(w, "decoy-near", onset - LEAD_MS + MINUTE, "config_change", f"{other}: {what}", **{dim: other}),
        _change(
            w,
            "decoy-model",
            onset - LEAD_MS - 3 * MINUTE,
            "model_update",
            f"{MODELS[seed % 4]}: new weights",
            model=MODELS[seed % 4],
        ),
    ]
    truth = Truth("group_only", "hallucination", rule, {dim: value}, cause, frozenset({(dim, value)}), onset, end)
    return [truth], decoys


def _concurrent(w: _World, rng: random.Random, seed: int) -> tuple[list[Truth], list[str]]:
    base = T0 + rng.randint(100, 120) * MINUTE
    offsets = [0, 8 * MINUTE, 16 * MINUTE]
    rng.shuffle(offsets)
    service = rng.choice(["voice-bot", "contract-review", "ticket-triage"])
    tenant = w.tenants[rng.randint(0, 2)][0]
    served = {m: sum(m in pair for pair in w.serving.values()) for m in MODELS}
    model = rng.choice([m for m in MODELS if served[m] >= sorted(served.values())[-2]])  # a busy model
    cost = _cost(w, "concurrent-cost", service, base + offsets[0], "spend_by_service")
    leak = _leak(w, "concurrent-leak", tenant, base + offsets[1], "leak_by_tenant")
    onset = base + offsets[2]
    version = f"{model}@2026-05"
    w.effects.append(_Effect(lambda e: e["model"] == model, onset, onset + 40 * MINUTE, halluc=0.08))
    cause = _change(
        w,
        "concurrent-halluc-cause",
        onset - LEAD_MS,
        "model_update",
        f"{model} → {version}",
        model=model,
        model_version=version,
    )
    w.versions_after = (model, version, onset)  # type: ignore[attr-defined]
    halluc = Truth(
        "concurrent-halluc",
        "hallucination",
        "halluc_by_model",
        {"model": model},
        cause,
        frozenset({("model", model), ("model_version", version)}),
        onset,
        onset + 40 * MINUTE,
    )
    return [cost, leak, halluc], []


def _odd_changes(w: _World, rng: random.Random, seed: int) -> tuple[list[Truth], list[str]]:
    onset = T0 + rng.randint(100, 130) * MINUTE
    extras = {"cluster": "gke-prod-3", "ticket": f"CHG-{4000 + seed}", "labels": {"team": "ml-platform"}}
    if seed % 2:
        model = rng.choice(MODELS)
        end = onset + 40 * MINUTE
        w.effects.append(_Effect(lambda e: e["model"] == model, onset, end, halluc=0.08))
        cause = _change(
            w, "odd-cause", onset - LEAD_MS, "model_update", f"{model}: weights refreshed", model=model, **extras
        )  # no model_version: the change names the model only
        other = rng.choice([m for m in MODELS if m != model])
        truth = Truth(
            "odd_changes",
            "hallucination",
            "halluc_by_model",
            {"model": model},
            cause,
            frozenset({("model", model)}),
            onset,
            end,
        )
        decoys = [
            _change(
                w,
                "decoy-ghost",
                onset - LEAD_MS - MINUTE,
                "model_update",
                "falcon-xl: new weights",
                model="falcon-xl",
                **extras,
            ),  # a model that serves no traffic here
            _change(
                w,
                "decoy-other",
                onset - LEAD_MS + MINUTE,
                "model_update",
                f"{other}: weights refreshed",
                model=other,
                **extras,
            ),
        ]
    else:
        service = rng.choice(["ticket-triage", "voice-bot", "contract-review"])
        truth = _cost(w, "odd_changes", service, onset, "spend_by_service", cause=None, **extras)
        other = rng.choice([s for s in SERVICES if s != service])
        decoys = [
            _change(
                w,
                "decoy-other",
                onset - LEAD_MS + MINUTE,
                "config_change",
                f"{other}: retries 1 → 3",
                service=other,
                **extras,
            )
        ]
    decoys.append(
        _change(
            w,
            "decoy-no-dimensions",
            onset - MINUTE,
            "deploy",
            "weekly platform release",
            cluster="gke-prod-3",
            ticket=f"CHG-{5000 + seed}",
        )
    )
    return [truth], decoys


BUILDERS = {
    "shared_version": _shared_version,
    "cheap_service": _cheap_service,
    "tenant_leak": _tenant_leak,
    "ramp": _ramp,
    "group_only": _group_only,
    "concurrent": _concurrent,
    "odd_changes": _odd_changes,
}


def build(family: str, seed: int = 1) -> Log:
    rng = random.Random(f"{family}:{seed}")
    w = _world(rng, shared_version="2026-03-01" if family == "shared_version" else None)
    truths, decoys = BUILDERS[family](w, rng, seed)
    span = max(t.end_ts for t in truths) + 20 * MINUTE - T0
    raw = _events(w, T0, span)
    switched = getattr(w, "versions_after", None)
    if switched:  # a model update: the model's events carry the new version from its onset
        model, version, at = switched
        for e in raw:
            if e["model"] == model and e["ts"] >= at - LEAD_MS:
                e["model_version"] = version
    items = raw + w.changes
    events = sorted((validate_event({**e, "ts": format_ts(e["ts"])}) for e in items), key=lambda e: (e.ts, e.event_id))
    names = sorted({t.rule for t in truths})
    source = "\n\n".join(f"rule {n}:\n  {RULES[n]}" for n in names)
    rules, problems = load_rules({f"{family}.rules": source})
    if problems:
        raise ValueError(f"{family}: rules do not load: {problems}")
    return Log(family, seed, events, tuple(rules), truths, decoys)
