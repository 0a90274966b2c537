"""Pixel-level segmentation metrics, pooled over all pixels of a test set.

Silva-Rodríguez, Naranjo & Dolz (BMVC 2021), Sec. 4.1 report AUROC, AUPRC and DICE pooled over the
pixels of all test slices; the paper's code computes AUPRC as ``sklearn.metrics.auc(recall,
precision)`` (trapezoids on the PR curve) and DICE at the operating point that maximises F1 on the
PR curve (which uses the ground truth). This module reimplements those definitions with numpy only
(scikit-learn is a test dependency) and adds ``average_precision`` (scikit-learn's step sum).

Two ways to build the curves, both returning :class:`ScoreCurves`:

* **exact** (:func:`exact_curves`): one threshold per distinct score, ties handled as in
  scikit-learn (``_binary_clf_curve``); used automatically up to :data:`EXACT_LIMIT` pixels.
* **binned** (:class:`ScoreHistogram`): streaming histogram of scores in [0, 1] (exact zeros and
  exact ones get their own bins, the rest ``bins`` equal bins, default 2^20) built chunk by chunk
  with ``np.bincount``; thresholds are restricted to bin edges. Its curve points are *exact* points
  of the true curve, so the error only comes from the unresolved order inside a bin, and is bounded
  by :attr:`ScoreCurves.error_bound`, computed from the histogram itself:

  - AUROC: ``0.5 * Σ_b pos_b·neg_b / (P·N)`` (half of each bin's box in ROC space);
  - AUPRC and AP: ``Σ_b pos_b/P · (p_max,b − p_min,b)``, the precision range reachable inside bin b;
  - best DICE/IoU: the best upper bound over bins minus the binned optimum.

  For maps of continuous scores this is far below 1e-4 (tests check it and the actual error against
  the exact path); when many pixels share a narrow score range the bound says so, and a warning
  suggests ``exact=True``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import CavlogError

__all__ = [
    "DEFAULT_BINS",
    "EXACT_LIMIT",
    "ScoreCurves",
    "ScoreHistogram",
    "binary_scores",
    "counts_at_thresholds",
    "dice",
    "exact_curves",
    "iou",
    "pixel_metrics",
    "precision",
    "recall",
    "scores_from_counts",
]

#: Inputs with at most this many (masked) pixels use the exact, sorting-based curves by default.
EXACT_LIMIT = 1 << 22
#: Equal-width score bins of the streaming path (a power of two so ``score * bins`` is exact).
DEFAULT_BINS = 1 << 20
#: Tolerance above which the binned path warns that its error bound is loose.
BOUND_WARN = 1e-4
_CHUNK = 1 << 23  # elements per streaming chunk: ~100 MB of temporaries


def _to_numpy(x: Any) -> np.ndarray:
    """Return a flat view of an array-like or torch tensor (no copy when already contiguous)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x).reshape(-1)


def _prepare(
    scores: Any, labels: Any, mask: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    s, y = _to_numpy(scores), _to_numpy(labels)
    if s.shape != y.shape:
        raise CavlogError(
            f"scores ({s.size} values) and labels ({y.size} values) differ in size"
        )
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    m = None
    if mask is not None:
        m = _to_numpy(mask)
        if m.shape != s.shape:
            raise CavlogError(f"mask ({m.size} values) and scores ({s.size} values) differ in size")
        if m.dtype != np.bool_:
            m = m != 0
    return s, y, m


@dataclass(frozen=True)
class ScoreCurves:
    """Confusion counts at decreasing thresholds.

    A pixel is predicted positive when ``score >= threshold``.

    Attributes
    ----------
    thresholds : (T,) float64 ndarray
        Strictly decreasing thresholds (distinct scores, or bin lower edges).
    tp, fp : (T,) float64 ndarray
        True / false positives at each threshold (non-decreasing).
    exact : bool
        Whether every distinct score is a threshold (exact path).
    error_bound : float
        Upper bound on the absolute error of every summary metric vs the exact path (0 if exact).
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    exact: bool
    error_bound: float = 0.0

    @property
    def n_positive(self) -> int:
        """Lesion pixels pooled."""
        return int(self.tp[-1]) if self.tp.size else 0

    @property
    def n_negative(self) -> int:
        """Non-lesion pixels pooled."""
        return int(self.fp[-1]) if self.fp.size else 0

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """``(fpr, tpr)``, each ``(T + 1,)`` starting at (0, 0); NaN-free only with P, N > 0."""
        fpr = np.concatenate(([0.0], self.fp / max(self.n_negative, 1)))
        tpr = np.concatenate(([0.0], self.tp / max(self.n_positive, 1)))
        return fpr, tpr

    def pr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(precision, recall, thresholds)`` in scikit-learn's ``precision_recall_curve`` order.

        Recall decreases; the last point is (precision 1, recall 0) and has no threshold.
        """
        prec = self.tp / np.maximum(self.tp + self.fp, 1)
        rec = self.tp / max(self.n_positive, 1)
        return (
            np.concatenate((prec[::-1], [1.0])),
            np.concatenate((rec[::-1], [0.0])),
            self.thresholds[::-1].copy(),
        )

    def pr_curve(self, max_points: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(recall, precision, thresholds)`` with increasing recall, thinned for plotting.

        Keeps at most ``max_points`` points spread evenly in recall, always keeping the first and
        the last threshold.
        """
        prec = self.tp / np.maximum(self.tp + self.fp, 1)
        rec = self.tp / max(self.n_positive, 1)
        if rec.size > max_points:
            grid = np.linspace(rec[0], rec[-1], max_points)
            keep = np.unique(np.clip(np.searchsorted(rec, grid), 0, rec.size - 1))
            rec, prec, thr = rec[keep], prec[keep], self.thresholds[keep]
        else:
            thr = self.thresholds
        return rec.copy(), prec.copy(), thr.copy()

    def summary(self) -> dict[str, Any]:
        """Return the pooled metrics (see :func:`pixel_metrics`)."""
        n_pos, n_neg = self.n_positive, self.n_negative
        out: dict[str, Any] = {
            "auroc": math.nan, "auprc": math.nan, "average_precision": math.nan,
            "dice_best": math.nan, "iou_best": math.nan, "threshold_best": math.nan,
            "n_pixels": n_pos + n_neg, "n_positive": n_pos,
            "exact": self.exact, "error_bound": float(self.error_bound),
        }
        if n_pos == 0:
            return out
        tp, fp = self.tp, self.fp
        if n_neg > 0:
            fpr, tpr = self.roc()
            out["auroc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)
        prec = np.concatenate(([1.0], tp / (tp + fp)))
        rec = np.concatenate(([0.0], tp / n_pos))
        d_rec = np.diff(rec)
        out["auprc"] = float(np.sum(d_rec * (prec[1:] + prec[:-1])) / 2)
        out["average_precision"] = float(max(0.0, np.sum(d_rec * prec[1:])))
        f1 = 2 * tp / (tp + fp + n_pos)
        best = int(np.argmax(f1))
        out["dice_best"] = float(f1[best])
        out["iou_best"] = float(tp[best] / (fp[best] + n_pos))
        out["threshold_best"] = float(self.thresholds[best])
        return out


def exact_curves(scores: Any, labels: Any, mask: Any = None) -> ScoreCurves:
    """Curves with one threshold per distinct score (as scikit-learn's ``_binary_clf_curve``).

    Parameters
    ----------
    scores : array-like or Tensor, any shape
        Higher = more anomalous; any finite floats.
    labels : array-like or Tensor, same shape
        Ground truth, nonzero = lesion.
    mask : array-like or Tensor, same shape, optional
        Pixels to include (e.g. the brain); all when None.
    """
    s, y, m = _prepare(scores, labels, mask)
    if m is not None:
        s, y = s[m], y[m]
    y = y != 0 if y.dtype != np.bool_ else y
    if s.size == 0:
        empty = np.zeros(0)
        return ScoreCurves(empty, empty, empty, exact=True)
    if not np.all(np.isfinite(s)):
        raise CavlogError("scores contain NaN or Inf values")
    order = np.argsort(s, kind="stable")[::-1]
    s_sorted = s[order]
    distinct = np.flatnonzero(s_sorted[1:] != s_sorted[:-1])
    last = np.concatenate((distinct, [s.size - 1]))
    tp = np.cumsum(y[order], dtype=np.int64)[last].astype(np.float64)
    fp = 1.0 + last - tp
    return ScoreCurves(s_sorted[last].astype(np.float64), tp, fp, exact=True)


class ScoreHistogram:
    """Streaming per-bin counts of positive and negative pixels for scores in [0, 1].

    Bins (``K = bins``): index 0 holds exact zeros, index ``b`` in 1..K holds
    ``[(b-1)/K, b/K)`` minus zero, index ``K + 1`` holds exact ones. Each bin also records the
    smallest and largest score it received: a bin holding a single distinct value is resolved
    exactly (so quantised maps, e.g. 8-bit, give exact metrics), and the smallest score is the
    bin's threshold. Feed any number of :meth:`update` calls (e.g. one per scan), then call
    :meth:`curves`. Memory: ``4 (K + 2)`` 8-byte values.

    Parameters
    ----------
    bins : int
        A power of two (so that ``score * bins`` and the bin edges are exact in floating point).
    """

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if bins < 2 or bins & (bins - 1):
            raise CavlogError(f"bins={bins}: must be a power of two >= 2")
        self.bins = int(bins)
        self.counts = np.zeros(2 * (self.bins + 2), dtype=np.int64)  # [negatives | positives]
        self.low = np.full(self.bins + 2, np.inf)  # smallest score seen in each bin
        self.high = np.full(self.bins + 2, -np.inf)  # largest score seen in each bin

    @property
    def n_pixels(self) -> int:
        """Pixels pooled so far."""
        return int(self.counts.sum())

    def update(self, scores: Any, labels: Any, mask: Any = None) -> None:
        """Add pixels: ``scores`` in [0, 1], ``labels`` nonzero = lesion, optional ``mask``.

        Raises :class:`CavlogError` for scores outside [0, 1] or NaN (use the exact path then).
        """
        s, y, m = _prepare(scores, labels, mask)
        k = self.bins
        for start in range(0, s.size, _CHUNK):
            cs, cy = s[start:start + _CHUNK], y[start:start + _CHUNK]
            if m is not None:
                cm = m[start:start + _CHUNK]
                cs, cy = cs[cm], cy[cm]
            if cs.size == 0:
                continue
            lo, hi = cs.min(), cs.max()
            if not (lo >= 0 and hi <= 1):  # also catches NaN
                raise CavlogError(
                    f"binned pixel metrics need scores in [0, 1], got range [{lo}, {hi}] "
                    "(use exact=True for other scores)"
                )
            # floor(s * K) + 1, exact because K is a power of two; zeros go to bin 0.
            # float64 copy: matching dtypes keep ufunc.at on its fast path.
            cs64 = cs.astype(np.float64, copy=False)
            idx = (cs64 * k).astype(np.int64)
            idx += 1
            idx[cs64 == 0] = 0
            np.minimum.at(self.low, idx, cs64)
            np.maximum.at(self.high, idx, cs64)
            if cy.dtype != np.bool_:
                cy = cy != 0
            idx[cy] += k + 2
            self.counts += np.bincount(idx, minlength=self.counts.size)

    def merge(self, other: ScoreHistogram) -> ScoreHistogram:
        """Add another histogram's counts (same ``bins``) into this one; returns self."""
        if other.bins != self.bins:
            raise CavlogError(f"cannot merge histograms with {self.bins} and {other.bins} bins")
        self.counts += other.counts
        np.minimum(self.low, other.low, out=self.low)
        np.maximum(self.high, other.high, out=self.high)
        return self

    def curves(self) -> ScoreCurves:
        """Curves at the non-empty bins (threshold = the bin's smallest score), with the bound."""
        k = self.bins
        neg = self.counts[:k + 2][::-1].astype(np.float64)  # descending scores
        pos = self.counts[k + 2:][::-1].astype(np.float64)
        low, high = self.low[::-1], self.high[::-1]
        keep = (pos + neg) > 0
        neg, pos, low, high = neg[keep], pos[keep], low[keep], high[keep]
        tp, fp = np.cumsum(pos), np.cumsum(neg)
        bound = _binned_bound(pos, neg, tp, fp, spread=high > low)
        return ScoreCurves(low.copy(), tp, fp, exact=False, error_bound=bound)


def _binned_bound(
    pos: np.ndarray, neg: np.ndarray, tp: np.ndarray, fp: np.ndarray, *, spread: np.ndarray
) -> float:
    """Largest possible error of the binned summaries (module docstring).

    Bins in descending score order; ``spread`` marks bins holding more than one distinct score
    (only those hide curve points). Only bins with both classes can move AUROC or lift the best
    F1 above its value at the bin edges; the PR integrals also move in positive-only bins.
    """
    if tp.size == 0 or tp[-1] == 0:
        return 0.0
    n_pos, n_neg = tp[-1], fp[-1]
    tp_a, fp_a = tp - pos, fp - neg  # counts above each bin
    mixed = spread & (pos > 0) & (neg > 0)
    b_roc = 0.5 * float(np.sum((pos * neg)[mixed])) / (n_pos * n_neg) if n_neg > 0 else 0.0
    # Precision at any curve point inside bin b lies in [tp_a/(tp_a+fp), tp/(tp+fp_a)]
    # (1 for the (0, 1) start point of the PR curve, reached when nothing is above).
    hi_p = tp / np.maximum(tp + fp_a, 1)
    lo_den = tp_a + fp
    lo_p = np.where(lo_den > 0, tp_a / np.maximum(lo_den, 1), 1.0)
    gap = np.where(spread & (pos > 0), np.clip(hi_p - lo_p, 0, None), 0.0)
    b_pr = float(np.sum(pos / n_pos * gap))
    f1 = 2 * tp / (tp + fp + n_pos)
    best = int(np.argmax(f1))
    b_dice = b_iou = 0.0
    if mixed.any():
        f1_hi = (2 * tp / (tp + fp_a + n_pos))[mixed]
        j_hi = (tp / (fp_a + n_pos))[mixed]
        b_dice = float(f1_hi.max() - f1[best])
        b_iou = float(j_hi.max() - tp[best] / (fp[best] + n_pos))
    return max(b_roc, b_pr, b_dice, b_iou, 0.0)


def pixel_metrics(
    scores: Any,
    labels: Any,
    mask: Any = None,
    *,
    exact: bool | None = None,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """Pooled pixel-level AUROC, AUPRC, AP and the best-F1 operating point.

    Parameters
    ----------
    scores : array-like or Tensor, any shape
        Anomaly scores (higher = more anomalous). The binned path needs them in [0, 1].
    labels : array-like or Tensor, same shape
        Ground truth, nonzero = lesion.
    mask : array-like or Tensor, same shape, optional
        Pixels to pool (e.g. the brain mask); every pixel when None.
    exact : bool or None
        True: sort all scores (as scikit-learn). False: streaming histogram with ``bins`` bins and
        a reported error bound. None: exact when at most :data:`EXACT_LIMIT` pixels are pooled.
    bins : int
        Histogram bins for the binned path (power of two).

    Returns
    -------
    dict
        ``auroc`` (= ``roc_auc_score``), ``auprc`` (= ``auc(recall, precision)`` on
        ``precision_recall_curve``, the paper's AUPRC), ``average_precision``
        (= ``average_precision_score``), ``dice_best`` / ``iou_best`` / ``threshold_best``
        (F1-max operating point: **uses the ground truth**, an oracle), ``n_pixels``,
        ``n_positive``, ``exact`` and ``error_bound``. Metrics are NaN when undefined (no positive
        pixels; AUROC also without negatives).
    """
    s, y, m = _prepare(scores, labels, mask)
    n = int(np.count_nonzero(m)) if m is not None else s.size
    if exact is None:
        exact = n <= EXACT_LIMIT
    if exact:
        curves = exact_curves(s, y, m)
    else:
        hist = ScoreHistogram(bins)
        hist.update(s, y, m)
        curves = hist.curves()
        if curves.error_bound > BOUND_WARN:
            warnings.warn(
                f"binned pixel metrics: error bound {curves.error_bound:.2g} > {BOUND_WARN:g} "
                "(many scores in a narrow range); pass exact=True for exact values",
                RuntimeWarning, stacklevel=2,
            )
    return curves.summary()


# --- binary masks -----------------------------------------------------------------------------


def scores_from_counts(tp: Any, fp: Any, fn: Any) -> dict[str, Any]:
    """Dice, IoU, precision and recall from confusion counts (scalars or arrays, vectorised).

    A ratio whose denominator is zero is 1.0 when prediction and ground truth are both empty
    (perfect agreement on "no lesion") and 0.0 otherwise; so an empty prediction of an empty
    ground truth scores 1.0 everywhere.
    """
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    both_empty = (tp + fp + fn) == 0

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        safe = np.where(den > 0, den, 1.0)
        return np.where(den > 0, num / safe, np.where(both_empty, 1.0, 0.0))

    out = {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
    }
    if out["dice"].ndim == 0:
        return {k: float(v) for k, v in out.items()}
    return out


def _counts(pred: Any, gt: Any) -> tuple[int, int, int]:
    p, g = _to_numpy(pred), _to_numpy(gt)
    if p.shape != g.shape:
        raise CavlogError(
            f"prediction ({p.size} values) and ground truth ({g.size} values) differ in size"
        )
    p = p if p.dtype == np.bool_ else p != 0
    g = g if g.dtype == np.bool_ else g != 0
    tp = int(np.count_nonzero(p & g))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp


def binary_scores(pred: Any, gt: Any) -> dict[str, float]:
    """``dice``, ``iou``, ``precision``, ``recall`` of a binary prediction (nonzero = lesion).

    Pooled over all elements; zero denominators follow :func:`scores_from_counts` (empty vs
    empty = 1.0).
    """
    return scores_from_counts(*_counts(pred, gt))


def dice(pred: Any, gt: Any) -> float:
    """Dice = 2|P∩G| / (|P| + |G|); 1.0 when both are empty."""
    return binary_scores(pred, gt)["dice"]


def iou(pred: Any, gt: Any) -> float:
    """Jaccard index |P∩G| / |P∪G|; 1.0 when both are empty."""
    return binary_scores(pred, gt)["iou"]


def precision(pred: Any, gt: Any) -> float:
    """|P∩G| / |P|; with an empty prediction 1.0 if G is empty too, else 0.0."""
    return binary_scores(pred, gt)["precision"]


def recall(pred: Any, gt: Any) -> float:
    """|P∩G| / |G|; with an empty ground truth 1.0 if P is empty too, else 0.0."""
    return binary_scores(pred, gt)["recall"]


def counts_at_thresholds(
    scores: Any, labels: Any, thresholds: Any, mask: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tp, fp, fn)`` of the masks ``score >= t`` for several thresholds in one pass.

    Parameters
    ----------
    scores, labels, mask
        As in :func:`pixel_metrics` (any score range).
    thresholds : (T,) array-like
        Any order.

    Returns
    -------
    tp, fp, fn : (T,) int64 ndarrays
        In the order of ``thresholds``; feed them to :func:`scores_from_counts` (e.g. per scan).
    """
    s, y, m = _prepare(scores, labels, mask)
    if m is not None:
        s, y = s[m], y[m]
    y = y if y.dtype == np.bool_ else y != 0
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    order = np.argsort(t)
    t_sorted = t[order]
    # Number of thresholds each score reaches (score >= t); a pixel is positive for all of them.
    reach = np.searchsorted(t_sorted, s, side="right")
    n_t = t.size
    hist = np.bincount(reach + (n_t + 1) * y, minlength=2 * (n_t + 1)).reshape(2, n_t + 1)
    # Pixels reaching at least i + 1 sorted thresholds are positive at sorted threshold i.
    above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # (2, T)
    tp_s, fp_s = above[1], above[0]
    fn_s = int(hist[1].sum()) - tp_s
    tp, fp, fn = (np.empty(n_t, dtype=np.int64) for _ in range(3))
    tp[order], fp[order], fn[order] = tp_s, fp_s, fn_s
    return tp, fp, fn
