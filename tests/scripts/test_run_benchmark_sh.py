"""scripts/run_benchmark.sh, the one command behind docs/benchmark.md, on a tiny dataset.

The script is bash glue around `cavlog benchmark`: these tests run it as a user would (the quick
mode with two one-thread workers, then again to resume, with a METHODS subset, then the
ablations mode's N slices x z table) with every size knob turned down, and check its refusals
(unknown mode, data of another anatomy version).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cavlog_core.synth import ANATOMY_VERSION

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "run_benchmark.sh"
TINY = {"SUBJECTS": "10", "SHAPE": "48,48,40", "RES": "64", "WIDTH": "0.125", "ITERS": "2",
        "WARMUP": "1", "SEEDS": "1", "THREADS": "1"}

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **TINY, **env}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=SCRIPT.parents[1], env=full,
                          capture_output=True, text=True, timeout=300)


def _table_rows(summary: Path) -> list[str]:
    return [line.split("|")[1].strip() for line in summary.read_text().splitlines()
            if line.startswith("| ") and not line.startswith(("| Method", "| Setting"))]


@pytest.mark.slow
def test_quick_mode_with_two_workers_then_resumes(tmp_path):
    work = tmp_path / "work"
    first = _run("quick", str(work), CPU_WORKERS="2")
    assert first.returncode == 0, first.stderr[-2000:]

    data = work / "synth10-glioma"
    assert (data / ".complete").is_file()
    assert json.loads((data / "dataset.json").read_text()) == {
        "lesions": "glioma", "subjects": 10, "anatomy_version": ANATOMY_VERSION}
    assert len(list(data.glob("SYN_*"))) == 10
    quick = work / "quick"  # RES=64 keeps the plain quick folder
    assert _table_rows(quick / "summary.md") == ["flair-threshold", "ae", "vae", "constrained"]
    assert _table_rows(quick / "summary_cam-weights.md") == [
        "cam-weights-gradient", "cam-weights-gradient-running-bn", "cam-weights-gradient-frozen-bn",
        "cam-weights-mean"]
    # Both workers ran; the cam-weights ablation reused the constrained run (same settings).
    logs = sorted(work.glob("cpu-worker*.log"))
    assert [p.name for p in logs] == ["cpu-worker1.log", "cpu-worker2.log"]
    text = "".join(p.read_text() for p in logs)
    assert "cam-weights-gradient seed0: skipped" in text
    # The cache-filling pass uses a throw-away folder, never the quick folder's summary.
    assert not list(work.glob(".cache-fill*")) and (work / "cache").is_dir()
    # Each worker runs one thread: the mode's --threads is replaced, not repeated.
    command = next(line for line in (quick / "summary.md").read_text().splitlines()
                   if line.startswith("- Command:"))
    assert command.count("--threads") == 1 and "--threads 1" in command

    results = sorted(quick.glob("*/seed0/result.json"))
    stamps = {p: p.stat().st_mtime_ns for p in results}
    assert len(results) == 7  # 4 Table 1 methods + 3 cam-weights variants

    again = _run("quick", str(work))  # resumable: nothing is trained twice
    assert again.returncode == 0, again.stderr[-2000:]
    assert "4 runs (4 skipped)" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in results} == stamps
    # METHODS picks the Table 1 rows (in its order), from the finished runs.
    some = _run("quick", str(work), METHODS="vae,flair-threshold")
    assert some.returncode == 0, some.stderr[-2000:]
    assert _table_rows(quick / "summary.md") == ["vae", "flair-threshold"]
    assert {p: p.stat().st_mtime_ns for p in results} == stamps

    # The ablations mode's N slices x z table: the latent ablation per N, each in its own folder
    # next to the quick one (on the same data and slice cache).
    nbz = _run("ablations", str(work), ABLATIONS="n-by-z", CPU_WORKERS="2")
    assert nbz.returncode == 0, nbz.stderr[-2000:]
    for n in (1, 30):
        summary = work / f"quick-slices{n}" / "summary_latent.md"
        assert _table_rows(summary) == ["latent-16", "latent-32", "latent-64", "latent-128"]
        assert f"(central:{n}) of the train cases" in summary.read_text()
    assert not (quick / "summary_latent.md").exists()  # N = 10 is the plain latent ablation


def test_unknown_mode_prints_usage(tmp_path):
    res = _run("bogus", str(tmp_path / "w"))
    assert res.returncode == 2
    assert "usage:" in res.stderr and "quick" in res.stderr
    assert not (tmp_path / "w").exists()


def test_refuses_data_of_another_anatomy_version(tmp_path):
    work = tmp_path / "w"
    data = work / "synth10-glioma"
    data.mkdir(parents=True)
    (data / "dataset.json").write_text(json.dumps({"lesions": "glioma", "subjects": 10,
                                                   "anatomy_version": ANATOMY_VERSION - 1}))
    (data / ".complete").touch()
    res = _run("quick", str(work))
    assert res.returncode != 0
    assert f"anatomy version {ANATOMY_VERSION - 1}" in res.stderr
    assert "use another WORK" in res.stderr
    assert not (work / "quick").exists()
