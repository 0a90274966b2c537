"""Atomic file writes: a reader never sees a half-written checkpoint, NIfTI or report."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import CavlogError

#: Names :func:`atomic_path` gives its temporary files: ``.<stem>-<8 random chars><suffixes>``.
_TEMP_RE = re.compile(r"^\.[^.][^/]*-[a-z0-9_]{8}(\.(pt|nii|gz|json|jsonl|md|csv|png|npz|tmp))+$")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file keeps the final suffixes (``.nii.gz``, ``.pt``) so writers that infer the
    format from the name behave as for the real path. On error the temporary file is removed and
    any existing ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    stem = path.name.split(".")[0]
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException as err:
        written = 0
        with contextlib.suppress(OSError):
            written = tmp_path.stat().st_size
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CavlogError(
                f"{path}: no space left on device after writing {_size(written)}; the partial "
                f"file was removed and any previous {path.name} is unchanged (free at least "
                f"{_size(max(written, 1 << 20))} more and run again)") from None
        raise


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that a killed writer left in ``folder``; return them.

    Only names of the :func:`atomic_path` pattern are touched. Call it while holding the
    folder's run lock, so no live writer owns them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        if _TEMP_RE.match(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
