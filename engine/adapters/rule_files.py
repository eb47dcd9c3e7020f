"""Read rule files from disk: the only place the rules language meets I/O."""

from __future__ import annotations

from pathlib import Path

from engine.dsl.vocabulary import VOCABULARY_FILE

RULE_SUFFIX = ".rules"


class RuleFileError(Exception):
    """A path given on the command line that cannot be read as rules."""


def collect_rule_paths(paths: list[str]) -> list[Path]:
    """Directories give their ``*.rules`` files (recursively, sorted); a file
    named directly is taken whatever its name (but ``vocabulary.toml``)."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob(f"*{RULE_SUFFIX}") if p.is_file()))
        elif path.is_file():
            if path.name != VOCABULARY_FILE:
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


def collect_vocabulary_paths(paths: list[str]) -> list[Path]:
    """The ``vocabulary.toml`` files that go with these rule paths: under a directory (recursively,
    like its rules), next to a rule file named directly, or named directly itself."""
    found: dict[Path, None] = {}
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.update(dict.fromkeys(sorted(p for p in path.rglob(VOCABULARY_FILE) if p.is_file())))
        elif path.is_file():
            beside = path if path.name == VOCABULARY_FILE else path.parent / VOCABULARY_FILE
            if beside.is_file():
                found[beside] = None
        else:
            raise RuleFileError(f"{name}: no such file or directory")
    return list(found)


def read_vocabulary_sources(paths: list[str]) -> dict[str, str]:
    """``{path: text}`` of the vocabulary files of these rule paths (engine/dsl/vocabulary.py);
    pass it to `load_rules` so that every name a rule reads is checked."""
    sources: dict[str, str] = {}
    for path in collect_vocabulary_paths(paths):
        try:
            sources[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise RuleFileError(f"{path}: cannot read: {error}") from None
    return sources
