"""Folder locks under contention: at most one holder at a time, no leftovers."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

from cavlog_core._lock import FolderBusy, folder_lock


def _contend(folder: str, log: str, start: float, rounds: int) -> None:
    while time.time() < start:  # every process tries at the same instant
        pass
    held = 0
    while held < rounds:
        try:
            with folder_lock(folder, "running.lock"):
                with open(log, "a") as f:
                    f.write(f"in {os.getpid()}\n")
                time.sleep(0.01)
                with open(log, "a") as f:
                    f.write(f"out {os.getpid()}\n")
            held += 1
        except FolderBusy:
            time.sleep(0.001)


def test_folder_lock_is_exclusive_between_processes(tmp_path):
    # A lock read while still empty used to look stale and be taken over by a second process.
    log = tmp_path / "log.txt"
    ctx = mp.get_context("spawn")
    start = time.time() + 3.0
    procs = [ctx.Process(target=_contend, args=(str(tmp_path / "run"), str(log), start, 5))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = log.read_text().split()
    events = list(zip(lines[::2], lines[1::2], strict=True))
    assert len(events) == 4 * 5 * 2
    # Strictly alternating in/out of the same process: never two holders at once.
    for (kind_a, pid_a), (kind_b, pid_b) in zip(events[::2], events[1::2], strict=True):
        assert (kind_a, kind_b) == ("in", "out") and pid_a == pid_b
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # no lock, no temporary


def test_lock_file_holds_the_pid_from_the_start(tmp_path):
    with folder_lock(tmp_path, "x.lock") as path:
        assert path.read_text() == str(os.getpid())
        assert [p.name for p in Path(tmp_path).iterdir()] == ["x.lock"]
