"""Problems in rule text, as data.

A `Diagnostic` is a value: tests compare them, the CLI renders them. Rendering
needs the source text, which the caller passes in; nothing here reads files.

    rules/x.rules:3:1: error: unknown function `rat` — did you mean `rate`?
        rat(hallucination) > 3x baseline over 10m -> sev2
        ^^^
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from firebreak.dsl.ast import Span


@dataclass(frozen=True, slots=True)
class Diagnostic:
    path: str
    line: int
    column: int
    message: str
    end_column: int | None = None  # exclusive; None: a single caret
    level: str = "error"  # error | warning

    @staticmethod
    def at(path: str, span: Span, message: str, level: str = "error") -> Diagnostic:
        end = span.end_column if span.end_line == span.line and span.end_column > span.column else None
        return Diagnostic(path, span.line, span.column, message, end, level)

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"

    def headline(self) -> str:
        return f"{self.location}: {self.level}: {self.message}"

    def render(self, source: str) -> str:
        """Headline, the source line and a caret under the offending span."""
        lines = source.splitlines()
        out = [self.headline()]
        if 1 <= self.line <= len(lines):
            text = lines[self.line - 1].expandtabs(1)
            width = 1 if self.end_column is None else max(1, self.end_column - self.column)
            width = min(width, max(1, len(text) - self.column + 1))
            out.append("    " + text)
            out.append("    " + " " * (self.column - 1) + "^" * width)
        return "\n".join(out)


_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def read_toml(text: str, path: str) -> tuple[dict | None, list[Diagnostic]]:
    """A companion file's TOML (vocabulary.toml, policy.toml): its data, or None and the error
    located at the line and column TOML gives."""
    try:
        return tomllib.loads(text), []
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        found = _TOML_AT.search(message)
        line, column = (int(found[1]), int(found[2])) if found else (max(1, len(text.splitlines())), 1)
        return None, [Diagnostic(path, line, column, f"not valid TOML: {_TOML_AT.sub('', message)}")]
    except RecursionError:  # tomllib reads nested tables and arrays recursively
        return None, [Diagnostic(path, 1, 1, "not readable TOML: tables or arrays nested too deeply")]


def render_all(diagnostics: Iterable[Diagnostic], sources: dict[str, str]) -> str:
    return "\n".join(d.render(sources.get(d.path, "")) for d in diagnostics)


def has_errors(diagnostics: Sequence[Diagnostic]) -> bool:
    return any(d.level == "error" for d in diagnostics)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` — did you mean `rate`?`` or "" when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" — did you mean `{close[0]}`?" if close else ""
