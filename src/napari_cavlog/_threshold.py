"""Live thresholding of a cached anomaly map: masks and scores for any threshold (no Qt).

The anomaly widget re-thresholds the same map every time the slider moves, so everything that
does not depend on the threshold is done once here:

* the in-brain map values of ground-truth-positive and -negative voxels are sorted, so the
  confusion counts of ``mask = brain & (map >= t)`` for *any* ``t`` are two binary searches
  (``O(log n)``) and the scores are exact (they equal ``cavlog_core.metrics.binary_scores`` of the
  mask, tested);
* the mask itself is one vectorised comparison over the brain's bounding box, written into a
  preallocated ``uint8`` buffer (the labels layer's data), with ``-inf`` outside the brain so no
  separate ``&`` pass is needed.

The operating point follows the convention used throughout ``cavlog_core``: a voxel is anomalous
when it is inside the brain and its normalised map value is ``>= t``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cavlog_core.metrics import scores_from_counts

__all__ = ["PRCurve", "ThresholdCache"]


class PRCurve(NamedTuple):
    """Precision-recall pairs of the brain-restricted mask over a grid of thresholds.

    Attributes
    ----------
    thresholds, precision, recall : (T,) ndarray
        ``precision[i]``, ``recall[i]`` of ``brain & (map >= thresholds[i])``.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


class ThresholdCache:
    """Precomputed view of one anomaly map for fast thresholding and scoring.

    Parameters
    ----------
    anomaly : (D0, D1, D2) float ndarray
        Normalised anomaly map (any axis order; the plugin passes the display order ``(Z, Y, X)``).
    brain : (D0, D1, D2) bool ndarray
        Brain mask; voxels outside are never anomalous.
    gt : (D0, D1, D2) bool ndarray, optional
        Ground-truth lesion mask (e.g. ``seg > 0``). Without it :meth:`metrics` returns None.
    out, errors_out : (D0, D1, D2) uint8 ndarray, optional
        Arrays to use as :attr:`buffer` and :attr:`error_buffer` (zeroed here), e.g. the data of
        existing labels layers, so a new cache never replaces a layer's array.

    Notes
    -----
    Axis 0 is the slicing axis for :meth:`slice_metrics` (axial slices in display order).
    """

    def __init__(
        self,
        anomaly: np.ndarray,
        brain: np.ndarray,
        gt: np.ndarray | None = None,
        *,
        out: np.ndarray | None = None,
        errors_out: np.ndarray | None = None,
    ) -> None:
        anomaly = np.asarray(anomaly, dtype=np.float32)
        brain = np.asarray(brain, dtype=bool)
        if anomaly.ndim != 3 or anomaly.shape != brain.shape:
            raise ValueError(
                f"anomaly {anomaly.shape} and brain {brain.shape}: need 3D arrays of one shape"
            )
        if gt is not None:
            gt = np.asarray(gt, dtype=bool)
            if gt.shape != anomaly.shape:
                raise ValueError(f"ground truth {gt.shape} differs from the map {anomaly.shape}")
        self.shape: tuple[int, int, int] = anomaly.shape
        self.gt = gt
        self._gt_u8 = None if gt is None else gt.view(np.uint8)
        inside = anomaly[brain]
        if gt is not None:
            gt_inside = gt[brain]
            self._pos = np.sort(inside[gt_inside])
            self._neg = np.sort(inside[~gt_inside])
            self.n_gt = int(np.count_nonzero(gt))
            # Two sorted runs: the stable sort (timsort) merges them in one linear pass.
            self._inside_sorted = np.sort(np.concatenate((self._pos, self._neg)), kind="stable")
        else:
            self._inside_sorted = np.sort(inside)
            self._pos = self._neg = None
            self.n_gt = 0
        self._best: float | None = None

        # Bounding boxes: thresholding never touches voxels outside the brain's, error labels
        # nothing outside the brain's and the lesion's.
        self._box = _bounding_box(brain)
        self._error_box = self._box if gt is None else _bounding_box(brain | gt)
        #: Error labels written by :meth:`errors` (allocated on first use).
        self.error_buffer = None if errors_out is None else _zeroed(errors_out, self.shape)
        crop = anomaly[self._box]
        self._keyed = np.where(brain[self._box], crop, np.float32(-np.inf)).astype(np.float32)
        #: The mask written by :meth:`mask` (shared with the labels layer).
        self.buffer = np.zeros(self.shape, np.uint8) if out is None else _zeroed(out, self.shape)
        self._buffer_box = self.buffer[self._box].view(np.bool_)
        self.threshold: float | None = None

    # -- thresholding ---------------------------------------------------------------------
    def mask(self, threshold: float) -> np.ndarray:
        """Update and return :attr:`buffer` = ``uint8(brain & (map >= threshold))``, same shape."""
        t = _check_threshold(threshold)
        np.greater_equal(self._keyed, np.float32(t), out=self._buffer_box)
        self.threshold = t
        return self.buffer

    def n_positive(self, threshold: float) -> int:
        """Number of voxels of the mask at ``threshold`` (without building it)."""
        t = _check_threshold(threshold)
        s = self._inside_sorted
        return int(s.size - np.searchsorted(s, np.float32(t), side="left"))

    def counts(self, threshold: float) -> tuple[int, int, int] | None:
        """``(tp, fp, fn)`` of the mask at ``threshold`` against the ground truth, or None."""
        if self._pos is None:
            return None
        t = np.float32(_check_threshold(threshold))
        tp = int(self._pos.size - np.searchsorted(self._pos, t, side="left"))
        fp = int(self._neg.size - np.searchsorted(self._neg, t, side="left"))
        return tp, fp, self.n_gt - tp

    def metrics(self, threshold: float) -> dict[str, float] | None:
        """Per-scan ``dice``, ``iou``, ``precision``, ``recall`` at ``threshold`` (None: no GT)."""
        c = self.counts(threshold)
        return None if c is None else scores_from_counts(*c)

    def slice_metrics(self, index: int) -> dict[str, float] | None:
        """Scores of the current :attr:`buffer` on slice ``index`` of axis 0 (None without GT)."""
        if self.gt is None:
            return None
        pred = self.buffer[index].view(np.bool_)
        gt = self.gt[index]
        tp = int(np.count_nonzero(pred & gt))
        fp = int(np.count_nonzero(pred)) - tp
        return scores_from_counts(tp, fp, int(np.count_nonzero(gt)) - tp)

    def errors(self, index: int | None = None) -> np.ndarray:
        """Update and return :attr:`error_buffer` from the current :attr:`buffer`.

        Labels: 0 agreement, 1 false positive, 2 false negative (``uint8``, the cache's shape).
        Only the bounding box of brain and lesion is rewritten (nothing changes outside it);
        with ``index``, only that slice of axis 0 (a live preview while the threshold moves).
        """
        if self._gt_u8 is None:
            raise ValueError("no ground truth: error labels need one")
        if self.error_buffer is None:
            self.error_buffer = np.zeros(self.shape, np.uint8)
        box = self._error_box
        if index is not None:
            if not box[0].start <= index < box[0].stop:
                return self.error_buffer
            box = (slice(index, index + 1), *box[1:])
        out = self.error_buffer[box]
        gt = self._gt_u8[box]
        # pred XOR gt marks the errors; shifting by gt turns the missed lesion voxels into 2.
        np.bitwise_xor(self.buffer[box], gt, out=out)
        np.left_shift(out, gt, out=out)
        return self.error_buffer

    def best_threshold(self) -> float | None:
        """The F1-best (DICE-best) threshold over the brain voxels, or None (no lesion in it).

        Equal to ``threshold_best`` of ``cavlog_core.metrics.pixel_metrics(map, gt,
        mask=brain)`` (one candidate per distinct value, the highest among ties), from the
        sorted values already held: no new sort of the volume. Computed on first call.
        """
        if self._pos is None or self._pos.size == 0:
            return None
        if self._best is not None:
            return self._best
        s = self._inside_sorted
        last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
        candidates = s[last][::-1]  # distinct values, highest first
        tp = self._pos.size - np.searchsorted(self._pos, candidates, side="left")
        fp = self._neg.size - np.searchsorted(self._neg, candidates, side="left")
        f1 = 2.0 * tp / (tp + fp + self._pos.size)
        self._best = float(candidates[int(np.argmax(f1))])
        return self._best

    @property
    def has_lesion(self) -> bool:
        """True when the ground truth has lesion voxels inside the brain."""
        return self._pos is not None and self._pos.size > 0

    # -- explorer -----------------------------------------------------------------------
    def histogram(self, bins: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Histogram of the map in the brain: ``(counts (bins,), edges (bins + 1,))`` on [0, 1]."""
        counts, edges = np.histogram(self._inside_sorted, bins=bins, range=(0.0, 1.0))
        return counts, edges

    def pr_curve(self, n: int = 201) -> PRCurve | None:
        """Exact precision/recall at ``n`` evenly spaced thresholds in [0, 1] (None without GT).

        Thresholds whose mask is empty (precision undefined) are left out.
        """
        if self._pos is None:
            return None
        t = np.linspace(0.0, 1.0, n, dtype=np.float32)
        tp = self._pos.size - np.searchsorted(self._pos, t, side="left")
        fp = self._neg.size - np.searchsorted(self._neg, t, side="left")
        scores = scores_from_counts(tp, fp, self.n_gt - tp)
        keep = (tp + fp) > 0
        return PRCurve(t[keep].astype(np.float64), scores["precision"][keep],
                       scores["recall"][keep])


def _zeroed(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.shape != shape \
            or not array.flags.writeable:
        raise ValueError(f"output buffer must be a writable uint8 array of shape {shape}")
    array[...] = 0
    return array


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Slices of the smallest box holding every True voxel (empty slices for an empty mask)."""
    if not mask.any():
        return (slice(0, 0),) * mask.ndim
    box = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError(f"threshold={threshold!r}: must be a finite number")
    return t
