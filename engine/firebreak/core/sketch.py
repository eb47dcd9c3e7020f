"""Bounded, mergeable, deterministic sketches for window aggregates.

- `QuantileSketch`: a log-bucketed histogram (the DDSketch idea): every value
  lands in a bin whose bounds are within ±1% of it, so any quantile is within
  1% relative error, and the number of bins depends on the range of values,
  not on how many there are.
- `DistinctSketch`: K minimum values. Exact up to K distinct items, an
  unbiased estimate (about ±9% at K=128) beyond. Hashing is CRC-based, never
  Python's randomised ``hash()``, so results are the same in every process.

Both merge by plain union, which is what lets a window be assembled from
per-step buckets, and both snapshot to plain lists.
"""

from __future__ import annotations

import bisect
import math
import zlib

RELATIVE_ACCURACY = 0.01
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
_TINY = 1e-9
DISTINCT_K = 128
_HASH_SPACE = float(1 << 64)


class QuantileSketch:
    __slots__ = ("pos", "neg", "zero", "n")

    def __init__(self) -> None:
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}
        self.zero = 0
        self.n = 0

    def add(self, value: float) -> None:
        self.n += 1
        if value > _TINY:
            key = math.ceil(math.log(value) / _LOG_GAMMA)
            self.pos[key] = self.pos.get(key, 0) + 1
        elif value < -_TINY:
            key = math.ceil(math.log(-value) / _LOG_GAMMA)
            self.neg[key] = self.neg.get(key, 0) + 1
        else:
            self.zero += 1

    def merge(self, other: QuantileSketch) -> None:
        self.n += other.n
        self.zero += other.zero
        for key, count in other.pos.items():
            self.pos[key] = self.pos.get(key, 0) + count
        for key, count in other.neg.items():
            self.neg[key] = self.neg.get(key, 0) + count

    def quantile(self, q: float) -> float | None:
        if self.n == 0:
            return None
        rank = max(1, math.ceil(q * self.n))  # nearest rank, 1-based
        seen = 0
        for key in sorted(self.neg, reverse=True):
            seen += self.neg[key]
            if seen >= rank:
                return -_bin_value(key)
        seen += self.zero
        if seen >= rank:
            return 0.0
        for key in sorted(self.pos):
            seen += self.pos[key]
            if seen >= rank:
                return _bin_value(key)
        return _bin_value(max(self.pos)) if self.pos else 0.0

    def snapshot(self) -> list:
        return [sorted(self.pos.items()), sorted(self.neg.items()), self.zero, self.n]

    @staticmethod
    def restore(data: list) -> QuantileSketch:
        sketch = QuantileSketch()
        sketch.pos = {int(k): int(v) for k, v in data[0]}
        sketch.neg = {int(k): int(v) for k, v in data[1]}
        sketch.zero, sketch.n = int(data[2]), int(data[3])
        return sketch


def _bin_value(key: int) -> float:
    return 2 * _GAMMA**key / (_GAMMA + 1)


def stable_hash(value: object) -> int:
    """64-bit hash that is the same in every process (unlike ``hash()``)."""
    data = str(value).encode()
    return (zlib.crc32(data) << 32) | zlib.crc32(data, 0x9E3779B9)


_last_user: list = [None, 0]


def user_hash(user: object) -> int:
    """`stable_hash` of an event's user, remembered for the next call: every rule an event
    matches asks for the same user in a row."""
    if user is _last_user[0]:
        return _last_user[1]
    h = stable_hash(user)
    _last_user[0], _last_user[1] = user, h
    return h


class DistinctSketch:
    __slots__ = ("mins",)

    def __init__(self) -> None:
        self.mins: list[int] = []  # sorted, unique, at most DISTINCT_K

    def add(self, value: object) -> None:
        self.add_hash(stable_hash(value))

    def add_hash(self, h: int) -> None:
        mins = self.mins
        if len(mins) >= DISTINCT_K and h >= mins[-1]:
            return
        i = bisect.bisect_left(mins, h)
        if i < len(mins) and mins[i] == h:
            return
        mins.insert(i, h)
        if len(mins) > DISTINCT_K:
            mins.pop()

    def merge(self, other: DistinctSketch) -> None:
        if other.mins:
            self.mins = sorted(set(self.mins).union(other.mins))[:DISTINCT_K]

    @staticmethod
    def union(sketches: list[DistinctSketch]) -> DistinctSketch:
        """Merge many at once: one sort instead of one per sketch."""
        merged = DistinctSketch()
        hashes: set[int] = set()
        for sketch in sketches:
            hashes.update(sketch.mins)
        merged.mins = sorted(hashes)[:DISTINCT_K]
        return merged

    def estimate(self) -> int:
        if len(self.mins) < DISTINCT_K:
            return len(self.mins)
        return round((DISTINCT_K - 1) * _HASH_SPACE / (self.mins[-1] + 1))

    def snapshot(self) -> list[int]:
        return list(self.mins)

    @staticmethod
    def restore(data: list[int]) -> DistinctSketch:
        sketch = DistinctSketch()
        sketch.mins = sorted(int(h) for h in data)[:DISTINCT_K]
        return sketch
