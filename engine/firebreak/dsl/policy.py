"""The response policy: who responds to an incident and how often they update, by severity.

The playbook Firebreak follows says severity decides the response team and the cadence of
status updates. A ``policy.toml`` next to the rules says it for a team (docs/response.md):

    [sev1]
    team = "ai-oncall"          # who responds
    page = true                 # page them (false: a ticket or a channel message)
    update_every = "30m"        # status updates while the incident stays open

    [category.data_leakage]     # every severity of a category...
    team = "security-oncall"

    [rule.user_spend_cap.sev3]  # ...or of one rule, or one severity of either
    page = false

    [rule.user_spend_cap]       # a rule's (or a category's) own flapping cool-down
    reopen_within = "1d"

The most specific layer wins, key by key: built-in defaults (`DEFAULT_RESPONSES`), then
``[sevN]``, ``[category.C]``, ``[category.C.sevN]``, ``[rule.R]``, ``[rule.R.sevN]``. Each
rule is compiled with its four responses (`CompiledRule.responses`); `incident.opened` and
`incident.escalated` records carry the one of their severity as ``response``.

Pure functions: texts in, `Policy` values and `Diagnostic` lists out. Reading the files is the
adapters' job (engine/firebreak/adapters/rule_files.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from firebreak.dsl.diagnostics import Diagnostic, did_you_mean, read_toml
from firebreak.dsl.grouping import DEFAULT_GROUPING, Grouping, duration_or_none, read_grouping
from firebreak.dsl.maintenance import read_maintenance
from firebreak.durations import DurationError, parse_duration
from firebreak.records import SEVERITY_NAMES

POLICY_FILE = "policy.toml"
LAYERS = ("category", "rule")
# [grouping]: cases, flapping, inhibition (dsl/grouping.py); [[maintenance]]: windows (dsl/maintenance.py)
SECTIONS = ("grouping", "maintenance")
KEYS = ("team", "page", "update_every")
# `reopen_within` in [rule.R] or [category.C] (not per severity): that rule's, or that category's
# rules', flapping cool-down instead of [grouping]'s (core/flapping.py)
LAYER_KEYS = (*KEYS, "reopen_within")
MAX_REOPEN_WITHIN_MS = 30 * 24 * 3_600_000


@dataclass(frozen=True, slots=True)
class Response:
    """Who responds and how often they update: what an incident record's ``response`` says."""

    team: str
    page: bool
    update_every_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"team": self.team, "page": self.page, "update_every_ms": self.update_every_ms}


# Without a policy file: the on-call is paged for sev1 and sev2 and updates every 30 minutes
# and every hour; sev3 and sev4 go to the owning team, updated daily and weekly.
DEFAULT_RESPONSES = (
    Response("on-call", True, 30 * 60_000),
    Response("on-call", True, 60 * 60_000),
    Response("owning-team", False, 24 * 3_600_000),
    Response("owning-team", False, 7 * 24 * 3_600_000),
)

Overrides = dict[str, Any]  # a subset of KEYS, with update_every already in milliseconds


@dataclass(frozen=True)
class Policy:
    """The layers of one or more policy files, merged (later files win)."""

    severity: dict[int, Overrides] = field(default_factory=dict)
    category: dict[tuple[str, int | None], Overrides] = field(default_factory=dict)
    rule: dict[tuple[str, int | None], Overrides] = field(default_factory=dict)
    grouping: dict[str, Any] = field(default_factory=dict)  # checked [grouping] overrides

    def grouping_config(self) -> Grouping:
        return DEFAULT_GROUPING.merged(self.grouping)

    def reopen_within(self, rule: str, category: str) -> int | None:
        """The flapping cool-down `[rule.R]` or else `[category.C]` sets; None: [grouping]'s."""
        for layer in (self.rule.get((rule, None)), self.category.get((category, None))):
            if layer and "reopen_within_ms" in layer:
                return layer["reopen_within_ms"]
        return None

    def responses(self, rule: str, category: str) -> tuple[Response, ...]:
        """The response for each severity (sev1 first) of a rule of this category."""
        out = []
        for sev, default in enumerate(DEFAULT_RESPONSES, start=1):
            values = default.to_json()
            for layer in (
                self.severity.get(sev),
                self.category.get((category, None)),
                self.category.get((category, sev)),
                self.rule.get((rule, None)),
                self.rule.get((rule, sev)),
            ):
                if layer:
                    values.update(layer)
            out.append(Response(values["team"], values["page"], values["update_every_ms"]))
        return tuple(out)


DEFAULT_POLICY = Policy()


def parse_policy(
    text: str, path: str, categories: Iterable[str], rule_names: Iterable[str]
) -> tuple[Policy, list[Diagnostic]]:  # noqa: E501
    """The policy one ``policy.toml`` states, and every problem in it. ``rule_names``: the rules
    loaded with it (a layer for a rule that does not exist would never apply: an error)."""
    data, broken = read_toml(text, path)
    if data is None:
        return DEFAULT_POLICY, broken
    reader = _Reader(text, path, tuple(categories), tuple(rule_names))
    policy = Policy()
    for key, value in data.items():
        if key in SEVERITY_NAMES:
            overrides = reader.overrides(value, [key])
            if overrides is not None:
                policy.severity[_sev(key)] = overrides
        elif key in LAYERS:
            if not isinstance(value, dict):
                reader.problem([], key, f"`{key}` must be tables: [{key}.NAME]")
                continue
            known = reader.categories if key == "category" else reader.rule_names
            noun = "category" if key == "category" else "rule"
            layer = policy.category if key == "category" else policy.rule
            for name, table in value.items():
                if name not in known:
                    close = did_you_mean(name, known)
                    if key == "rule" and not close:
                        # a rule of a file not loaded with this one (`firebreak test` of one file,
                        # `--rules` naming one file of the directory): said, not refused
                        reader.problem(
                            [key, name],
                            name,
                            f"no rule `{name}` among the rules loaded with this policy: this section applies to none",
                            header=True,
                            level="warning",
                        )
                        continue
                    hint = close or (
                        f"; expected one of {', '.join(known)}" if key == "category" else ": no rule has that name"
                    )
                    reader.problem([key, name], name, f"unknown {noun} `{name}`{hint}", header=True)
                    continue
                if not isinstance(table, dict):
                    reader.problem([key], name, f"`{key}.{name}` must be a table: [{key}.{name}]")
                    continue
                own = {k: v for k, v in table.items() if k not in SEVERITY_NAMES}
                overrides = reader.overrides(own, [key, name], keys=LAYER_KEYS)
                if overrides:
                    layer[(name, None)] = overrides
                for sev in SEVERITY_NAMES:
                    if sev in table:
                        overrides = reader.overrides(table[sev], [key, name, sev])
                        if overrides is not None:
                            layer[(name, _sev(sev))] = overrides
        elif key == "grouping":
            policy.grouping.update(read_grouping(value, reader, reader.categories))
        elif key == "maintenance":
            windows, found = read_maintenance(value, reader.lines, path)
            reader.problems.extend(found)
            policy.grouping["maintenance"] = policy.grouping.get("maintenance", ()) + windows
        else:
            known = SEVERITY_NAMES + LAYERS + SECTIONS
            hint = did_you_mean(key, known) or "; expected sev1…sev4, category, rule, grouping or maintenance"
            reader.problem([], key, f"unknown key `{key}`{hint}")
    return policy, reader.problems


def read_policies(
    sources: Mapping[str, str], categories: Iterable[str], rule_names: Iterable[str]
) -> tuple[Policy, list[Diagnostic]]:
    """Every ``{path: text}`` policy file merged, in order (a later file's keys win)."""
    merged, problems = Policy(), []
    names = tuple(rule_names)
    for path, text in sources.items():
        policy, found = parse_policy(text, path, categories, names)
        problems.extend(found)
        for mine, theirs in (
            (merged.severity, policy.severity),
            (merged.category, policy.category),
            (merged.rule, policy.rule),
        ):
            for k, v in theirs.items():
                mine[k] = {**mine.get(k, {}), **v}
        by = {**merged.grouping.get("by", {}), **policy.grouping.get("by", {})}
        windows = merged.grouping.get("maintenance", ()) + policy.grouping.get("maintenance", ())
        merged.grouping.update(policy.grouping)
        if by:
            merged.grouping["by"] = by
        if windows:
            merged.grouping["maintenance"] = windows  # every file's windows
    return merged, problems


def duration_text_ms(text: str) -> int | None:
    """A positive duration (engine/firebreak/durations.py), or None."""
    try:
        ms = parse_duration(text)
    except DurationError:
        return None
    return ms if ms > 0 else None


def _cool_down_ms(value: Any) -> int | None:
    """A flapping cool-down: a duration from 0 (never reopen) up to MAX_REOPEN_WITHIN_MS, or None."""
    ms = duration_or_none(value)
    return ms if ms is not None and ms <= MAX_REOPEN_WITHIN_MS else None


def _sev(name: str) -> int:
    return int(name[3:])


class _Reader:
    """Checks tables and locates problems in the text (tomllib gives no positions)."""

    def __init__(self, text: str, path: str, categories: tuple[str, ...], rule_names: tuple[str, ...]) -> None:
        self.lines = text.splitlines()
        self.path = path
        self.categories = categories
        self.rule_names = rule_names
        self.problems: list[Diagnostic] = []

    def overrides(self, table: Any, where: list[str], keys: tuple[str, ...] = KEYS) -> Overrides | None:
        if not isinstance(table, dict):
            self.problem(where[:-1], where[-1], f"`{'.'.join(where)}` must be a table: [{'.'.join(where)}]")
            return None
        out: Overrides = {}
        for key, value in table.items():
            if key == "reopen_within" and key not in keys:
                self.problem(
                    where, key, "`reopen_within` is a rule's or a category's: put it in [rule.R] or [category.C]"
                )
            elif key not in keys:
                hint = did_you_mean(key, keys) or f"; expected {', '.join(keys[:-1])} or {keys[-1]}"
                self.problem(where, key, f"unknown key `{key}`{hint}")
            elif key == "reopen_within":
                ms = _cool_down_ms(value)
                if ms is None:
                    self.problem(
                        where, key, '`reopen_within` must be a duration from "0s" (never reopen) to "30d", e.g. "1d"'
                    )
                else:
                    out["reopen_within_ms"] = ms
            elif key == "team":
                if isinstance(value, str) and value.strip():
                    out["team"] = value
                else:
                    self.problem(where, key, '`team` must be a name, e.g. team = "ai-oncall"')
            elif key == "page":
                if isinstance(value, bool):
                    out["page"] = value
                else:
                    self.problem(where, key, "`page` must be true or false")
            else:
                ms = duration_text_ms(value) if isinstance(value, str) else None
                if ms is None:
                    self.problem(where, key, '`update_every` must be a duration such as "30m", "1h" or "1d"')
                else:
                    out["update_every_ms"] = ms
        return out

    def problem(self, table: list[str], key: str, message: str, header: bool = False, level: str = "error") -> None:
        line, column = self._locate(table, key, header)
        self.problems.append(Diagnostic(self.path, line, column, message, column + len(key), level))

    def _locate(self, table: list[str], key: str, header: bool) -> tuple[int, int]:
        """The key's line inside the table's section; or the header naming it; (1, 1) if absent."""
        start = 0
        if table:
            wanted = ".".join(table)
            for i, line in enumerate(self.lines):
                found = _header(line)
                if header and found is not None and (found == wanted or found.startswith(wanted + ".")):
                    return i + 1, line.index(key) + 1 if key in line else 1
                if found == wanted:
                    start = i + 1
                    break
            else:
                if header:
                    return 1, 1
        for i in range(start, len(self.lines)):
            line = self.lines[i]
            if table and i >= start and _header(line) is not None:
                break
            stripped = line.lstrip()
            if stripped.startswith(key) and stripped[len(key) :].lstrip().startswith("="):
                return i + 1, len(line) - len(stripped) + 1
            if not table and _header(line) is not None and _header(line).split(".")[0] == key:
                return i + 1, line.index(key) + 1
        return 1, 1


def _header(line: str) -> str | None:
    stripped = line.strip()
    if not stripped.startswith("[") or stripped.startswith("[["):
        return None
    inner = stripped[1:].split("]", 1)[0]
    return ".".join(part.strip().strip('"').strip("'") for part in inner.split("."))
