"""Size and complexity of the source tree, at the working tree or at a git revision.

    python scripts/code_stats.py                # the working tree
    python scripts/code_stats.py --rev ee3588f  # an earlier commit (read with git archive)

Prints the number of modules and lines, the five largest files and functions (lines, docstrings
included) and the functions ruff's mccabe rule (C901) finds above a cyclomatic complexity of 10.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tree(rev: str | None, tmp: Path) -> Path:
    if rev is None:
        return ROOT / "src"
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "src"


def _functions(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.end_lineno - node.lineno + 1, f"{path.name}:{node.name}")
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno]


def _complex(src: Path) -> list[str]:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    out = subprocess.run([ruff, "check", "--isolated", "--select", "C901", "--config",
                          "lint.mccabe.max-complexity=10", "--output-format", "concise", str(src)],
                         capture_output=True, text=True).stdout
    return [line.split(": C901 ")[-1] for line in out.splitlines() if " C901 " in line]


def main() -> int:
    """Print the statistics; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default=None, help="git revision (default: the working tree)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = _tree(args.rev, Path(tmp))
        files = sorted(src.rglob("*.py"))
        sizes = sorted(((len(f.read_text(encoding="utf-8").splitlines()),
                         str(f.relative_to(src))) for f in files), reverse=True)
        funcs = sorted((fn for f in files for fn in _functions(f)), reverse=True)
        complex_ = _complex(src)
    print(f"{args.rev or 'working tree'}: {len(files)} modules, {sum(n for n, _ in sizes)} lines")
    print("largest files:     " + ", ".join(f"{name} {n}" for n, name in sizes[:5]))
    print("largest functions: " + ", ".join(f"{name} {n}" for n, name in funcs[:5]))
    print(f"complexity > 10:   {len(complex_)}")
    for item in complex_:
        print(f"  {item}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
