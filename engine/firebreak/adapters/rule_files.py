"""Read rule files from disk: the only place the rules language meets I/O."""

from __future__ import annotations

import sys
from pathlib import Path

from firebreak.dsl import CompiledRule, load_rules
from firebreak.dsl.diagnostics import render_all
from firebreak.dsl.policy import POLICY_FILE
from firebreak.dsl.vocabulary import VOCABULARY_FILE

RULE_SUFFIX = ".rules"
# The files that go with rules: the names they may read, and who responds to their incidents.
COMPANION_FILES = (VOCABULARY_FILE, POLICY_FILE)


class RuleFileError(Exception):
    """A path given on the command line that cannot be read as rules."""


def collect_rule_paths(paths: list[str]) -> list[Path]:
    """Directories give their ``*.rules`` files (recursively, sorted); a file
    named directly is taken whatever its name (but a companion: ``vocabulary.toml``, ``policy.toml``)."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob(f"*{RULE_SUFFIX}") if p.is_file()))
        elif path.is_file():
            if path.name not in COMPANION_FILES:
                found.append(path)
        else:
            raise RuleFileError(f"{name}: no such file or directory")
    return found


def read_rule_sources(paths: list[str]) -> dict[str, str]:
    sources: dict[str, str] = {}
    for path in collect_rule_paths(paths):
        try:
            sources[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise RuleFileError(f"{path}: cannot read: {error}") from None
    return sources


def collect_companion_paths(paths: list[str], names: tuple[str, ...] = COMPANION_FILES) -> list[Path]:
    """The companion files (``vocabulary.toml``, ``policy.toml``) that go with these rule paths:
    under a directory (recursively, like its rules), next to a rule file named directly, or
    named directly themselves."""
    found: dict[Path, None] = {}
    for name in paths:
        path = Path(name)
        if path.is_dir():
            for companion in names:
                found.update(dict.fromkeys(sorted(p for p in path.rglob(companion) if p.is_file())))
        elif path.is_file():
            for companion in names:
                beside = path if path.name == companion else path.parent / companion
                if beside.is_file():
                    found[beside] = None
        else:
            raise RuleFileError(f"{name}: no such file or directory")
    return list(found)


def collect_vocabulary_paths(paths: list[str]) -> list[Path]:
    return collect_companion_paths(paths, (VOCABULARY_FILE,))


def read_vocabulary_sources(paths: list[str]) -> dict[str, str]:
    """``{path: text}`` of the vocabulary files of these rule paths (engine/firebreak/dsl/vocabulary.py)."""
    return read_companion_sources(paths, (VOCABULARY_FILE,))


def read_companion_sources(paths: list[str], names: tuple[str, ...] = COMPANION_FILES) -> dict[str, str]:
    """``{path: text}`` of the companion files of these rule paths; pass it to `load_rules` so
    that every name a rule reads is checked and the response policy applies."""
    sources: dict[str, str] = {}
    for path in collect_companion_paths(paths, names):
        try:
            sources[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise RuleFileError(f"{path}: cannot read: {error}") from None
    return sources


# ---- for commands: read and compile, or print why not ------------------------------------


def read_sources_or_report(paths: list[str], command: str) -> tuple[dict[str, str], dict[str, str]] | None:
    """The rule files' texts and their vocabulary files' texts, or None after printing why
    there are none."""
    try:
        sources = read_rule_sources(paths)
        vocabularies = read_companion_sources(paths)
    except RuleFileError as error:
        print(f"firebreak {command}: {error}", file=sys.stderr)
        return None
    if not sources:
        print(f"firebreak {command}: no *.rules files under {' '.join(paths)}", file=sys.stderr)
        return None
    return sources, vocabularies


def load_rules_or_report(paths: list[str], command: str) -> tuple[CompiledRule, ...] | None:
    """Compiled rules, or None after printing why there are none."""
    read = read_sources_or_report(paths, command)
    if read is None:
        return None
    sources, vocabularies = read
    rules, problems = load_rules(sources, vocabularies)
    if problems:
        print(render_all(problems, sources | vocabularies), file=sys.stderr)
    if not rules:
        if not problems:
            print(f"firebreak {command}: no rules in {' '.join(paths)}", file=sys.stderr)
        return None
    return rules
