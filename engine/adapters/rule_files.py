"""Read rule files from disk: the only place the rules language meets I/O."""

from __future__ import annotations

from pathlib import Path

RULE_SUFFIX = ".rules"


class RuleFileError(Exception):
    """A path given on the command line that cannot be read as rules."""


def collect_rule_paths(paths: list[str]) -> list[Path]:
    """Directories give their ``*.rules`` files (recursively, sorted); a file
    named directly is taken whatever its name."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob(f"*{RULE_SUFFIX}") if p.is_file()))
        elif path.is_file():
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
