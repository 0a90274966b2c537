"""napari reader: BraTS case folders and single NIfTI FLAIR files (no Qt).

A case folder is recognised by its FLAIR file: BraTS 2019-2021 ``<ID>_flair.nii[.gz]`` or BraTS
2023+ ``<ID>-t2f.nii[.gz]``; its ground truth (``_seg`` / ``-seg``) becomes a labels layer. A
single ``.nii``/``.nii.gz`` file opens as a FLAIR image. Loading, reorientation to canonical RAS
and validation are ``cavlog_core.data.io.load_case``; the display order is
:mod:`napari_cavlog._orient`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._layers import LayerData, case_layer_data

__all__ = [
    "BACKGROUND_VOXELS",
    "READER_PATTERNS",
    "get_reader",
    "load_layer_data",
    "prefer_this_reader",
    "read_cases",
]

#: Scans larger than this (voxels, all paths together) are read in a worker thread when a
#: viewer is open (about 1 s of work on 2 cores for 20 M voxels, e.g. 2 BraTS volumes at once).
BACKGROUND_VOXELS = 20_000_000

_NIFTI = (".nii", ".nii.gz")
_FLAIR_ENDINGS = tuple(f"{tag}{ext}" for tag in ("_flair", "-t2f") for ext in _NIFTI)


#: Paths napari should open with this plugin without asking (napari's ``extension2reader``
#: preference; a folder is matched with a trailing separator). Without them napari offers its
#: builtin reader too, which cannot read NIfTI and fails with an imageio error.
READER_PATTERNS = (f"*BraTS*{os.sep}", "*.nii.gz", "*.nii")

_PLUGIN = "napari-cavlog"


def prefer_this_reader(settings: Any = None) -> list[str]:
    """Make this plugin napari's reader for BraTS folders and NIfTI files; returns the patterns
    added. A pattern the user already assigned to some reader is left as it is.

    Called when a widget of this plugin opens (napari has no hook before the first File > Open).
    """
    if settings is None:
        try:
            from napari.settings import get_settings
        except ImportError:
            return []
        settings = get_settings()
    current = dict(settings.plugins.extension2reader)
    added = [pattern for pattern in READER_PATTERNS if pattern not in current]
    if added:
        settings.plugins.extension2reader = {**current, **dict.fromkeys(added, _PLUGIN)}
    return added


def _handles(path: str | Path) -> bool:
    """NIfTI files, and folders holding NIfTI files directly or one level down (a case folder
    or a dataset root). A folder whose files cannot be used is still claimed, so that the user
    gets this plugin's one-line reason instead of napari's generic refusal."""
    p = Path(path)
    if p.is_dir():
        try:
            entries = list(p.iterdir())
            if any(f.is_file() and f.name.lower().endswith(_NIFTI) for f in entries):
                return True
            return any(f.is_file() and f.name.lower().endswith(_FLAIR_ENDINGS)
                       for d in entries if d.is_dir() and not d.name.startswith(".")
                       for f in d.iterdir())
        except OSError:
            return False
    return p.is_file() and p.name.lower().endswith(_NIFTI)


def get_reader(path: str | Path | Sequence[str | Path]) -> Callable[..., list[Any]] | None:
    """npe2 reader hook: :func:`read_cases` for case folders and NIfTI files, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(_handles(p) for p in paths):
        return None
    return read_cases


def load_layer_data(paths: Sequence[str | Path]) -> tuple[list[LayerData], list[str]]:
    """Layer data of every case in ``paths`` (a dataset root opens every case), and one message
    per path that could not be read (expected failures only: bad files, the system's refusals).

    Qt-free and safe to call from a worker thread.
    """
    from cavlog_core.data.io import find_cases, load_case
    from cavlog_core.errors import CavlogError

    layers: list[LayerData] = []
    problems: list[str] = []
    for p in paths:
        try:
            for files in find_cases(Path(p)):
                layers.extend(case_layer_data(load_case(files)))
        except (CavlogError, OSError, MemoryError) as err:
            problems.append(str(err) if isinstance(err, CavlogError) else
                            f"{p}: {getattr(err, 'strerror', None) or type(err).__name__}")
    return layers, problems


def read_cases(path: str | Path | Sequence[str | Path]) -> list[LayerData] | list[tuple[None]]:
    """Read case folders / NIfTI files into FLAIR image (+ ground-truth labels) layer data.

    An expected failure (corrupt file, unreadable folder, ...) becomes a one-line napari error
    notification and no layer, instead of a traceback dialog. Large scans are read in a worker
    thread when a viewer is open (their layers are added when read).
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    viewer = _current_viewer()
    if viewer is not None and _claimed_voxels(paths) > BACKGROUND_VOXELS:
        from ._qt.background import read_in_background

        read_in_background(viewer, [Path(p) for p in paths],
                           label=", ".join(Path(p).name for p in paths))
        return [(None,)]  # the layers arrive when the worker is done
    layers, problems = load_layer_data(paths)
    if problems:
        from napari.utils.notifications import show_error

        for message in problems:
            show_error(f"napari-cavlog: {message}")
    return layers or [(None,)]


def _current_viewer() -> Any:
    """The open napari viewer, or None (headless use, tests of the plain reader)."""
    import sys

    if "napari" not in sys.modules:
        return None
    try:
        from napari import current_viewer

        return current_viewer()
    except Exception:
        return None


def _claimed_voxels(paths: Sequence[str | Path]) -> int:
    """Voxels the FLAIR headers of ``paths`` claim (0 when unknown: then read synchronously)."""
    import nibabel as nib
    import numpy as np

    from cavlog_core.data.io import find_cases

    total = 0
    for p in paths:
        try:
            for files in find_cases(Path(p)):
                total += int(np.prod(nib.load(files.flair).shape[:3], dtype=np.int64))
        except Exception:
            return 0
    return total
