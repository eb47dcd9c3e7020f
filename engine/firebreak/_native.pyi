"""Types of the native extension `firebreak._native` (native/src, PyO3), checked against the
built module by mypy's stubtest (tests/unit/native/test_native_stub.py). docs/native.md says what
each entry point does; engine/firebreak/native/__init__.py is the Python side that calls it."""

from collections.abc import Sequence
from typing import Any, Final, final

__all__ = [
    "Core",
    "FedLines",
    "TakenRouted",
    "FedOne",
    "Life",
    "Snapshot",
    "Memory",
    "NativeRouter",
    "RoutedBatch",
    "Columns",
    "EventRefused",
    "PLAN_VERSION",
    "SNAPSHOT_VERSION",
]

PLAN_VERSION: Final[int]  # the compiled plan's version the crate reads (engine/firebreak/dsl/plan.py)
SNAPSHOT_VERSION: Final[int]  # the snapshot layout it writes (engine/firebreak/core/engine.py)

class EventRefused(ValueError):
    """The native decoder refuses an event (`Core.feed_one`): the Python decoder says why."""

# (partition, offset, value or None) of one input message (the worker's stage 1)
_Message = tuple[int, int, bytes | None]

@final
class Core:
    """The detection engine of one rule set (one shard, in the worker)."""

    def __new__(
        cls, plans: bytes, lateness_ms: int, host: Any, threads: int = 1, max_skew_ms: int | None = ...
    ) -> Core: ...
    @property
    def split_cpu(self) -> tuple[float, float] | None: ...
    def set_rebalance(self, every: int, gap: float, moves: int) -> None: ...
    @property
    def split_moves(self) -> int | None: ...
    @property
    def threads(self) -> int: ...
    @staticmethod
    def check_plan(plan: bytes) -> str | None: ...
    def feed(self, lines: list[bytes], start: int, max_bytes: int | None = None) -> FedLines: ...
    def feed_one(self, raw: bytes, ts: int) -> FedOne: ...
    def set_owner(self, shard: int, shards: int) -> None: ...
    def take_routed(self, body: bytes, next: dict[int, int], masks: bool, watermark: int | None) -> TakenRouted: ...
    def advance(self, watermark: int) -> list[dict[str, Any]]: ...
    def finish(self) -> list[dict[str, Any]]: ...
    @property
    def watermark(self) -> int | None: ...
    @property
    def max_ts(self) -> int | None: ...
    @max_ts.setter
    def max_ts(self, value: int | None) -> None: ...
    @property
    def opened(self) -> dict[str, int]: ...
    def lives(self) -> list[Life]: ...
    def snapshot(self) -> Snapshot: ...
    def snapshot_layout(self, fingerprints: dict[str, str], idle_life: bytes, opened: bytes) -> bytes: ...
    def restore(self, json: bytes, lives: Sequence[Any]) -> None: ...
    def key_counts(self) -> list[int]: ...
    def memory(self) -> Memory: ...
    def memory_parts(self) -> dict[str, int]: ...

@final
class FedLines:
    """What `Core.feed` returns."""

    @property
    def stop(self) -> int | None:
        """The index of the first line the native decoder did not accept (Python's to read), or None."""
    @property
    def records(self) -> list[dict[str, Any]]: ...
    @property
    def late(self) -> list[tuple[int, int, int]]:
        """(line index, event time, watermark) of each late event."""
    @property
    def events(self) -> int: ...

@final
class TakenRouted:
    """What `Core.take_routed` returns."""

    @property
    def next(self) -> dict[int, int]:
        """Per input partition, the next offset to take after the body."""
    @property
    def taken(self) -> int: ...
    @property
    def late(self) -> int: ...
    @property
    def duplicates(self) -> int: ...
    @property
    def records(self) -> list[dict[str, Any]]: ...

@final
class FedOne:
    """What `Core.feed_one` returns."""

    @property
    def records(self) -> list[dict[str, Any]]: ...
    @property
    def late(self) -> tuple[int, int] | None:
        """(event time, watermark) when late; (event time, the latest event time) when refused
        as too far ahead; None when the event was taken."""

@final
class Life:
    """A pending or firing group (`Core.lives`)."""

    @property
    def rule(self) -> int:
        """The rule's index in the plan."""
    @property
    def group(self) -> dict[str, Any]:
        """The group's values as records show them."""
    @property
    def life(self) -> Any:
        """Its firebreak.core.incidents.Lifecycle."""

@final
class Snapshot:
    """What `Core.snapshot` returns."""

    @property
    def json(self) -> bytes:
        """The state in the Python core's snapshot layout; each group's `life` an index into `lives`, or null."""
    @property
    def lives(self) -> list[Any]: ...

@final
class Memory:
    """What `Core.memory` returns: the state held (docs/native.md, Memory)."""

    @property
    def groups(self) -> int: ...
    @property
    def buckets(self) -> int: ...
    @property
    def bytes(self) -> int:
        """Estimated bytes."""

@final
class NativeRouter:
    """The worker's stage 1: input messages in, per shard the lines of the events it must see."""

    def __new__(cls, plans: bytes, shards: int, host: Any, limit: int) -> NativeRouter: ...
    def route_batch(
        self,
        messages: list[_Message],
        times: dict[int, int],
        known: dict[int, int],
        max_bytes: int,
        runs: dict[int, int] = ...,
        max_skew: int | None = None,
    ) -> RoutedBatch:
        """live/routing.py reads it."""
    @staticmethod
    def shard_of(rule: str, key_json: bytes, shards: int) -> int: ...

@final
class RoutedBatch:
    """What `NativeRouter.route_batch` returns."""

    @property
    def bodies(self) -> list[list[bytes]]:
        """Per shard, its routed bodies (several when large; an empty one when it has no event of the batch)."""
    @property
    def parts(self) -> list[tuple[int, int, int, list[int]]]:
        """(input partition, first offset, last offset, [events per shard]) in order of appearance."""
    @property
    def refused(self) -> list[int]:
        """Batch indexes of the messages the native decoder did not accept (Python gives the reason)."""
    @property
    def events(self) -> int: ...
    @property
    def beats(self) -> dict[int, int]:
        """{partition: largest event time after the batch}."""
    @property
    def runs(self) -> dict[int, int]:
        """{partition: events refused in a row as too far ahead, after the batch}."""
    @property
    def ahead(self) -> list[tuple[int, int, int]]:
        """(batch index, event time, the partition's time) of the events refused as too far ahead."""

@final
class Columns:
    """Root-cause tallies over coded dimension columns (engine/firebreak/investigate/rootcause.py)."""

    def __new__(cls, codes: list[list[int]], cards: list[int], now: list[bool], weight: list[float]) -> Columns: ...
    def recode(self, d: int, mapping: list[int], card: int) -> None: ...
    def tally(self, pattern: list[tuple[int, int]]) -> list[float]: ...
    def marginals(self, pattern: list[tuple[int, int]]) -> list[list[list[float]]]: ...
    def remove(self, pattern: list[tuple[int, int]]) -> None: ...
    def reset(self) -> None: ...
    def __len__(self) -> int: ...
