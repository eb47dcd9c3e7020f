"""The starter rule pack, wherever it is: inside the wheel or in the source tree.

The pack lives in the repository's top-level ``rules/`` folder. A wheel ships it
inside the package as ``engine/_rules/`` (pyproject's ``force-include``), the
same way as the grammar; an editable install reads it from the source tree.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from engine.adapters.rule_files import RULE_SUFFIX


class StarterPackMissing(Exception):
    """Neither the package nor the source tree holds the starter rules."""


def starter_rule_sources() -> dict[str, str]:
    """``{"rules/<file>.rules": text}`` for every rule file of the starter pack, sorted."""
    packaged = resources.files("engine").joinpath("_rules")
    source_tree = Path(__file__).resolve().parents[2] / "rules"
    for root in (packaged, source_tree):
        if root.is_dir():
            sources = dict(sorted(_rule_files(root, "rules")))
            if sources:
                return sources
    raise StarterPackMissing("starter rules not found in the package (engine/_rules) or the source tree (rules/)")


def _rule_files(folder: Traversable, label: str) -> list[tuple[str, str]]:
    found = []
    for item in folder.iterdir():
        if item.is_dir():
            found += _rule_files(item, f"{label}/{item.name}")
        elif item.name.endswith(RULE_SUFFIX):
            found.append((f"{label}/{item.name}", item.read_text(encoding="utf-8")))
    return found
