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
Every rule the DSL accepts runs natively; a rule the plan cannot express (plan.unsupported:
a CompiledRule made by hand) is refused with one line (EngineError) — the Python core is the
oracle, run with `--engine python`, not a fallback beside this engine.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from firebreak.core import DEFAULT_LATENESS_MS, Event, InvalidEvent, format_ts
from firebreak.core.engine import DEFAULT_MAX_SKEW_MS, check_version, excluded_span, restore_cooldowns, rule_fingerprint
from firebreak.core.flapping import Cooldowns
from firebreak.core.incidents import FIRING, INACTIVE, Counts, Lifecycle, Reading, evaluate_group, reference_p_value
from firebreak.core.significance import mean_p_value, p_value
from firebreak.core.sketch import DistinctSketch
from firebreak.core.window import Summary
from firebreak.dsl import CompiledRule
from firebreak.dsl.metrics import SCALE
from firebreak.errors import EngineError
from firebreak.feed import Fed, decode_event, late_text
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
        test: tuple[float | None, tuple[int, float, int] | None],
        counts: tuple,
        users: list[int],
        evidence: list,
    ) -> tuple:
        """``test``: the p-value of `with C% confidence` (None: not tested) and the counts of
        the measured reference it was tested against (`incidents.Counts`; None: none).
        ``evidence``: event ids, or for a rule with scope dimensions (id, [its event's values
        of them, None where not a string]) — kept as the core keeps them."""
        rule = self.rules[index]
        p, reference = test
        n, hits, vn, total, lo, hi, sq = counts
        sketch = DistinctSketch()
        sketch.mins = users
        if dims := rule.scope_dimensions:
            items = [
                (None, e, tuple((d, v) for d, v in zip(dims, values, strict=False) if v is not None))
                for e, values in evidence
            ]
        else:
            items = [(None, e) for e in evidence]
        window = Summary(n, hits, vn, total, lo, hi, None, None, sketch, items, sq if rule.keeps_squares else None)
        life = life if life is not None else Lifecycle()
        before = (life.status, life.onset, life.frozen_baseline)
        try:
            records = evaluate_group(
                rule,
                group,
                life,
                at,
                Reading(
                    value, limit, baseline, holds, window, p, Counts(*reference) if reference is not None else None
                ),
                self.cooldowns,
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

    def p_value_mean(self, index: int, vn: int, total: int, sq: int, limit: float) -> float:
        """`significance.mean_p_value` of a rule's window (a mean's t-test)."""
        return mean_p_value(self.rules[index].op, vn, total, sq, limit, SCALE)

    def p_value_two(self, index: int, k: int, n: int, k_ref: int, exposure_ref: float) -> float:
        """`incidents.reference_p_value` (``k_ref`` already at least the reference's `least`)."""
        return reference_p_value(self.rules[index], k, n, Counts(k_ref, exposure_ref, 0))

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
        for rule in self.rules:
            why = unsupported(rule)
            if why is not None:
                raise EngineError(
                    f"rule {rule.name} cannot run on the native engine ({why}); run it with --engine python"
                )
        self.host = _Host(self.rules)
        self.core = _native.Core(plans_json(self.rules), lateness_ms, self.host, threads(), max_skew_ms)

    def placement(self) -> dict[str, str]:
        return {r.name: "native" for r in self.rules}

    # ---- input --------------------------------------------------------------------------

    def feed_lines(self, lines: Sequence[bytes], max_bytes: int | None = None):

        if not isinstance(lines, list):
            lines = list(lines)
        fed = Fed()
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
        self.core.set_owner(shard, shards)

    def take_routed(
        self, body: bytes, next_offset: dict[int, int], masks: bool, watermark: int | None
    ) -> tuple[dict[int, int], int, int, int, list[dict[str, Any]]]:
        """A routed message's binary rows (live/routed.py, native/src/rows.rs) — its body, one
        zstd frame (native/src/frame.rs), unpacked in the same call — those at
        or after ``next_offset[partition]``, then `advance` to ``watermark`` (None: no evaluation),
        in one call without the GIL. ``masks``: look only at the rules each row's mask names
        (stage 1 routed with these rules). Returns (next offsets, taken, late, duplicates, records)."""
        taken = self.core.take_routed(body, next_offset, masks, watermark)  # _native.TakenRouted
        return taken.next, taken.taken, taken.late, taken.duplicates, taken.records

    def feed_events(self, events: Iterable[Event]):

        fed = Fed()
        for index, event in enumerate(events):
            self._one(index, orjson.dumps(event.data), event, fed)
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

    # ---- time and state -------------------------------------------------------------------

    @property
    def watermark(self) -> int | None:
        return self.core.watermark

    @property
    def opened(self) -> Counter:
        return Counter(self.core.opened)

    def advance(self, watermark: int) -> list[dict[str, Any]]:
        return self.core.advance(watermark)

    def finish(self, max_ts: int | None = None) -> list[dict[str, Any]]:
        """``max_ts``: the last event time, when the events came through several engines (shards)."""
        if max_ts is not None and (self.core.max_ts is None or max_ts > self.core.max_ts):
            self.core.max_ts = max_ts
        return self.core.finish()

    def open_incidents(self) -> list[dict[str, Any]]:
        by_rule: dict[str, list] = {r.name: [] for r in self.rules}
        for live in self.core.lives():
            life, group = live.life, live.group
            if life.status == FIRING:
                rule = self.rules[live.rule]
                incident = life.incident
                by_rule[rule.name].append(
                    {
                        "rule": rule.name,
                        "group": group,
                        "incident_id": incident.incident_id,
                        "severity": str(incident.severity),
                    }
                )
        return [item for items in by_rule.values() for item in items]

    def memory(self) -> _native.Memory:
        """The native state held: groups, buckets, estimated bytes."""
        return self.core.memory()

    def memory_parts(self) -> dict[str, int]:
        """The native state held by part: estimated bytes and counts by name (docs/native.md, Memory)."""
        return self.core.memory_parts()

    def snapshot(self) -> dict[str, Any]:
        """The state in the Python core's snapshot layout (Engine.snapshot): either engine
        restores a snapshot of either."""
        taken = self.core.snapshot()
        native, lives = orjson.loads(taken.json), taken.lives
        rules: dict[str, Any] = {}
        saved = {item.pop("name"): item for item in native["rules"]}
        for rule in self.rules:
            item = saved[rule.name]
            for group in item["groups"]:
                index = group["life"]
                group["life"] = (lives[index] if index is not None else Lifecycle()).to_json()
            rules[rule.name] = {"fingerprint": rule_fingerprint(rule), **item}
        native["rules"] = rules
        native["opened"] = dict(sorted(self.opened.items()))
        native["cooldowns"] = self._cooldowns().to_json()
        return native

    def _cooldowns(self) -> Cooldowns:
        return self.host.cooldowns

    def snapshot_json(self) -> bytes:
        """``orjson.dumps(self.snapshot())``, written by the native core in one call (a full
        checkpoint of the worker): the same JSON object, without making Python objects of the
        whole state first."""
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
        for rule in engine.rules:
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
        state["opened"] = snapshot["opened"]
        engine.core.restore(orjson.dumps({**state, "rules": saved}), lives)
        engine.host.cooldowns = restore_cooldowns(engine.rules, snapshot)
        return engine
