"""Layers of ``cavlog_core`` point one way: a module never imports a higher layer.

Every ``import`` statement of every module (top level *and* inside functions: a lazy import
still ties the layers together) is resolved to the ``cavlog_core`` unit it names, and the
unit's layer must not be above the importing module's. Same-layer imports are allowed only
inside one unit (``inference`` and ``training`` share a layer and must not import each other).
The order is drawn in docs/ARCHITECTURE.md, "Layers".
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "src" / "cavlog_core"

#: Layer of each top-level unit of cavlog_core (a subpackage or a module), lowest first.
#: ``synth`` sits below ``data``: the default ``max-histogram`` reference of
#: ``data/preprocess.py`` is a slice of a healthy synthetic subject. ``device`` reads the
#: precision choices from ``config``.
LAYERS: dict[str, int] = {
    "errors": 0,
    "_atomic": 1, "_json": 1, "_lock": 1, "_progress": 1, "config": 1,
    "device": 2, "synth": 2,
    "data": 3, "metrics": 3, "lesions": 3,
    "models": 4, "maps": 4,
    "methods": 5,
    "checkpoint": 6,
    "inference": 7, "training": 7,
    "evaluate": 8, "calibrate": 8, "benchmark": 9,
    "cli": 10, "__main__": 11, "__init__": 11,
}

#: Modules of ``cavlog_core.synth``, lowest first: writer -> subject -> lesions / anatomy -> fields.
SYNTH_LAYERS: dict[str, int] = {
    "fields": 0, "anatomy": 1, "lesions": 1, "subject": 2, "writer": 3, "__init__": 4,
}


def _unit(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _imported_units(path: Path, package: list[str] | None = None) -> set[str]:
    """The cavlog_core units ``path`` imports; ``package``: its folder under cavlog_core."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if package is None:
        package = list(path.relative_to(ROOT).parent.parts)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "cavlog_core" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 \
                    else package
                target = [*base, *(node.module.split(".") if node.module else [])]
                names = target or [alias.name for alias in node.names]
                if not target:  # "from . import x" at the top of cavlog_core
                    found.update(n for n in names if n in LAYERS)
                else:
                    found.add(target[0])
            elif node.module and node.module.split(".")[0] == "cavlog_core":
                parts = node.module.split(".")
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(alias.name for alias in node.names)
    return found


MODULES = sorted(p for p in ROOT.rglob("*.py"))


def test_every_unit_has_a_layer():
    assert {_unit(p) for p in MODULES} <= set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    unit = _unit(path)
    if unit in ("__init__", "__main__"):
        return  # the package's public face re-exports every layer
    for other in _imported_units(path) - {unit}:
        if other == "__version__":
            continue
        assert other in LAYERS, f"{path.name}: imports unknown unit {other!r}"
        assert LAYERS[other] < LAYERS[unit], (
            f"{path.relative_to(ROOT)} ({unit}, layer {LAYERS[unit]}) imports {other} "
            f"(layer {LAYERS[other]}): a layer may only import lower ones")


def test_the_check_catches_an_upward_import(tmp_path):
    fake = tmp_path / "io.py"  # data/io.py with a lazy import of training inside a function
    fake.write_text((ROOT / "data" / "io.py").read_text(encoding="utf-8")
                    + "\n\ndef _oops():\n    from ..training import fit\n")
    units = _imported_units(fake, ["data"])
    assert "training" in units and LAYERS["training"] > LAYERS["data"]
    assert "training" not in _imported_units(ROOT / "data" / "io.py")


def test_synth_modules_point_one_way():
    folder = ROOT / "synth"
    assert {p.stem for p in folder.glob("*.py")} == set(SYNTH_LAYERS)
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module, f"{path.name}: 'from . import' inside synth"
                other = node.module.split(".")[0]
                assert SYNTH_LAYERS[other] < SYNTH_LAYERS[path.stem], (
                    f"synth/{path.name} imports synth/{other}.py: writer -> subject -> "
                    f"lesions / anatomy -> fields")


def test_no_synth_module_left_in_data():
    assert not (ROOT / "data" / "synth.py").exists()
