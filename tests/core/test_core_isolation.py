"""cavlog_core must stay usable without napari or Qt (headless servers, CLI, notebooks)."""

import subprocess
import sys

FORBIDDEN = (
    "napari",
    "magicgui",
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "superqt",
    "vispy",
)


def test_core_imports_no_gui_module():
    code = (
        "import importlib, pkgutil, sys, cavlog_core\n"
        "for m in pkgutil.walk_packages(cavlog_core.__path__, 'cavlog_core.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"cavlog_core imported GUI modules: {out.stdout.strip()}"
