"""The unit tests, grouped by area (tests/unit/<area>/, scripts/group-tests).

Their shared builders stay here at the top (corekit.py, investigate_fixture.py,
investigate_scenarios.py), and a few test modules reuse another's builders by module name
(``from test_core_properties import BASE``): this folder and every area folder are on sys.path,
so those imports work wherever the modules sit. The fixtures are in tests/conftest.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in [HERE, *sorted(p for p in HERE.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))]:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
