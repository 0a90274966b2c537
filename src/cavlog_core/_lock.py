"""One run per output folder: a lock file holding the owner's process id, stale locks taken over.

Two ``cavlog train`` (or ``finetune``, ``predict``, ``evaluate``) into one ``--out`` would mix
their checkpoints, configs and logs. Each run holds ``OUT/<name>`` while it works; a second
process refuses with one line naming the owner, and a lock whose process is gone (SIGKILL, power
loss) is detected by its PID and taken over.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import CavlogError

__all__ = ["RUN_LOCK_NAME", "FolderBusy", "folder_lock", "pid_alive"]

#: Lock file of train / finetune / predict runs (evaluate locks ``.<report name>.lock``).
RUN_LOCK_NAME = ".cavlog-run.lock"


class FolderBusy(CavlogError):
    """Another live process is writing into this folder right now."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (ours included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def folder_lock(folder: str | Path, name: str = RUN_LOCK_NAME, *, what: str = "a run",
                allow_same_process: bool = False,
                busy: Callable[[int], CavlogError] | None = None) -> Iterator[Path]:
    """Hold ``folder/name`` (created with this process id) for the ``with`` block.

    Parameters
    ----------
    folder : path
        Created if needed.
    name : str
        Lock file name.
    what : str
        Described in the error, e.g. ``"cavlog train"``.
    allow_same_process : bool
        Treat a lock held by this very process as stale (the benchmark re-enters its runs).
    busy : callable, optional
        ``busy(owner_pid)`` builds the error raised when a live process holds the lock.

    Raises
    ------
    FolderBusy
        When a live process holds the lock (and ``busy`` is not given): ``"<folder>: <what> is
        already writing here (process <pid>, lock <file>)"``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    for _ in range(3):
        if _create_with_pid(path):
            try:
                yield path
            finally:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            return
        owner = _owner(path)
        mine = owner == os.getpid()
        if owner and pid_alive(owner) and not (mine and allow_same_process):
            if busy is not None:
                raise busy(owner) from None
            raise FolderBusy(f"{folder}: {what} is already writing here (process {owner}, "
                             f"lock {path.name}); wait for it or choose another folder")
        # Stale (its process is gone). Remove it only if it still names that owner: another
        # process may have taken it over since we read it.
        if _owner(path) == owner:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    raise FolderBusy(f"{folder}: could not take the lock {name}")


def _create_with_pid(path: Path) -> bool:
    """Create ``path`` holding this process id, atomically; False if it exists.

    The id is written to a private file first and hard-linked into place, so no other process
    can ever read the lock empty (an empty lock would look stale and be taken over). Where the
    file system has no hard links, an exclusive create is used instead.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(str(os.getpid()))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some network or FAT file systems)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _owner(path: Path) -> int:
    """Read the process id in a lock file: 0 when it is gone, empty or unreadable."""
    try:
        return int(path.read_text().strip() or "0")
    except (OSError, ValueError):
        return 0
