"""The starter rule pack, wherever it is: inside the wheel or in the source tree.

The pack lives in the repository's top-level ``rules/`` folder. A wheel ships it
inside the package as ``engine/firebreak/_rules/`` (pyproject's ``force-include``), the
same way as the grammar; an editable install reads it from the source tree.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from firebreak.adapters.rule_files import COMPANION_FILES, RULE_SUFFIX


class StarterPackMissing(Exception):
    """Neither the package nor the source tree holds the starter rules."""


def starter_rule_sources() -> dict[str, str]:
    """``{"rules/<file>.rules": text}`` for every rule file of the starter pack, sorted."""
    return _starter_files(lambda name: name.endswith(RULE_SUFFIX))


def starter_companion_sources() -> dict[str, str]:
    """``{"rules/policy.toml": text}``: the pack's companion files (its response policy)."""
    return _starter_files(lambda name: name in COMPANION_FILES, required=False)


def _starter_files(wanted, required: bool = True) -> dict[str, str]:
    packaged = resources.files("firebreak").joinpath("_rules")
    source_tree = Path(__file__).resolve().parents[3] / "rules"
    for root in (packaged, source_tree):
        if root.is_dir() and any(item.name.endswith(RULE_SUFFIX) for item in root.iterdir()):
            return dict(sorted(_files(root, "rules", wanted)))
    if not required:
        return {}
    raise StarterPackMissing(
        "starter rules not found in the package (engine/firebreak/_rules) or the source tree (rules/)"
    )


def _files(folder: Traversable, label: str, wanted) -> list[tuple[str, str]]:
    found = []
    for item in folder.iterdir():
        if item.is_dir():
            found += _files(item, f"{label}/{item.name}", wanted)
        elif wanted(item.name):
            found.append((f"{label}/{item.name}", item.read_text(encoding="utf-8")))
    return found
