"""Stage 3 of the worker: cases, downstream of the shards (docs/response.md#cases-in-the-worker).

The shards write incident records to the incidents topic, keyed by incident: one incident's
records in order on one partition, but nothing orders two incidents on two partitions, and
which case an incident joins depends on what came before it. So this stage puts them back in
the order one engine would have given them — (step time, rule index, group order), the order
`Engine.advance` emits (core/engine.py) — and only once every shard has said it is past that
time: a shard's head checkpoint, committed in the same transaction as its records, carries
its watermark (``mark``), so when the stage has read a head and then every incidents
partition up to its end, every record of that shard up to ``mark`` is in hand.

    stage = CaseStage(rules, shards=4)
    stage.take(partition, offset, record)     # incident records, as read (False: read before)
    stage.heard(shard, mark)                  # a shard's committed watermark
    for record in stage.release():            # case.* records, identical to `replay --cases`
        send(record)                          # (scopes: groups, and the records' evidence_scope)
    stage.snapshot()                          # carried in the stage's checkpoint, with its positions

Pure: no Kafka, no clock. The incident records themselves stay as the shards wrote them; the
case records name their incident (``incident_id``), which is how a live reader maps an
incident to its case (`replay --cases` also writes ``case_id`` into each incident record).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from firebreak.core.cases import CaseBook
from firebreak.core.events import parse_ts
from firebreak.dsl import CompiledRule
from firebreak.records import is_incident

STAGE_VERSION = 1


def _rank(value: Any) -> int:  # core/engine.py `_type_rank`, on a record's (JSON) group values
    return 0 if value is None else 1 if isinstance(value, list | tuple) else 2 if isinstance(value, int | float) else 3


class CaseOrder:
    """The order one engine emits incident records in: step time, rule index, group order."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.index = {rule.name: i for i, rule in enumerate(rules)}

    def key(self, record: dict[str, Any]) -> tuple:
        group = record.get("group") or {}
        order = tuple((_rank(v), str(tuple(v) if isinstance(v, list) else v)) for v in group.values())
        return parse_ts(record["ts"]), self.index.get(record["rule"], len(self.index)), order


class CaseStage:
    def __init__(self, rules: Sequence[CompiledRule], shards: int) -> None:
        self.book = CaseBook.for_rules(rules)
        self.order = CaseOrder(rules)
        self.shards = shards
        self.marks: dict[int, int] = {}  # shard → its committed watermark
        self.positions: dict[int, int] = {}  # incidents partition → next offset to take
        self.held: list[tuple[tuple, int, dict[str, Any]]] = []  # (order key, arrival, record), sorted
        self.arrivals = 0
        self.stats = {"taken": 0, "released": 0, "redelivered": 0}

    def take(self, partition: int, offset: int, record: dict[str, Any]) -> bool:
        """Hold an incident record until every shard is past its time; False when this offset
        was taken before (a re-delivery after a restart). Other records are not cases' input."""
        if offset < self.positions.get(partition, 0):
            self.stats["redelivered"] += 1
            return False
        self.positions[partition] = offset + 1
        if not is_incident(record):
            return True
        self.arrivals += 1
        bisect.insort(self.held, (self.order.key(record), self.arrivals, record), key=lambda h: (h[0], h[1]))
        self.stats["taken"] += 1
        return True

    def heard(self, shard: int, mark: int | None) -> None:
        """Shard ``shard`` committed every record of its steps up to ``mark`` (never goes back:
        a restored shard derives again what it had committed, and sends none of it)."""
        if mark is not None and mark > self.marks.get(shard, mark - 1):
            self.marks[shard] = mark

    @property
    def through(self) -> int | None:
        """The time up to which every shard's records are in hand (None: a shard not heard of)."""
        if len(self.marks) < self.shards:
            return None
        return min(self.marks.values())

    def release(self) -> list[dict[str, Any]]:
        """The case records of every held incident record up to `through`, in engine order."""
        through = self.through
        if through is None:
            return []
        cut = bisect.bisect_right(self.held, through, key=lambda h: h[0][0])
        ready, self.held = self.held[:cut], self.held[cut:]
        out = []
        for _, _, record in ready:
            out.extend(r for r in self.book.process(record) if not is_incident(r))
        self.stats["released"] += len(ready)
        # first pages held by group_wait whose due time every shard is past: the same records
        # (stamped with their due time) a replay gives with the next record after it
        out.extend(self.book.advance(through))
        return out

    # ---- state ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": STAGE_VERSION,
            "shards": self.shards,
            "book": self.book.snapshot(),
            "marks": {str(s): m for s, m in sorted(self.marks.items())},
            "positions": {str(p): o for p, o in sorted(self.positions.items())},
            "held": [record for _, _, record in self.held],
            "stats": dict(self.stats),
        }

    @classmethod
    def restore(cls, rules: Sequence[CompiledRule], snapshot: dict[str, Any]) -> CaseStage:
        if snapshot.get("version") != STAGE_VERSION:
            raise ValueError(
                f"a case stage checkpoint of version {snapshot.get('version')!r}: this release reads "
                f"version {STAGE_VERSION}"
            )
        stage = cls(rules, snapshot["shards"])
        stage.book = CaseBook.restore(stage.book.grouping, snapshot["book"])
        stage.marks = {int(s): m for s, m in snapshot["marks"].items()}
        stage.positions = {int(p): o for p, o in snapshot["positions"].items()}
        for record in snapshot["held"]:
            stage.arrivals += 1
            stage.held.append((stage.order.key(record), stage.arrivals, record))
        stage.stats.update(snapshot["stats"])
        return stage
