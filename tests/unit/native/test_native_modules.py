"""The native crate's layout (docs/native.md, Layout): no cycle among its modules, and pyo3
only in the bindings (`py/`, the host callback among them): the engine, routing and snapshots
ask their host through host.rs's traits and hold its objects as handles of its own type."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def layout() -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "crate-modules"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_no_module_cycle_in_the_crate():
    report = layout()
    assert report["cycles"] == []
    assert "engine" not in report["edges"]["groups"] and "engine" not in report["edges"]["route"]


def test_pyo3_only_where_python_is_met():
    assert set(layout()["pyo3"]) <= {"py", "py::core", "py::host", "py::router", "py::rootcause"}
    for rust in (ROOT / "native" / "src").rglob("*.rs"):
        text = rust.read_text(encoding="utf-8")
        if any(attr in text for attr in ("#[pyclass", "#[pymethods]", "#[pyfunction]", "#[pymodule]")):
            assert rust.parent.name == "py", f"{rust.relative_to(ROOT)}: Python bindings belong in native/src/py/"


def test_the_graph_finds_a_cycle_when_there_is_one(tmp_path):
    """The check can fail: two modules that refer to each other are reported."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import importlib.machinery
        import importlib.util

        loader = importlib.machinery.SourceFileLoader("crate_modules", str(ROOT / "scripts" / "crate-modules"))
        spec = importlib.util.spec_from_loader("crate_modules", loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    finally:
        sys.path.pop(0)
    (tmp_path / "a.rs").write_text("use crate::b::B;\n")
    (tmp_path / "b.rs").write_text("pub struct B;\nfn f() { crate::a::x(); }\n")
    (tmp_path / "c.rs").write_text("use crate::{a, b};\n")
    edges = module.graph(module.modules(tmp_path))
    assert edges == {"a": {"b"}, "b": {"a"}, "c": {"a", "b"}}
    assert module.cycles(edges) == [["a", "b"]]
