"""SIGINT / SIGTERM during ``cavlog train`` save a resumable checkpoint and exit with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def _wait_for_iterations(log, proc, n: int, timeout: float = 120.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"train ended early: {proc.communicate()[1]}")
        if log.is_file():
            lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
            if sum(x.get("phase") in ("warmup", "constrained") for x in lines) >= n:
                return
        time.sleep(0.1)
    raise AssertionError("no training progress")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_resumable_checkpoint(sig, code, tmp_path, make_case):
    make_case("C1", root=tmp_path / "data", lesion=False, shape=(40, 40, 16))
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "cavlog_core", "train", str(tmp_path / "data"), "--out",
            str(out), "--resolution", "32", "--width", "0.125", "--iterations", "300",
            "--warmup-iterations", "2", "--batch-size", "4", "--log-every", "1",
            "--checkpoint-every", "100000", "--split-fractions", "1,0,0", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    _wait_for_iterations(out / "log.jsonl", proc, 3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    last = [ln for seg in err.splitlines() for ln in seg.split("\r") if ln.strip()][-1]
    assert last.startswith(f"cavlog train: {signal.Signals(sig).name}: stopped after iteration")
    assert "Traceback" not in err and "--resume" in last
    from cavlog_core.checkpoint import read_checkpoint

    payload = read_checkpoint(out / "checkpoint.pt")
    done = payload["iteration"]
    assert done >= 3 and payload["extra"]["finished"] is False
    assert not list(out.glob(".checkpoint-*"))  # no temporary left behind
    # The run continues from there to its total.
    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, env=env,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = read_checkpoint(out / "checkpoint.pt")
    assert final["iteration"] == 300 and final["extra"]["finished"] is True
