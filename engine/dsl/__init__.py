"""The rules language: parse → check → compile, each a separate pass returning values.

`load_rules` runs all three over a set of sources and is what commands use:

    rules, problems = load_rules({"rules/cost.rules": text})
    rules, problems = load_rules(sources, {"rules/vocabulary.toml": toml})  # and check every name

With ``vocabularies`` (``{path: text}`` of vocabulary files, possibly none), every flag,
score and field a rule reads must be standard or declared (engine/dsl/vocabulary.py);
without, names are not checked (rules built in code, tests of other layers).
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.dsl.checker import check_rule_files
from engine.dsl.compiler import CompiledRule, compile_rule
from engine.dsl.diagnostics import Diagnostic, has_errors
from engine.dsl.parser import parse_rule, parse_rules
from engine.dsl.vocabulary import check_names, read_vocabularies

__all__ = ["CompiledRule", "Diagnostic", "load_rules", "parse_rule", "parse_rules"]


def load_rules(
    sources: Mapping[str, str], vocabularies: Mapping[str, str] | None = None
) -> tuple[tuple[CompiledRule, ...], list[Diagnostic]]:
    """Compile every rule in ``{path: text}``; on any error, no rules and all problems
    (those of the vocabulary files included)."""
    files = []
    problems: list[Diagnostic] = []
    for path, text in sources.items():
        rule_file, syntax = parse_rules(text, path)
        files.append(rule_file)
        problems.extend(syntax)
    problems.extend(check_rule_files(files))
    if vocabularies is not None:
        vocabulary, vocabulary_problems = read_vocabularies(vocabularies)
        problems.extend(vocabulary_problems)
        problems.extend(check_names(files, vocabulary))
    problems.sort(key=lambda d: (d.path, d.line, d.column))
    if has_errors(problems):
        return (), problems
    return tuple(compile_rule(rule, f.path) for f in files for rule in f.rules), problems
