"""Find and load the Lark grammar, once.

The grammar lives in the repository's top-level ``grammar/`` folder. A wheel
ships it inside the package as ``engine/firebreak/_grammar/`` (pyproject's
``force-include``); an editable install reads it from the source tree.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from lark import Lark

GRAMMAR_FILE = "rules.lark"


def grammar_text() -> str:
    packaged = resources.files("firebreak").joinpath("_grammar", GRAMMAR_FILE)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source_tree = Path(__file__).resolve().parents[3] / "grammar" / GRAMMAR_FILE
    if source_tree.is_file():
        return source_tree.read_text(encoding="utf-8")
    raise FileNotFoundError(
        f"grammar {GRAMMAR_FILE} not found in the package (engine/firebreak/_grammar) or the source tree (grammar/)"
    )


@functools.cache
def lark_parser() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
    )
