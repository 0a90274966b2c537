"""Patient-level splits and the paper's evaluation filter.

Silva-Rodríguez, Naranjo & Dolz (BMVC 2021) split BraTS'19's 335 patients into 271 training,
32 validation and 32 test scans, train on lesion-free slices only, and drop evaluation scans
whose lesion fraction over the selected slices is below 0.1 %.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from ..config import TrainConfig
from ..errors import CavlogError
from .io import Case

__all__ = [
    "keep_for_evaluation",
    "lesion_fraction",
    "lesion_free_slices",
    "split_cases",
    "split_counts",
]

DEFAULT_FRACTIONS: tuple[float, float, float] = TrainConfig.__dataclass_fields__[
    "split_fractions"].default  # type: ignore[assignment]
SPLITS = ("train", "val", "test")


def split_counts(n: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> tuple[int, int, int]:
    """Sizes of the train/val/test splits of ``n`` patients (largest-remainder rounding).

    Each split gets ``floor(n * f)``; the patients left over go one each to the splits with
    the largest fractional parts (ties: train, then val, then test). With the default
    fractions, 335 patients give the paper's 271/32/32.
    """
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise CavlogError(f"fractions={fractions}: need three non-negative fractions summing to 1")
    quotas = np.asarray(fr) * n
    counts = np.floor(quotas + 1e-9).astype(int)
    left = n - int(counts.sum())
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[:left]] += 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def split_cases(case_ids: Iterable[str], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                seed: int = 0) -> dict[str, list[str]]:
    """Deterministic patient-level train/val/test split.

    Parameters
    ----------
    case_ids : iterable of str
        Patient identifiers (unique).
    fractions : (train, val, test)
        Non-negative, summing to 1; sizes from :func:`split_counts`.
    seed : int
        The ids are sorted, then shuffled with ``numpy.random.default_rng(seed)``, so the split
        depends only on the set of ids and the seed, never on the listing order.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}``, each list sorted.
    """
    ids = [str(c) for c in case_ids]
    unique = sorted(set(ids))
    if len(unique) != len(ids):
        dup = sorted(c for c, k in Counter(ids).items() if k > 1)
        raise CavlogError(f"split_cases: duplicate case ids {dup[:5]}")
    n_train, n_val, _ = split_counts(len(unique), fractions)
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    parts = (shuffled[:n_train], shuffled[n_train:n_train + n_val], shuffled[n_train + n_val:])
    return {name: sorted(part) for name, part in zip(SPLITS, parts)}


def lesion_fraction(case: Case, z: np.ndarray | None = None) -> float:
    """Fraction of brain voxels that are lesion (``seg > 0``) over the axial slices ``z``.

    Parameters
    ----------
    case : Case
        Must have ground truth.
    z : (N,) int array, optional
        Axial slices (default: all).

    Returns
    -------
    float
        In [0, 1]; 0 when the slices hold no brain.
    """
    if case.seg is None:
        raise CavlogError(f"{case.case_id}: no ground truth, the lesion fraction is unknown")
    seg = case.seg if z is None else case.seg[:, :, np.asarray(z, dtype=np.int64)]
    brain = case.brain_mask if z is None else case.brain_mask[:, :, np.asarray(z, dtype=np.int64)]
    n_brain = int(np.count_nonzero(brain))
    return float(np.count_nonzero((seg > 0) & brain)) / n_brain if n_brain else 0.0


def lesion_free_slices(case: Case) -> np.ndarray:
    """Return the ``(Z,)`` bool mask of axial slices holding brain and no lesion label.

    Every brain slice of a scan without ground truth (taken as healthy).
    """
    clean = np.asarray(np.asarray(case.brain_mask, dtype=bool).any(axis=(0, 1)))
    if case.seg is not None:
        clean &= ~(np.asarray(case.seg) > 0).any(axis=(0, 1))
    return clean


def keep_for_evaluation(case: Case, z: np.ndarray | None = None, *,
                        min_lesion_fraction: float = 0.001) -> bool:
    """Whether a scan enters the evaluation (the paper keeps scans with >= 0.1 % lesion).

    Scans without ground truth cannot be evaluated and return False.
    """
    if case.seg is None:
        return False
    return lesion_fraction(case, z) >= min_lesion_fraction
