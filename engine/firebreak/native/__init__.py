"""The native engine: firebreak._native (Rust, native/src) behind the Python core's interface.

    engine = NativeEngine(rules, lateness_ms)
    fed = engine.feed_lines([b'{"event_id": ...}', ...])   # raw JSON lines, in batches
    records = engine.finish()

What runs where (docs/native.md): decoding and validating lines, `where`, group keys,
buckets and sketches, scheduling by need, windows, baselines, population totals and
whether a condition holds run natively. When a reading holds, or its group is pending or
firing, the Python lifecycle (incidents.evaluate_group) decides and writes the records —
the same function the Python core calls, so records are byte-identical by construction.
Lines the native decoder does not accept go to the Python decoder, which gives the reason.
Rules the plan cannot express (plan.unsupported) run on the Python core beside it, and
their records are merged in the core's (time, rule) order.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from firebreak.core import DEFAULT_LATENESS_MS, Engine, Event, InvalidEvent, format_ts, parse_ts
from firebreak.core.engine import DEFAULT_MAX_SKEW_MS, check_version, excluded_span, restore_cooldowns, rule_fingerprint
from firebreak.core.flapping import Cooldowns
from firebreak.core.incidents import FIRING, INACTIVE, Lifecycle, Reading, evaluate_group
from firebreak.core.significance import p_value
from firebreak.core.sketch import DistinctSketch
from firebreak.core.window import Summary
from firebreak.dsl import CompiledRule
from firebreak.errors import EngineError
from firebreak.feed import Fed, decode_event, decoded_lines, late_text
from firebreak.native.plan import plans_json, unsupported

try:
    from firebreak import _native
except ImportError:  # not built: Driver falls back to the Python core
    _native = None


def available() -> bool:
    return _native is not None


class _Host:
    """What the native engine asks of Python: the lifecycle, p-values, `str()` of odd values."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules = tuple(rules)
        self.cooldowns = Cooldowns()  # resolved incidents that reopen within their cool-down

    def step(
        self,
        index: int,
        group: dict,
        life: Lifecycle | None,
        at: int,
        value: Any,
        limit: float | None,
        baseline: float | None,
        holds: bool,
        p: float | None,
        counts: tuple,
        users: list[int],
        evidence: list,
    ) -> tuple:
        """``evidence``: event ids, or for a rule with scope dimensions (id, [its event's values
        of them, None where not a string]) — kept as the core keeps them."""
        rule = self.rules[index]
        n, hits, vn, total, lo, hi = counts
        sketch = DistinctSketch()
        sketch.mins = users
        if dims := rule.scope_dimensions:
            items = [
                (None, e, tuple((d, v) for d, v in zip(dims, values, strict=False) if v is not None))
                for e, values in evidence
            ]
        else:
            items = [(None, e) for e in evidence]
        window = Summary(n, hits, vn, total, lo, hi, None, None, sketch, items)
        life = life if life is not None else Lifecycle()
        before = (life.status, life.onset, life.frozen_baseline)
        try:
            records = evaluate_group(
                rule, group, life, at, Reading(value, limit, baseline, holds, window, p), self.cooldowns
            )
        except Exception as error:  # not the input's fault: one EngineError, never a second try
            raise EngineError(
                f"rule {rule.name}: the lifecycle step at {format_ts(at)} failed: {type(error).__name__}: {error}"
            ) from error
        opened = life.status == FIRING and life.incident.opened_at == at
        return records, life.status, opened, life.frozen_baseline, life, excluded_span(rule, *before, life.status, at)

    def p_value(self, index: int, k: int, n: int, reference: float) -> float:
        rule = self.rules[index]
        return p_value(rule.metric.test, rule.op, k, n, reference)

    @staticmethod
    def py_str(raw: bytes) -> str:
        return str(orjson.loads(raw))


def threads() -> int:
    """Threads for the rules of one batch of lines (docs/native.md, Threads): two on a machine
    with two or more cores (records unchanged), one with FIREBREAK_NATIVE_THREADS=1."""
    wanted = os.environ.get("FIREBREAK_NATIVE_THREADS", "").strip()
    if wanted in ("1", "2"):
        return int(wanted)
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _late_text(ts: int, watermark: int, lateness_ms: int, max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS) -> str:
    """A late event's reason, or (``ts`` after ``watermark``, then the latest event time) an
    event's refused for being too far ahead."""

    return late_text(ts, watermark, lateness_ms, max_skew_ms)


class NativeEngine:
    def __init__(
        self,
        rules: Sequence[CompiledRule],
        lateness_ms: int = DEFAULT_LATENESS_MS,
        max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS,
    ) -> None:
        if _native is None:
            raise RuntimeError("the native engine is not built (pip install -e . builds it; see README)")
        if lateness_ms < 0:
            raise ValueError("allowed lateness cannot be negative")
        if max_skew_ms is not None and max_skew_ms < 0:
            raise ValueError("the maximum skew cannot be negative")
        self.rules = tuple(rules)
        self.lateness_ms = lateness_ms
        self.max_skew_ms = max_skew_ms
        self.why_python = {r.name: why for r in self.rules if (why := unsupported(r)) is not None}
        self.native_rules = tuple(r for r in self.rules if r.name not in self.why_python)
        self.python_rules = tuple(r for r in self.rules if r.name in self.why_python)
        self.index = {r.name: i for i, r in enumerate(self.rules)}
        plans = plans_json(self.native_rules)
        self.host = _Host(self.native_rules)
        self.core = _native.Core(plans, lateness_ms, self.host, threads(), max_skew_ms)
        self.fallback = Engine(self.python_rules, lateness_ms, max_skew_ms=max_skew_ms) if self.python_rules else None

    def placement(self) -> dict[str, str]:
        return {r.name: "python" if r.name in self.why_python else "native" for r in self.rules}

    # ---- input --------------------------------------------------------------------------

    def feed_lines(self, lines: Sequence[bytes], max_bytes: int | None = None):

        if not isinstance(lines, list):
            lines = list(lines)
        fed = Fed()
        if self.fallback is not None:
            for index, raw, event in decoded_lines(lines, max_bytes, fed):
                self._one_mixed(index, raw, event, fed)
            return fed
        start = 0
        while True:
            batch = self.core.feed(lines, start, max_bytes)  # _native.FedLines
            fed.records += batch.records
            fed.events += batch.events
            fed.late += [(i, _late_text(ts, wm, self.lateness_ms, self.max_skew_ms)) for i, ts, wm in batch.late]
            stop = batch.stop
            if stop is None:
                return fed
            raw = lines[stop]
            try:
                event = decode_event(raw, max_bytes)
            except InvalidEvent as error:
                fed.bad.append((stop, str(error)))
            else:  # an event the native decoder leaves to Python (an unusual time format)
                self._one(stop, raw, event, fed)
            start = stop + 1

    # ---- the live worker's shards (engine/firebreak/adapters/live/shard.py) -------------------------

    def own(self, shard: int, shards: int) -> None:
        """Aggregate only the (rule, group) pairs of one shard (engine/firebreak/core/sharding.py)."""
        if self.fallback is not None:
            raise ValueError(f"a shard needs every rule native; {', '.join(self.why_python)} run on the Python core")
        self.core.set_owner(shard, shards)

    def take_routed(
        self, body: bytes, next_offset: dict[int, int], masks: bool, watermark: int | None
    ) -> tuple[dict[int, int], int, int, int, list[dict[str, Any]]]:
        """A routed message's binary rows (live/routed.py, native/src/rows.rs), those at
        or after ``next_offset[partition]``, then `advance` to ``watermark`` (None: no evaluation),
        in one call without the GIL. ``masks``: look only at the rules each row's mask names
        (stage 1 routed with these rules). Returns (next offsets, taken, late, duplicates, records)."""
        taken = self.core.take_routed(body, next_offset, masks, watermark)  # _native.TakenRouted
        return taken.next, taken.taken, taken.late, taken.duplicates, taken.records

    def feed_events(self, events: Iterable[Event]):

        fed = Fed()
        for index, event in enumerate(events):
            raw = orjson.dumps(event.data)
            if self.fallback is not None:
                self._one_mixed(index, raw, event, fed)
            else:
                self._one(index, raw, event, fed)
        return fed

    def _one(self, index: int, raw: bytes, event: Event, fed) -> None:
        """One event the Python decoder accepted. The native decoder refuses before the engine
        sees the event (EventRefused): then it gets the event as Python decoded it, once; any
        other error (EngineError from a lifecycle step) propagates."""
        try:
            fed_one = self.core.feed_one(raw, event.ts)
        except _native.EventRefused:
            normal = orjson.dumps(event.data)
            try:
                if normal == raw:
                    raise
                fed_one = self.core.feed_one(normal, event.ts)
            except _native.EventRefused:
                fed.bad.append((index, "the native decoder refuses this event"))
                return
        if fed_one.late is not None:
            fed.late.append((index, _late_text(*fed_one.late, self.lateness_ms)))
            return
        fed.events += 1
        fed.records += fed_one.records

    def _one_mixed(self, index: int, raw: bytes, event: Event, fed) -> None:
        if self.fallback.is_late(event):
            fed.late.append((index, _late_text(event.ts, self.fallback.watermark or 0, self.lateness_ms)))
            return
        max_ts = self.fallback.max_ts
        ahead = self.fallback.is_ahead(event)  # the native core, fed the same events, says the same
        native = self.core.feed_one(orjson.dumps(event.data), event.ts).records if self.native_rules else []
        if ahead:
            fed.late.append((index, _late_text(event.ts, max_ts, self.lateness_ms, self.max_skew_ms)))
            return
        fed.events += 1
        fed.records += self._merge(native, self.fallback.process(event))

    def _merge(self, native: list[dict], python: list[dict]) -> list[dict]:
        """Both engines' records of one call in the core's order: by step time, then rule."""
        if not python or not native:
            return native or python
        return sorted(native + python, key=lambda r: (parse_ts(r["ts"]), self.index[r["rule"]]))

    # ---- time and state -------------------------------------------------------------------

    @property
    def watermark(self) -> int | None:
        return self.core.watermark

    @property
    def opened(self) -> Counter:
        opened = Counter(self.core.opened)
        if self.fallback is not None:
            opened.update(self.fallback.opened)
        return opened

    def advance(self, watermark: int) -> list[dict[str, Any]]:
        native = self.core.advance(watermark)
        return self._merge(native, self.fallback.advance(watermark)) if self.fallback is not None else native

    def finish(self, max_ts: int | None = None) -> list[dict[str, Any]]:
        """``max_ts``: the last event time, when the events came through several engines (shards)."""
        if max_ts is not None and (self.core.max_ts is None or max_ts > self.core.max_ts):
            self.core.max_ts = max_ts
        native = self.core.finish()
        return self._merge(native, self.fallback.finish()) if self.fallback is not None else native

    def open_incidents(self) -> list[dict[str, Any]]:
        by_rule: dict[str, list] = {r.name: [] for r in self.rules}
        for live in self.core.lives():
            life, group = live.life, live.group
            if life.status == FIRING:
                rule = self.native_rules[live.rule]
                incident = life.incident
                by_rule[rule.name].append(
                    {
                        "rule": rule.name,
                        "group": group,
                        "incident_id": incident.incident_id,
                        "severity": str(incident.severity),
                    }
                )
        if self.fallback is not None:
            for item in self.fallback.open_incidents():
                by_rule[item["rule"]].append(item)
        return [item for items in by_rule.values() for item in items]

    def memory(self) -> _native.Memory:
        """The native state held: groups, buckets, estimated bytes."""
        return self.core.memory()

    def snapshot(self) -> dict[str, Any]:
        """The state in the Python core's snapshot layout (Engine.snapshot): either engine
        restores a snapshot of either."""
        taken = self.core.snapshot()
        native, lives = orjson.loads(taken.json), taken.lives
        rules: dict[str, Any] = {}
        saved = {item.pop("name"): item for item in native["rules"]}
        other = self.fallback.snapshot()["rules"] if self.fallback is not None else {}
        for rule in self.rules:
            if rule.name in other:
                rules[rule.name] = other[rule.name]
                continue
            item = saved[rule.name]
            for group in item["groups"]:
                index = group["life"]
                group["life"] = (lives[index] if index is not None else Lifecycle()).to_json()
            rules[rule.name] = {"fingerprint": rule_fingerprint(rule), **item}
        native["rules"] = rules
        native["opened"] = dict(sorted(self.opened.items()))  # both engines' incidents
        native["cooldowns"] = self._cooldowns().to_json()
        return native

    def _cooldowns(self) -> Cooldowns:
        return self.host.cooldowns.merged(self.fallback.cooldowns) if self.fallback is not None else self.host.cooldowns

    def snapshot_json(self) -> bytes:
        """``orjson.dumps(self.snapshot())``, written by the native core in one call (a full
        checkpoint of the worker): the same JSON object, without making Python objects of the
        whole state first."""
        if self.fallback is not None:  # some rules on the Python core: their part is Python's
            return orjson.dumps(self.snapshot())
        fingerprints = {rule.name: rule_fingerprint(rule) for rule in self.rules}
        raw = self.core.snapshot_layout(
            fingerprints, orjson.dumps(Lifecycle().to_json()), orjson.dumps(dict(sorted(self.opened.items())))
        )
        # the cool-downs are the host's (Python): the last key of the object, as in Engine.snapshot
        return bytes(raw).rstrip()[:-1] + b',"cooldowns":' + orjson.dumps(self._cooldowns().to_json()) + b"}"

    @classmethod
    def restore(
        cls,
        rules: Sequence[CompiledRule],
        snapshot: dict[str, Any],
        lateness_ms: int | None = None,
        max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS,
    ) -> NativeEngine:
        """Engine.restore for the native engine: a rule whose text changed starts afresh."""
        check_version(snapshot)
        snapshot = orjson.loads(orjson.dumps(snapshot))  # the restored incidents must not share its lists
        engine = cls(rules, snapshot["lateness_ms"] if lateness_ms is None else lateness_ms, max_skew_ms)
        lives: list[Lifecycle] = []
        saved = []
        for rule in engine.native_rules:
            data = snapshot["rules"].get(rule.name)
            if data is None or data["fingerprint"] != rule_fingerprint(rule):
                continue
            groups = []
            for item in data["groups"]:
                life = item["life"]
                index = None
                if life["status"] != INACTIVE:
                    lives.append(Lifecycle.from_json(life))
                    index = len(lives) - 1
                groups.append({**item, "life": index})
            saved.append(
                {
                    "name": rule.name,
                    "next_eval": data["next_eval"],
                    "groups": groups,
                    **({"population": data["population"]} if "population" in data else {}),
                }
            )
        state = {key: snapshot[key] for key in ("version", "lateness_ms", "max_ts", "watermark", "stats")}
        # Each incident count goes to one engine: the fallback's rules to it, all others
        # (rules since removed included) to the native one; `opened` adds them up.
        python_names = {rule.name for rule in engine.python_rules}
        opened = snapshot["opened"]
        state["opened"] = {name: n for name, n in opened.items() if name not in python_names}
        engine.core.restore(orjson.dumps({**state, "rules": saved}), lives)
        engine.host.cooldowns = restore_cooldowns(engine.native_rules, snapshot)
        if engine.fallback is not None:
            engine.fallback = Engine.restore(engine.python_rules, snapshot, lateness_ms, max_skew_ms=max_skew_ms)
            engine.fallback.opened = Counter({name: n for name, n in opened.items() if name in python_names})
        return engine
