"""Deterministic synthetic AI traffic, with incidents injected on purpose.

    traffic = Traffic(seed=7, start_ms=T0, duration_ms=3 * HOUR, rate=20.0,
                      injections=[Injection("hallucination", onset_ms=90 * MINUTE)])
    traffic.truths          # what was injected: category, dimension=value, cause, onset, end
    for event in traffic.events(): ...

Pure: no I/O, no clock; every random draw comes from ``random.Random(seed)``,
so the same arguments give the same events, byte for byte.

Normal traffic: 10 tenants (skewed sizes, thousands of users, a few heavy
users each) × 5 services / 8 features / 8 prompt templates × 5 models with
versions. Latency follows tokens out; cost follows the model's prices; guard
flags come at realistic base rates (hallucination 1-2% by model, pii 0.04%,
prompt injection 0.08%, ...); quality ≈ 0.85, lower on hallucinated answers.
Half a percent of events carry raw ``prompt``/``output`` text (never to appear
in a record). Arrivals are Poisson with a mild daily cycle. About 1% of inference events
are emitted up to a few seconds late (out of order, well inside the engine's
default 30 s lateness). Harmless change events (deploys and config changes on
services no incident touches, away from any onset) are the decoys.

Injections, one kind per category, each preceded by the change that causes
it (its ground-truth cause) and followed by the change that undoes it:

- hallucination: a model_update of one model; hallucinations on it jump;
- data_leakage: a prompt_change of one tenant; pii / system_prompt_leak flags;
- quality_degradation: a data_pipeline change feeding one prompt template;
  scores.quality drifts down over ~20 minutes;
- adversarial: a handful of users of one tenant send prompt injections and
  jailbreaks (no change event causes it);
- cost: a config_change of one service; tokens and cost per call jump.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SECOND = 1_000
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
CATEGORIES = ("hallucination", "data_leakage", "quality_degradation", "adversarial", "cost")
DIMENSION = {
    "hallucination": "model",
    "data_leakage": "tenant",
    "quality_degradation": "prompt_template",
    "adversarial": "tenant",
    "cost": "service",
}


# ---- the world --------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    name: str
    version: str
    next_version: str  # what a model_update injection rolls out
    usd_in: float  # per million tokens
    usd_out: float
    first_token_ms: float
    ms_per_token: float
    hallucination: float  # base rate


MODELS = {
    m.name: m
    for m in (
        Model("gpt-4o", "2024-08-06", "2024-11-20", 2.50, 10.00, 420, 11.0, 0.012),
        Model("gpt-4o-mini", "2024-07-18", "2025-01-15", 0.15, 0.60, 260, 6.0, 0.018),
        Model("claude-3-5-sonnet", "20241022", "20250219", 3.00, 15.00, 520, 13.0, 0.010),
        Model("llama-3.1-70b", "instruct-q8-r3", "instruct-q8-r4", 0.60, 0.80, 340, 9.0, 0.016),
        Model("mistral-large", "2411", "2502", 2.00, 6.00, 380, 10.0, 0.014),
    )
}


@dataclass(frozen=True)
class Template:
    name: str
    service: str
    feature: str
    weight: float  # share of traffic
    tokens_in: int  # median
    tokens_out: int
    models: tuple[tuple[str, float], ...]
    grounded: bool  # retrieval-backed: carries scores.groundedness
    quality: float = 0.85


TEMPLATES = (
    Template(
        "support-chat-v7",
        "support-bot",
        "chat",
        0.24,
        1400,
        220,
        (("gpt-4o", 0.6), ("claude-3-5-sonnet", 0.3), ("gpt-4o-mini", 0.1)),
        True,
    ),
    Template(
        "ticket-summary-v3",
        "support-bot",
        "ticket-summary",
        0.10,
        2600,
        160,
        (("gpt-4o-mini", 0.8), ("llama-3.1-70b", 0.2)),
        False,
        0.87,
    ),
    Template(
        "rag-answer-v12",
        "search-assistant",
        "answer",
        0.20,
        3200,
        300,
        (("claude-3-5-sonnet", 0.5), ("gpt-4o", 0.3), ("mistral-large", 0.2)),
        True,
        0.84,
    ),
    Template(
        "query-rewrite-v2",
        "search-assistant",
        "query-rewrite",
        0.12,
        350,
        40,
        (("gpt-4o-mini", 0.7), ("llama-3.1-70b", 0.3)),
        False,
        0.88,
    ),
    Template(
        "code-complete-v5",
        "code-helper",
        "completion",
        0.13,
        1800,
        120,
        (("llama-3.1-70b", 0.6), ("mistral-large", 0.4)),
        False,
        0.86,
    ),
    Template(
        "code-review-v1",
        "code-helper",
        "review",
        0.05,
        4200,
        520,
        (("claude-3-5-sonnet", 0.7), ("gpt-4o", 0.3)),
        False,
        0.83,
    ),
    Template(
        "doc-summary-v4",
        "doc-summarizer",
        "summarize",
        0.10,
        5200,
        380,
        (("mistral-large", 0.5), ("gpt-4o-mini", 0.5)),
        True,
        0.85,
    ),
    Template(
        "sales-email-v2",
        "sales-copilot",
        "email-draft",
        0.06,
        900,
        260,
        (("gpt-4o", 0.5), ("gpt-4o-mini", 0.5)),
        False,
        0.86,
    ),
)
SERVICES = tuple(dict.fromkeys(t.service for t in TEMPLATES))

# (tenant, share of traffic, users)
TENANTS = (
    ("acme", 0.20, 1400),
    ("globex", 0.16, 1100),
    ("initech", 0.13, 900),
    ("umbrella", 0.11, 800),
    ("hooli", 0.10, 700),
    ("stark", 0.08, 600),
    ("wayne", 0.07, 500),
    ("wonka", 0.06, 400),
    ("tyrell", 0.05, 350),
    ("cyberdyne", 0.04, 250),
)

# Base rates of the guard classifiers' flags (hallucination is per model, above).
FLAG_RATES = {
    "pii": 0.0004,
    "system_prompt_leak": 0.0001,
    "cross_tenant": 0.00002,
    "prompt_injection": 0.0008,
    "jailbreak": 0.0003,
}

# Raw text a few events carry (debug sampling); it must never reach a record.
RAW_PROMPTS = (
    "How do I reset my password?",
    "Summarise this ticket for the on-call engineer.",
    "Find the refund policy for annual plans.",
    "Write a follow-up email to the customer.",
)
RAW_OUTPUTS = (
    "Go to Settings > Security and choose Reset.",
    "Customer reports intermittent 502s since Monday.",
    "Annual plans are refundable within 30 days.",
    "Hi Sam, thanks for your time today...",
)


# ---- injections and their ground truth ---------------------------------------------------


@dataclass(frozen=True)
class Injection:
    """One incident to inject. ``onset_ms`` is an offset from the start of the log."""

    category: str
    onset_ms: int
    duration_ms: int = 45 * MINUTE
    target: str | None = None  # model / tenant / prompt template / tenant / service; None: a default
    intensity: float = 1.0  # scales how far the metric moves

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}; expected one of {', '.join(CATEGORIES)}")


@dataclass(frozen=True)
class GroundTruth:
    category: str
    dimension: str  # the event field the incident is confined to
    value: str
    cause_event_id: str | None  # the change event that caused it (None for adversarial)
    cause_ts: int | None
    onset_ts: int  # first event affected
    end_ts: int  # first event no longer affected
    users: tuple[str, ...] = ()  # adversarial: the attacking users
    description: str = ""
    scope: tuple[tuple[str, str], ...] = ()  # every field=value that pins the target down (dimension=value first)

    def affects(self, event: dict[str, Any], ts: int) -> bool:
        """Whether the injection changed this event (``ts``: its time in epoch ms)."""
        if not self.onset_ts <= ts < self.end_ts or event.get("type", "inference") != "inference":
            return False
        return event.get(self.dimension) == self.value and (not self.users or event.get("user") in self.users)

    def touches(self, group: dict[str, Any]) -> bool:
        """Whether an incident group points at this injection: it shares at least one field with
        the scope and agrees on all shared fields, or it is one of the attacking users."""
        if group.get("user") in self.users:
            return True
        shared = [(k, v) for k, v in self.scope if k in group]
        return bool(shared) and all(group[k] == v for k, v in shared)


@dataclass
class _Effect:
    truth: GroundTruth
    intensity: float
    lead_ms: int  # the cause precedes the onset by this much (rollout)
    attack_rate: float = 0.0  # adversarial: extra events per second while active
    data: dict[str, Any] = field(default_factory=dict)


REPORT_RATES = {"wrong": 0.02, "thumbs_down": 0.03, "data_exposure": 0.10}  # of the answers that qualify
LEAD_MS = 2 * MINUTE  # a change reaches traffic this long after it is recorded
QUALITY_RAMP_MS = 20 * MINUTE
ATTACKERS = 5
ATTACK_RATE_PER_USER = 0.25  # events per second


class Traffic:
    def __init__(
        self,
        seed: int,
        start_ms: int,
        duration_ms: int,
        rate: float,
        injections: tuple[Injection, ...] | list[Injection] = (),
        decoys: bool = True,
        disorder: float = 0.01,
        max_delay_ms: int = 5_000,
        raw_text: float = 0.005,
        reports: bool = True,
    ) -> None:
        if rate <= 0 or duration_ms <= 0:
            raise ValueError("rate and duration must be positive")
        self.seed, self.start_ms, self.end_ms, self.rate = seed, start_ms, start_ms + duration_ms, rate
        self.disorder, self.max_delay_ms, self.raw_text = disorder, max_delay_ms, raw_text
        self.reports = reports
        rng = random.Random(f"{seed}:world")
        self._users = {name: [f"usr_{rng.getrandbits(40):010x}" for _ in range(n)] for name, _, n in TENANTS}
        self._tenant_templates = {name: [rng.uniform(0.3, 1.7) * t.weight for t in TEMPLATES] for name, _, _ in TENANTS}
        self._ids = 0
        self.changes: list[dict[str, Any]] = []
        self._effects = [self._plan(rng, inj) for inj in injections]
        self.truths = [e.truth for e in self._effects]
        if decoys:
            self._plan_decoys(rng)
        self.changes.sort(key=lambda c: c["ts"])

    # ---- planning -------------------------------------------------------------------------

    def _change(self, ts: int, kind: str, description: str, **dims: str) -> dict[str, Any]:
        self._ids += 1
        change = {
            "event_id": f"chg-{self.seed}-{self._ids:04d}",
            "ts": ts,
            "type": "change",
            "kind": kind,
            **dims,
            "description": description,
        }
        self.changes.append(change)
        return change

    def _plan(self, rng: random.Random, inj: Injection) -> _Effect:
        onset = self.start_ms + inj.onset_ms
        end = onset + inj.duration_ms
        cause_ts = onset - LEAD_MS
        dim = DIMENSION[inj.category]
        value = inj.target or self._default_target(rng, inj.category)
        known = self._targets(inj.category)
        if value not in known:
            raise ValueError(f"{inj.category}: unknown {dim} {value!r}; one of {', '.join(known)}")
        data: dict[str, Any] = {}
        users: tuple[str, ...] = ()
        scope: list[tuple[str, str]] = []
        cause: dict[str, Any] | None
        if inj.category == "hallucination":
            model = MODELS[value]
            cause = self._change(
                cause_ts,
                "model_update",
                f"{value} {model.version} → {model.next_version}",
                model=value,
                model_version=model.next_version,
            )
            self._change(
                end, "model_update", f"roll back {value} to {model.version}", model=value, model_version=model.version
            )
            data["version"] = model.next_version
            scope.append(("model_version", model.next_version))
        elif inj.category == "data_leakage":
            cause = self._change(
                cause_ts, "prompt_change", f"{value}: system prompt now includes account records", tenant=value
            )
            self._change(end, "prompt_change", f"{value}: revert system prompt", tenant=value)
        elif inj.category == "quality_degradation":
            template = next(t for t in TEMPLATES if t.name == value)
            service = template.service
            scope += [("service", service), ("feature", template.feature)]
            cause = self._change(
                cause_ts,
                "data_pipeline",
                f"re-index knowledge base behind {value} (new chunker)",
                service=service,
                prompt_template=value,
            )
            self._change(
                end, "data_pipeline", f"restore previous index behind {value}", service=service, prompt_template=value
            )
        elif inj.category == "adversarial":
            cause, cause_ts = None, None
            users = tuple(rng.sample(self._users[value], ATTACKERS))
            data["rate"] = ATTACKERS * ATTACK_RATE_PER_USER * inj.intensity
        else:  # cost
            cause = self._change(
                cause_ts, "config_change", f"{value}: max_tokens 1024 → 8192, retrieval top_k 8 → 48", service=value
            )
            self._change(end, "config_change", f"{value}: revert max_tokens and top_k", service=value)
        truth = GroundTruth(
            inj.category,
            dim,
            value,
            cause["event_id"] if cause else None,
            cause_ts,
            onset,
            end,
            users,
            cause["description"] if cause else f"{len(users)} users of {value} probing with injections/jailbreaks",
            ((dim, value), *scope),
        )
        return _Effect(truth, inj.intensity, LEAD_MS, data.get("rate", 0.0), data)

    @staticmethod
    def _targets(category: str) -> list[str]:
        dim = DIMENSION[category]
        if dim == "model":
            return list(MODELS)
        if dim == "tenant":
            return [name for name, _, _ in TENANTS]
        return [t.name for t in TEMPLATES] if dim == "prompt_template" else list(SERVICES)

    def _default_target(self, rng: random.Random, category: str) -> str:
        """A well-trafficked target, chosen by the seed."""
        if category == "hallucination":
            return rng.choice(["gpt-4o", "claude-3-5-sonnet", "gpt-4o-mini"])
        if category in {"data_leakage", "adversarial"}:
            return rng.choice([name for name, _, _ in TENANTS[:3]])
        if category == "quality_degradation":
            return rng.choice(["support-chat-v7", "rag-answer-v12"])
        return rng.choice(["support-bot", "search-assistant"])

    def _plan_decoys(self, rng: random.Random) -> None:
        """Deploys and config changes every ~25 minutes, on services no injection targets,
        at least 10 minutes away from every injected cause and onset."""
        busy = {t.value for t in self.truths}
        services = [s for s in SERVICES if s not in busy] or list(SERVICES)
        avoid = [t for truth in self.truths for t in (truth.cause_ts, truth.onset_ts) if t is not None]
        at = self.start_ms + rng.randint(5, 20) * MINUTE
        while at < self.end_ms:
            if all(abs(at - t) >= 10 * MINUTE for t in avoid):
                service = rng.choice(services)
                if rng.random() < 0.6:
                    self._change(at, "deploy", f"{service} build {rng.getrandbits(28):07x}", service=service)
                else:
                    knob = rng.choice(
                        [
                            "request timeout 30s → 45s",
                            "log sampling 1% → 2%",
                            "cache TTL 5m → 10m",
                            "retry budget 2 → 3",
                        ]
                    )
                    self._change(at, "config_change", f"{service}: {knob}", service=service)
            at += rng.randint(15, 35) * MINUTE + rng.randint(0, 59_999)

    # ---- events ---------------------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        """Every event, in time order except ~``disorder`` of inference events emitted late."""
        rng = random.Random(f"{self.seed}:traffic")
        report_rng = random.Random(f"{self.seed}:reports")  # its own draws: reports leave the rest unchanged
        clock = _Clock()
        changes = iter(self.changes)
        next_change = next(changes, None)
        delayed: list[tuple[int, int, dict[str, Any]]] = []
        tenant_cum = _cumulative([w for _, w, _ in TENANTS])
        template_cum = {name: _cumulative(ws) for name, ws in self._tenant_templates.items()}
        model_cum = [_cumulative([w for _, w in t.models]) for t in TEMPLATES]
        attacks = [e for e in self._effects if e.attack_rate > 0]
        ts = float(self.start_ms)
        n = 0
        while True:
            ts_ms = int(ts)
            if ts_ms >= self.end_ms:
                break
            while delayed and delayed[0][0] <= ts_ms:
                yield heapq.heappop(delayed)[2]
            while next_change is not None and next_change["ts"] <= ts_ms:
                yield {**next_change, "ts": clock.text(next_change["ts"])}
                next_change = next(changes, None)
            n += 1
            attack_rate = sum(e.attack_rate for e in attacks if e.truth.onset_ts <= ts_ms < e.truth.end_ts)
            base_rate = self.rate * (1 + 0.2 * math.sin(2 * math.pi * ((ts_ms % DAY) / DAY - 0.375)))
            if attack_rate and rng.random() * (base_rate + attack_rate) < attack_rate:
                event = self._attack(rng, ts_ms, n, clock, attacks)
            else:
                tenant_i = _pick(tenant_cum, rng.random())
                event = self._normal(rng, ts_ms, n, clock, TENANTS[tenant_i][0], template_cum, model_cum)
            if rng.random() < self.disorder:
                heapq.heappush(delayed, (ts_ms + rng.randint(200, self.max_delay_ms), n, event))
            else:
                yield event
            if self.reports:
                report = self._report(report_rng, event, ts_ms, clock)
                if report is not None and report[0] < self.end_ms:
                    heapq.heappush(delayed, (report[0], n + 0.5, report[1]))
            ts += rng.expovariate(base_rate + attack_rate) * 1000
        while delayed:
            yield heapq.heappop(delayed)[2]
        for change in [next_change, *changes]:
            if change is not None and change["ts"] < self.end_ms:
                yield {**change, "ts": clock.text(change["ts"])}

    def _report(
        self, rng: random.Random, answer: dict[str, Any], ts: int, clock: _Clock
    ) -> tuple[int, dict[str, Any]] | None:
        """Now and then a user reports the answer, 20 s to 2 min after it: hallucinated answers
        as wrong (2%), poor ones with a thumbs-down (3% under quality 0.6), and answers carrying
        another customer's data in an injected leak as data_exposure (10%). The client knows
        the tenant, user, service and feature — not the model: investigations join on `ref`."""
        flags = answer["flags"]
        if flags["hallucination"] and rng.random() < REPORT_RATES["wrong"]:
            label = "wrong"
        elif answer["scores"]["quality"] < 0.6 and rng.random() < REPORT_RATES["thumbs_down"]:
            label = "thumbs_down"
        elif (
            flags["pii"]
            and rng.random() < REPORT_RATES["data_exposure"]
            and any(e.truth.category == "data_leakage" and e.truth.affects(answer, ts) for e in self._effects)
        ):
            label = "data_exposure"
        else:
            return None
        at = ts + rng.randint(20_000, 120_000)
        report = {
            "event_id": f"rep-{answer['event_id']}",
            "ts": clock.text(at),
            "type": "report",
            "labels": [label],
            "ref": answer["event_id"],
            **{k: answer[k] for k in ("tenant", "user", "service", "feature")},
        }
        return at, report

    def _normal(
        self,
        rng: random.Random,
        ts: int,
        n: int,
        clock: _Clock,
        tenant: str,
        template_cum: dict[str, list[float]],
        model_cum: list[list[float]],
    ) -> dict[str, Any]:
        t_i = _pick(template_cum[tenant], rng.random())
        t = TEMPLATES[t_i]
        model = MODELS[t.models[_pick(model_cum[t_i], rng.random())][0]]
        users = self._users[tenant]
        user = users[int(len(users) * rng.random() ** 2.2)]  # a few heavy users, a long tail
        return self._inference(rng, ts, n, clock, t, model, tenant, user)

    def _attack(self, rng: random.Random, ts: int, n: int, clock: _Clock, attacks: list[_Effect]) -> dict[str, Any]:
        effect = rng.choice([e for e in attacks if e.truth.onset_ts <= ts < e.truth.end_ts])
        tenant = effect.truth.value
        t = TEMPLATES[0] if rng.random() < 0.7 else TEMPLATES[2]  # public chat surfaces
        model = MODELS[t.models[0][0]]
        event = self._inference(rng, ts, n, clock, t, model, tenant, rng.choice(effect.truth.users), attack=True)
        injection = rng.random() < 0.6 * min(1.0, effect.intensity)
        event["flags"]["prompt_injection"] = injection
        event["flags"]["jailbreak"] = not injection and rng.random() < 0.5
        return event

    def _inference(
        self,
        rng: random.Random,
        ts: int,
        n: int,
        clock: _Clock,
        t: Template,
        model: Model,
        tenant: str,
        user: str,
        attack: bool = False,
    ) -> dict[str, Any]:
        version = model.version
        p_halluc = model.hallucination
        p_pii, p_leak = FLAG_RATES["pii"], FLAG_RATES["system_prompt_leak"]
        quality = t.quality
        in_scale = out_scale = 1.0
        for effect in self._effects:
            truth = effect.truth
            if not truth.onset_ts - effect.lead_ms <= ts < truth.end_ts:
                continue
            started = ts >= truth.onset_ts
            if truth.category == "hallucination" and model.name == truth.value:
                version = effect.data["version"]
                if started:
                    p_halluc = min(0.9, p_halluc + 0.10 * effect.intensity)
            elif not started:
                continue
            elif truth.category == "data_leakage" and tenant == truth.value:
                p_pii, p_leak = 0.03 * effect.intensity, 0.01 * effect.intensity
            elif truth.category == "quality_degradation" and t.name == truth.value:
                quality -= 0.30 * effect.intensity * min(1.0, (ts - truth.onset_ts) / QUALITY_RAMP_MS)
            elif truth.category == "cost" and t.service == truth.value:
                in_scale, out_scale = 1 + 5 * effect.intensity, 1 + 1.5 * effect.intensity
        tokens_in = max(8, int(t.tokens_in * in_scale * rng.lognormvariate(0, 0.45)))
        tokens_out = max(1, int(t.tokens_out * out_scale * rng.lognormvariate(0, 0.55)))
        latency = model.first_token_ms * rng.lognormvariate(0, 0.3) + tokens_out * model.ms_per_token
        latency += tokens_in * 0.02
        if rng.random() < 0.003:  # provider hiccup
            latency += rng.uniform(2_000, 20_000)
        cost = (tokens_in * model.usd_in + tokens_out * model.usd_out) / 1_000_000
        hallucination = rng.random() < p_halluc
        quality = quality + rng.gauss(0, 0.07) - (0.25 if hallucination else 0.0)
        scores = {"quality": round(min(1.0, max(0.0, quality)), 3)}
        if t.grounded:
            grounded = rng.gauss(0.45, 0.15) if hallucination else rng.gauss(0.91, 0.05)
            scores["groundedness"] = round(min(1.0, max(0.0, grounded)), 3)
        event = {
            "event_id": f"ev-{self.seed}-{n:09d}",
            "ts": clock.text(ts),
            "type": "inference",
            "service": t.service,
            "feature": t.feature,
            "model": model.name,
            "model_version": version,
            "prompt_template": t.name,
            "tenant": tenant,
            "user": user,
            "latency_ms": int(latency),
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost_usd": round(cost, 6),
            "flags": {
                "hallucination": hallucination,
                "pii": rng.random() < p_pii,
                "system_prompt_leak": rng.random() < p_leak,
                "cross_tenant": rng.random() < FLAG_RATES["cross_tenant"],
                "prompt_injection": not attack and rng.random() < FLAG_RATES["prompt_injection"],
                "jailbreak": not attack and rng.random() < FLAG_RATES["jailbreak"],
            },
            "scores": scores,
        }
        if rng.random() < self.raw_text:
            event["prompt"] = rng.choice(RAW_PROMPTS)
            event["output"] = rng.choice(RAW_OUTPUTS)
        return event


# ---- helpers ------------------------------------------------------------------------------


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return [c / total for c in out]


def _pick(cumulative: list[float], r: float) -> int:
    for i, c in enumerate(cumulative):
        if r < c:
            return i
    return len(cumulative) - 1


class _Clock:
    """Epoch ms → RFC 3339 UTC with milliseconds; the per-second prefix is cached."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def text(self, ms: int) -> str:
        second = ms // 1000
        if second != self.second:
            self.second = second
            self.prefix = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self.prefix}.{ms % 1000:03d}Z"


def scenario(
    category: str,
    seed: int = 1,
    start_ms: int = 1_767_225_600_000,
    rate: float = 10.0,
    onset_ms: int = 90 * MINUTE,
    duration_ms: int = 3 * HOUR,
    **kwargs: Any,
) -> Traffic:
    """A log with one incident of ``category`` (or none for ``"normal"``): what tests and the demo use."""
    injections = [] if category == "normal" else [Injection(category, onset_ms, **kwargs)]
    return Traffic(seed, start_ms, duration_ms, rate, injections)
