"""The rules language: parse → check → compile, each a separate pass returning values.

`load_rules` runs all three over a set of sources and is what commands use:

    rules, problems = load_rules({"rules/cost.rules": text})
    rules, problems = load_rules(sources, {"rules/vocabulary.toml": toml})  # and check every name

With ``companions`` (``{path: text}`` of the files that go with the rules, possibly none),
every flag, score, label and field a rule reads must be standard or declared in a
``vocabulary.toml`` (engine/firebreak/dsl/vocabulary.py), and a ``policy.toml`` says who responds to
each rule's incidents and how often they update (engine/firebreak/dsl/policy.py; without one, the
built-in default). Without companions, names are not checked (rules built in code, tests of
other layers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import PurePath

from firebreak.dsl.checker import CATEGORIES, check_rule_files, rule_name
from firebreak.dsl.compiler import CompiledRule, compile_rule
from firebreak.dsl.diagnostics import Diagnostic, has_errors
from firebreak.dsl.parser import parse_rule, parse_rules
from firebreak.dsl.policy import POLICY_FILE, read_policies
from firebreak.dsl.vocabulary import check_names, read_vocabularies

__all__ = ["CompiledRule", "Diagnostic", "load_rules", "parse_rule", "parse_rules"]


def load_rules(
    sources: Mapping[str, str], companions: Mapping[str, str] | None = None
) -> tuple[tuple[CompiledRule, ...], list[Diagnostic]]:
    """Compile every rule in ``{path: text}``; on any error, no rules and all problems
    (those of the companion files — vocabulary.toml, policy.toml — included)."""
    files = []
    problems: list[Diagnostic] = []
    for path, text in sources.items():
        rule_file, syntax = parse_rules(text, path)
        files.append(rule_file)
        problems.extend(syntax)
    problems.extend(check_rule_files(files))
    policies = {}
    if companions is not None:
        policies = {p: t for p, t in companions.items() if PurePath(p).name == POLICY_FILE}
        vocabularies = {p: t for p, t in companions.items() if p not in policies}
        vocabulary, vocabulary_problems = read_vocabularies(vocabularies)
        problems.extend(vocabulary_problems)
        problems.extend(check_names(files, vocabulary))
    names = [rule_name(rule) for f in files for rule in f.rules]
    policy, policy_problems = read_policies(policies, CATEGORIES, names)
    problems.extend(policy_problems)
    problems.sort(key=lambda d: (d.path, d.line, d.column))
    if has_errors(problems):
        return (), problems
    compiled = [compile_rule(rule, f.path) for f in files for rule in f.rules]
    if policies:
        grouping = policy.grouping_config()
        compiled = [
            dataclasses.replace(
                r,
                responses=policy.responses(r.name, r.category),
                grouping=grouping,
                reopen_within_ms=_or(policy.reopen_within(r.name, r.category), grouping.reopen_within_ms),
            )
            for r in compiled
        ]
    return tuple(compiled), problems


def _or(value: int | None, default: int) -> int:
    return default if value is None else value
