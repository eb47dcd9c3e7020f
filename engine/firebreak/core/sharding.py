"""Which shard evaluates a (rule, group): the scale-out contract.

Every (rule, group) pair belongs to exactly one of N shards, so it is
aggregated and evaluated in one place with all of its events — whatever field
the input topic is keyed by, and for ungrouped (global) rules too. The hash is
CRC-32 of the rule name and the group values, stable across processes.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Sequence

from firebreak.core.engine import RuleState, routes_indexed, rule_fingerprint
from firebreak.dsl.compiler import CompiledRule


def shard_of(rule_name: str, key: tuple, shards: int) -> int:
    text = rule_name + "\x1f" + json.dumps(list(key), default=str, separators=(",", ":"))
    return zlib.crc32(text.encode()) % shards


MEMO_LIMIT = 1_000_000


def owner_memo(shards: int) -> Callable[[str, tuple], int]:
    """`shard_of`, memoised per (rule, group)."""
    memo: dict[tuple[str, tuple], int] = {}

    def shard(rule_name: str, key: tuple) -> int:
        pair = (rule_name, key)
        known = memo.get(pair)
        if known is None:
            if len(memo) >= MEMO_LIMIT:
                memo.clear()
            known = memo[pair] = shard_of(rule_name, key, shards)
        return known

    return shard


def owner(shard: int, shards: int) -> Callable[[str, tuple], bool]:
    """The ``owns`` predicate of `Engine` for one shard (memoised: it is asked for every
    event and rule, about a set of pairs that grows only with the groups)."""
    memo: dict[tuple[str, tuple], bool] = {}

    def owns(rule_name: str, key: tuple) -> bool:
        pair = (rule_name, key)
        known = memo.get(pair)
        if known is None:
            if len(memo) >= MEMO_LIMIT:
                memo.clear()
            known = memo[pair] = shard_of(rule_name, key, shards) == shard
        return known

    return owns


def rules_version(rules: Sequence[CompiledRule]) -> str:
    """Names the rule list (order included): routed pairs refer to rules by index."""
    text = "\n".join(rule_fingerprint(rule) for rule in rules)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Router:
    """The shards an event must reach: one per distinct shard of its (rule, group) pairs."""

    def __init__(self, rules: Sequence[CompiledRule], shards: int) -> None:
        self.shards = shards
        self.states = [RuleState(rule) for rule in rules]
        self.version = rules_version(rules)
        self._shard = {state.rule.name: owner_memo(shards) for state in self.states}
        self._all = list(range(shards))

    def masks_of(self, data: dict) -> dict[int, int]:
        """shard → the rules it must look at for an event, as bits of rule indexes: those of
        which it owns the event's (rule, group) pair, and every `Kx population` rule that
        counts the event — on every shard, as a population is every group's events and each
        shard counts it whole. Shards absent: the event does not concern them."""
        out: dict[int, int] = {}
        for index, (state, key) in enumerate(routes_indexed(self.states, data)):
            if state is None:
                continue
            bit = 1 << index if index < 64 else (1 << 64) - 1
            if state.population is not None:
                for shard in self._all:
                    out[shard] = out.get(shard, 0) | bit
                continue
            shard = self._shard[state.rule.name](state.rule.name, key)
            out[shard] = out.get(shard, 0) | bit
        return out

    def pairs_by_shard(self, data: dict) -> dict[int, list[list]]:
        """shard → [[rule index, group key as a list], ...]: the pairs each shard owns."""
        out: dict[int, list[list]] = {}
        for index, (state, key) in enumerate(routes_indexed(self.states, data)):
            if state is None:
                continue
            shard = self._shard[state.rule.name](state.rule.name, key)
            out.setdefault(shard, []).append([index, list(key)])
        return out
