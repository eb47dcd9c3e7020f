"""The names rules may use: standard fields, flags and scores, plus a team's own.

Flags and fields are open by design, so an unknown name is not proof of a mistake —
but a misspelt one makes a rule that loads, runs and never fires. So every name a
rule reads must be either **standard** (what the event contract defines:
engine/firebreak/core/events.py, docs/schemas/event.schema.json) or **declared** in a
``vocabulary.toml`` next to the rules:

    flags = ["off_topic", "toxic_request"]
    scores = ["helpfulness"]
    labels = ["outdated"]          # report labels, for reports(LABEL)
    fields = ["region", "attributes.*"]

Pure functions: texts in, `Vocabulary` values and `Diagnostic` lists out. Reading
the files is the adapters' job (engine/firebreak/adapters/rule_files.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from firebreak.core.events import NUMBER_FIELDS, STANDARD_FLAGS, STANDARD_LABELS, STANDARD_SCORES, STRING_FIELDS
from firebreak.dsl import ast
from firebreak.dsl.diagnostics import Diagnostic, did_you_mean, read_toml
from firebreak.dsl.metrics import FUNCTIONS, Argument

VOCABULARY_FILE = "vocabulary.toml"
TEXT_FIELDS = ("prompt", "output", "comment")  # raw text a service may attach (engine/firebreak/core/events.py)
ENVELOPE_FIELDS = ("event_id", "ts", "type", "kind", "description", "ref", "labels")  # every event's own fields
MAPS = ("flags", "scores")  # objects of booleans, of numbers
STANDARD_FIELDS = ENVELOPE_FIELDS + STRING_FIELDS + NUMBER_FIELDS + TEXT_FIELDS
NOT_NUMBERS = frozenset(STRING_FIELDS + TEXT_FIELDS + ("event_id", "type", "kind", "description", "ref", "labels"))
NUMERIC_FUNCS = frozenset(name for name, function in FUNCTIONS.items() if function.numeric)
KEYS = {"flags": "flag", "scores": "score", "labels": "label", "fields": "field"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(\.\*)?")


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Known names. ``fields`` are dotted paths; ``maps`` are paths declared as ``path.*``:
    the path and anything under it."""

    flags: frozenset[str] = frozenset()
    scores: frozenset[str] = frozenset()
    fields: frozenset[str] = frozenset()
    maps: frozenset[str] = frozenset()
    labels: frozenset[str] = frozenset()  # what a `report` event's labels may say

    def merged(self, other: Vocabulary) -> Vocabulary:
        return Vocabulary(
            self.flags | other.flags,
            self.scores | other.scores,
            self.fields | other.fields,
            self.maps | other.maps,
            self.labels | other.labels,
        )

    def knows_field(self, parts: tuple[str, ...]) -> bool:
        dotted = ".".join(parts)
        if dotted in self.fields or any(f.startswith(dotted + ".") for f in self.fields):
            return True  # a declared path, or an object on the way to one
        return any(dotted == m or dotted.startswith(m + ".") or m.startswith(dotted + ".") for m in self.maps)

    def field_names(self) -> list[str]:
        """Every spelled-out path, for "did you mean"."""
        spelled = {f"flags.{f}" for f in self.flags} | {f"scores.{s}" for s in self.scores}
        return sorted(self.fields | self.maps | spelled)


STANDARD = Vocabulary(
    frozenset(STANDARD_FLAGS), frozenset(STANDARD_SCORES), frozenset(STANDARD_FIELDS), labels=frozenset(STANDARD_LABELS)
)


# ---- vocabulary files ---------------------------------------------------------------------


def parse_vocabulary(text: str, path: str) -> tuple[Vocabulary, list[Diagnostic]]:
    """The names one ``vocabulary.toml`` declares, and every problem in it."""
    data, broken = read_toml(text, path)
    if data is None:
        return Vocabulary(), broken
    problems: list[Diagnostic] = []
    declared: dict[str, set[str]] = {key: set() for key in KEYS}
    for key, value in data.items():
        line, column = _locate(text, key, at_line_start=True)
        if key not in KEYS:
            hint = did_you_mean(key, KEYS) or "; expected flags, scores, labels or fields"
            problems.append(Diagnostic(path, line, column, f"unknown key `{key}`{hint}", column + len(key)))
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(
                Diagnostic(
                    path, line, column, f'`{key}` must be a list of names, e.g. {key} = ["name"]', column + len(key)
                )
            )
            continue
        for name in value:
            problem = _entry_problem(key, name)
            if problem:
                at_line, at_column = _locate(text, f'"{name}"') if f'"{name}"' in text else _locate(text, f"'{name}'")
                problems.append(Diagnostic(path, at_line, at_column, problem, at_column + len(name) + 2))
            else:
                declared[key].add(name)
    maps = {f[:-2] for f in declared["fields"] if f.endswith(".*")}
    fields = {f for f in declared["fields"] if not f.endswith(".*")}
    return Vocabulary(
        frozenset(declared["flags"]),
        frozenset(declared["scores"]),
        frozenset(fields),
        frozenset(maps),
        frozenset(declared["labels"]),
    ), problems


def read_vocabularies(sources: Mapping[str, str]) -> tuple[Vocabulary, list[Diagnostic]]:
    """The standard vocabulary plus everything ``{path: text}`` of vocabulary files declare."""
    vocabulary, problems = STANDARD, []
    for path, text in sources.items():
        declared, found = parse_vocabulary(text, path)
        vocabulary = vocabulary.merged(declared)
        problems.extend(found)
    return vocabulary, problems


def _entry_problem(key: str, name: str) -> str | None:
    noun = KEYS[key]
    if key == "fields":
        if not _PATH.fullmatch(name):
            return f"`{name}` is not a field path: names joined by dots, optionally ending `.*`"
        head = name.split(".")[0]
        if head in MAPS:
            rest = name[len(head) + 1 :] or "NAME"
            return f'declare {head} under `{head}`: {head} = ["{rest}"]'
        return None
    if name.startswith(("flags.", "scores.")):
        return f"declare the bare name: `{name.split('.', 1)[1]}`, not `{name}`"
    if not _NAME.fullmatch(name):
        return f"`{name}` is not a {noun} name: letters, digits and `_`, not starting with a digit"
    return None


def _locate(text: str, needle: str, at_line_start: bool = False) -> tuple[int, int]:
    """1-based line and column of the first ``needle`` (a key: at the start of a line); (1, 1) if absent."""
    for number, line in enumerate(text.splitlines(), start=1):
        if at_line_start:
            stripped = line.lstrip()
            if stripped.startswith(needle) and stripped[len(needle) :].lstrip().startswith("="):
                return number, len(line) - len(stripped) + 1
        elif needle in line:
            return number, line.index(needle) + 1
    return 1, 1


# ---- names in rules ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameUse:
    """A name a rule reads: ``role`` is flag (rate/count's argument), label (reports'
    argument), metric (a numeric or distinct function's field), by or where; ``path`` is the
    event path read (``("labels", NAME)`` for a label)."""

    role: str
    path: tuple[str, ...]
    span: ast.Span

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def names_used(rule: ast.Rule) -> list[NameUse]:
    """Every name the rule reads, in the order written."""
    c = rule.condition
    uses: list[NameUse] = []
    function = FUNCTIONS.get(c.metric.func)
    arg = c.metric.arg
    if arg is not None and function is not None:
        if function.argument is Argument.FIELD:
            uses.append(NameUse("metric", arg.parts, arg.span))
        elif function.argument is Argument.OPTIONAL_LABEL:
            if len(arg.parts) == 1:
                uses.append(NameUse("label", ("labels", arg.parts[0]), arg.span))
        elif len(arg.parts) == 1:
            uses.append(NameUse("flag", ("flags", arg.parts[0]), arg.span))
    uses += [NameUse("by", p.parts, p.span) for p in c.by]
    if c.where is not None:
        uses += [NameUse("where", p.parts, p.span) for p in _where_paths(c.where)]
    return uses


def _where_paths(e: ast.Expr) -> Iterator[ast.FieldPath]:
    if isinstance(e, ast.And | ast.Or):
        yield from _where_paths(e.left)
        yield from _where_paths(e.right)
    elif isinstance(e, ast.Not):
        yield from _where_paths(e.operand)
    else:
        yield e.path


def check_names(files: Iterable[ast.RuleFile], vocabulary: Vocabulary) -> list[Diagnostic]:
    """An error for every name a rule reads that is neither standard nor declared, and for a
    numeric function over a field that is never a number."""
    problems = []
    for rule_file in files:
        for rule in rule_file.rules:
            for use in names_used(rule):
                message = name_problem(use, rule.condition.metric.func, vocabulary)
                if message:
                    problems.append(Diagnostic.at(rule_file.path, use.span, message))
    return problems


def name_problem(use: NameUse, func: str, vocabulary: Vocabulary) -> str | None:
    parts, head = use.path, use.path[0]
    if use.role == "label":
        name = parts[1]
        if name in vocabulary.labels:
            return None
        hint = did_you_mean(name, vocabulary.labels)
        return f"unknown report label `{name}`" + (
            hint or f': not a standard label; declare it in {VOCABULARY_FILE} next to the rules (labels = ["{name}"])'
        )
    if head in MAPS and len(parts) >= 2:
        known, noun = (vocabulary.flags, "flag") if head == "flags" else (vocabulary.scores, "score")
        name = parts[1]
        written = name if use.role == "flag" else f"{head}.{name}"
        if name not in known:
            hint = did_you_mean(name, known)
            if hint and use.role != "flag":
                hint = hint.replace("`", f"`{head}.", 1)
            return f"unknown {noun} `{written}`" + (
                hint
                or f': not a standard {noun}; declare it in {VOCABULARY_FILE} next to the rules ({head} = ["{name}"])'
            )
        if len(parts) > 2:
            return f"`{head}.{name}` is a {'boolean' if head == 'flags' else 'number'}; it has no field `{parts[2]}`"
    elif not (head in MAPS or vocabulary.knows_field(parts)):
        dotted = ".".join(parts)
        hint = did_you_mean(dotted, vocabulary.field_names())
        return f"unknown field `{dotted}`" + (
            hint or f': not a standard field; declare it in {VOCABULARY_FILE} next to the rules (fields = ["{dotted}"])'
        )
    if use.role == "metric" and func in NUMERIC_FUNCS:
        if head == "flags":
            return f"`{use.dotted}` is true or false, never a number: count it with `rate({parts[-1]})`"
        if len(parts) == 1 and head in NOT_NUMBERS | set(MAPS):
            what = "an object" if head in MAPS else "text"
            return f"`{func}({head})` never has a value: `{head}` is {what}, not a number"
    return None
