"""Slice arrays for training and evaluation, with an on-disk cache of preprocessed slices.

All slices of all cases live in a few contiguous arrays (:class:`SliceArrays`); a training loop
draws batches by indexing them with a tensor of indices, never sample by sample. Each case's
preprocessed slices are cached in ``<cache_dir>/<case_id>-<key>.npz`` where the key hashes the
case's file paths, sizes and modification times together with the preprocessing settings, so a
second run reads no NIfTI file and any change to the data or the settings recomputes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from .._atomic import atomic_path
from ..config import PreprocessConfig
from ..errors import CavlogError
from .io import Case, CaseFiles, find_cases, load_case
from .preprocess import prepare_slices

__all__ = [
    "BuildProgress",
    "SliceArrays",
    "build_slice_arrays",
    "cache_key",
    "default_cache_dir",
    "healthy",
    "iter_slice_arrays",
]

CACHE_VERSION = 2  # bump when the preprocessing code changes what it produces


@dataclass(frozen=True, eq=False)
class SliceArrays:
    """Preprocessed axial slices of several cases, concatenated.

    Attributes
    ----------
    images : (N, 1, R, R) float16 (or float32) ndarray
        Normalised FLAIR in [0, 1]; float16 halves the memory of large datasets.
    brain : (N, 1, R, R) bool ndarray
    lesion : (N, 1, R, R) bool ndarray or None
        None when no case has ground truth; cases without it get all-False maps otherwise.
    case_index : (N,) int64 ndarray
        Index into ``case_ids`` of each slice's case.
    z : (N,) int64 ndarray
        Axial index of each slice in its (canonical) volume.
    case_ids : tuple of str
    lesion_voxels : (N,) int64 ndarray or None
        Lesion voxels of each slice at the volume's resolution (0 for cases without ground
        truth); :func:`healthy` uses it, since a tiny lesion can vanish in the resize.
    """

    images: np.ndarray
    brain: np.ndarray
    lesion: np.ndarray | None
    case_index: np.ndarray
    z: np.ndarray
    case_ids: tuple[str, ...]
    lesion_voxels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.z.shape[0])

    @property
    def resolution(self) -> int:
        """Side R of the ``(N, 1, R, R)`` slices."""
        return int(self.images.shape[-1])

    def subset(self, index: np.ndarray | Sequence[int] | slice) -> SliceArrays:
        """Return the slices at ``index`` (integer indices, a boolean mask or a slice)."""
        return SliceArrays(
            images=self.images[index], brain=self.brain[index],
            lesion=None if self.lesion is None else self.lesion[index],
            case_index=self.case_index[index], z=self.z[index], case_ids=self.case_ids,
            lesion_voxels=None if self.lesion_voxels is None else self.lesion_voxels[index])

    def for_cases(self, case_ids: Iterable[str]) -> SliceArrays:
        """Return the slices of the given cases (e.g. one split)."""
        wanted = set(case_ids)
        keep = np.array([c in wanted for c in self.case_ids], dtype=bool)
        return self.subset(keep[self.case_index] if len(self.case_ids) else slice(0, 0))


def healthy(arrays: SliceArrays) -> SliceArrays:
    """Only the slices with zero lesion pixels (the paper's training set).

    Without any ground truth (``lesion is None``) every slice is assumed lesion-free.
    """
    if arrays.lesion_voxels is not None:
        return arrays.subset(arrays.lesion_voxels == 0)
    if arrays.lesion is None:
        return arrays
    # numpy types ``any(axis=...)`` as possibly a scalar; on a 2-D array it is an (N,) mask.
    return arrays.subset(cast(np.ndarray, ~arrays.lesion.reshape(len(arrays), -1).any(axis=1)))


@dataclass(frozen=True)
class BuildProgress:
    """Progress of :func:`iter_slice_arrays`: ``done`` of ``total`` cases handled."""

    done: int
    total: int
    case_id: str
    from_cache: bool
    n_slices: int

    @property
    def stage(self) -> str:
        """``"cached"`` (read from the slice cache) or ``"prepare"`` (computed)."""
        return "cached" if self.from_cache else "prepare"


def default_cache_dir(case: CaseFiles) -> Path:
    """Return the default slice-cache folder of ``case``.

    ``<dataset root>/.cavlog_cache`` when writable, else ``$XDG_CACHE_HOME/cavlog``
    (``~/.cache/cavlog``).
    """
    root = case.path.parent
    if os.access(root, os.W_OK):
        return root / ".cavlog_cache"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cavlog"


def cache_key(case: CaseFiles, cfg: PreprocessConfig) -> str:
    """Hash of the case files' (path, size, mtime) and the settings that change the slices."""
    files = []
    for p in case.files():
        st = p.stat()
        files.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    ref = cfg.histogram_reference
    ref_stat = None
    if ref is not None and Path(ref).expanduser().exists():
        st = Path(ref).expanduser().stat()
        ref_stat = [str(Path(ref).expanduser().resolve()), st.st_size, st.st_mtime_ns]
    payload = {
        "version": CACHE_VERSION, "case_id": case.case_id, "files": files,
        "resolution": cfg.resolution, "slices": cfg.slices,
        "min_brain_fraction": cfg.min_brain_fraction, "percentiles": list(cfg.percentiles),
        "histogram_reference": ref_stat or ref,
    }
    if cfg.normalization != "percentile":  # keeps the keys of existing caches valid
        payload["normalization"] = cfg.normalization
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _compute(case: Case, cfg: PreprocessConfig) -> dict[str, np.ndarray]:
    batch = prepare_slices(case, cfg)
    out = {"images": batch.images.astype(np.float16), "brain": batch.brain, "z": batch.z}
    if batch.lesion is not None:
        assert batch.lesion_voxels is not None  # prepare_slices sets both or neither
        out["lesion"] = batch.lesion
        out["lesion_voxels"] = batch.lesion_voxels
    return out


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        # Truncated by a killed run, or damaged: rebuild it rather than block every training.
        warnings.warn(f"slice cache {path}: unreadable ({type(err).__name__}), rebuilding it",
                      RuntimeWarning, stacklevel=2)
        return None
    if not {"images", "brain", "z"} <= set(out) or ("lesion" in out) != ("lesion_voxels" in out):
        warnings.warn(f"slice cache {path}: incomplete, rebuilding it", RuntimeWarning,
                      stacklevel=2)
        return None
    return out


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with contextlib.suppress(OSError):  # a read-only or full disk only costs speed
        with atomic_path(path) as tmp:
            # mypy matches **arrays against the ``allow_pickle: bool`` keyword too; the keys are
            # array names only.
            np.savez(tmp, **arrays)  # type: ignore[arg-type]


def _as_case_list(cases: str | Path | Iterable[CaseFiles | Case | str | Path]
                  ) -> list[CaseFiles | Case]:
    if isinstance(cases, (str, Path)):
        return list(find_cases(cases))
    out: list[CaseFiles | Case] = []
    for c in cases:
        if isinstance(c, (CaseFiles, Case)):
            out.append(c)
        else:
            found = find_cases(c)
            if len(found) != 1:
                raise CavlogError(f"{c}: holds {len(found)} cases; give case folders or files")
            out.append(found[0])
    return out


def iter_slice_arrays(
    cases: str | Path | Iterable[CaseFiles | Case | str | Path],
    cfg: PreprocessConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    healthy_only: bool = False,
    use_cache: bool = True,
) -> Generator[BuildProgress, None, SliceArrays]:
    """Preprocess cases into :class:`SliceArrays`, yielding one :class:`BuildProgress` per case.

    Parameters
    ----------
    cases : dataset root, or iterable of CaseFiles / Case / case paths
        In-memory :class:`Case` objects are processed but never cached.
    cfg : PreprocessConfig, optional
        Resolution, slice selection (``cfg.slices``), normalisation.
    cache_dir : str or Path, optional
        Where per-case ``.npz`` caches go; default :func:`default_cache_dir`.
    healthy_only : bool
        Keep only slices without lesion pixels (the paper's training rule).
    use_cache : bool
        False reads every NIfTI again and writes no cache.

    Returns
    -------
    SliceArrays
        Via ``StopIteration.value``; :func:`build_slice_arrays` drains the generator.
    """
    cfg = cfg or PreprocessConfig()
    items = _as_case_list(cases)
    if not items:
        raise CavlogError("build_slice_arrays: no cases given")
    ids = [c.case_id for c in items]
    if len(set(ids)) != len(ids):
        raise CavlogError(f"build_slice_arrays: duplicate case ids among {len(ids)} cases")
    parts: list[dict[str, np.ndarray]] = []
    for i, item in enumerate(items):
        cached = None
        cache_file = None
        if isinstance(item, CaseFiles) and use_cache:
            folder = Path(cache_dir).expanduser() if cache_dir is not None \
                else default_cache_dir(item)
            safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", item.case_id)
            cache_file = folder / f"{safe_id}-{cache_key(item, cfg)}.npz"
            cached = _read_cache(cache_file)
        if cached is None:
            case = item if isinstance(item, Case) else load_case(item)
            cached = _compute(case, cfg)
            del case
            if cache_file is not None:
                _write_cache(cache_file, cached)
            from_cache = False
        else:
            from_cache = True
        parts.append(cached)
        yield BuildProgress(i + 1, len(items), item.case_id, from_cache, int(cached["z"].size))

    lesion = voxels = None
    if any("lesion" in p for p in parts):
        lesion = np.concatenate([p["lesion"] if "lesion" in p else np.zeros_like(p["brain"])
                                 for p in parts])
        voxels = np.concatenate([p["lesion_voxels"] if "lesion" in p
                                 else np.zeros(p["z"].size, np.int64) for p in parts])
    arrays = SliceArrays(
        images=np.concatenate([p["images"] for p in parts]),
        brain=np.concatenate([p["brain"] for p in parts]),
        lesion=lesion,
        case_index=np.concatenate([np.full(p["z"].size, i, dtype=np.int64)
                                   for i, p in enumerate(parts)]),
        z=np.concatenate([p["z"].astype(np.int64) for p in parts]),
        case_ids=tuple(ids),
        lesion_voxels=voxels,
    )
    if healthy_only:
        arrays = healthy(arrays)
        if len(arrays) == 0:
            raise CavlogError(f"no lesion-free slices among the {len(ids)} case(s) with "
                              f"slices={cfg.slices!r}; try slices='brain' or add healthy scans")
    return arrays


def build_slice_arrays(
    cases: str | Path | Iterable[CaseFiles | Case | str | Path],
    cfg: PreprocessConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    healthy_only: bool = False,
    use_cache: bool = True,
) -> SliceArrays:
    """Drain :func:`iter_slice_arrays` (same parameters) and return the :class:`SliceArrays`."""
    gen = iter_slice_arrays(cases, cfg, cache_dir=cache_dir, healthy_only=healthy_only,
                            use_cache=use_cache)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
