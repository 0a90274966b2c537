"""Pixel metrics: exact path equals scikit-learn; binned path within its reported bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cavlog_core.errors import CavlogError
from cavlog_core.metrics import (
    ScoreHistogram,
    binary_scores,
    counts_at_thresholds,
    dice,
    exact_curves,
    iou,
    pixel_metrics,
    precision,
    recall,
    scores_from_counts,
)

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the reference for metrics")


def _sklearn(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    p, r, _ = sk.precision_recall_curve(labels, scores)
    return {
        "auroc": sk.roc_auc_score(labels, scores),
        "auprc": sk.auc(r, p),
        "average_precision": sk.average_precision_score(labels, scores),
    }


def _brute_best_f1(scores: np.ndarray, labels: np.ndarray) -> float:
    pred = scores[None, :] >= np.unique(scores)[:, None]  # every possible mask at once
    tp = (pred & labels).sum(1)
    return float(np.max(2 * tp / (pred.sum(1) + labels.sum())))


@pytest.mark.parametrize("ties", [False, True])
def test_exact_path_equals_sklearn(ties):
    rng = np.random.default_rng(1 + ties)
    labels = rng.random(3000) < 0.15
    scores = np.clip(rng.normal(0.4, 0.15, 3000) + 0.25 * labels, 0, 1)
    if ties:
        scores = np.round(scores, 2)  # many tied scores, also across classes
    got = pixel_metrics(scores, labels)
    assert got["exact"] and got["error_bound"] == 0.0
    for key, want in _sklearn(scores, labels).items():
        assert got[key] == pytest.approx(want, abs=1e-6), key
    assert got["dice_best"] == pytest.approx(_brute_best_f1(scores, labels), abs=1e-9)
    pred = scores >= got["threshold_best"]
    assert got["dice_best"] == pytest.approx(sk.f1_score(labels, pred), abs=1e-12)
    assert got["iou_best"] == pytest.approx(sk.jaccard_score(labels, pred), abs=1e-12)
    assert got["n_pixels"] == 3000 and got["n_positive"] == int(labels.sum())


def test_hand_computed_tiny_case_and_mask():
    # scores 0.9(+) 0.8(-) 0.7(+) 0.1(-): ROC pairs correct 3/4; AP = 1*0.5 + 2/3*0.5.
    s = np.array([0.9, 0.8, 0.7, 0.1, 0.95])
    y = np.array([1, 0, 1, 0, 0])
    m = np.array([1, 1, 1, 1, 0], dtype=bool)  # the 0.95 negative is outside the mask
    got = pixel_metrics(s, y, m)
    assert got["auroc"] == pytest.approx(0.75)
    assert got["average_precision"] == pytest.approx(0.5 + (2 / 3) * 0.5)
    # Trapezoids through (0,1) (0.5,1) (0.5,0.5) (1,2/3) (1,0.5): 0.5 + 0.5*(0.5+2/3)/2.
    assert got["auprc"] == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)
    # Best F1: threshold 0.9 -> 2/3; threshold 0.7 -> 2*2/(2+1+2) = 0.8.
    assert got["dice_best"] == pytest.approx(0.8) and got["threshold_best"] == 0.7
    assert got["iou_best"] == pytest.approx(2 / 3)
    # torch tensors and 2D shapes are accepted too.
    t = pixel_metrics(torch.tensor(s).view(1, 5), torch.tensor(y).view(1, 5), torch.tensor(m))
    assert t["auroc"] == pytest.approx(0.75)


def test_degenerate_inputs():
    one_class = pixel_metrics(np.array([0.1, 0.5]), np.array([0, 0]))
    assert math.isnan(one_class["auroc"]) and math.isnan(one_class["dice_best"])
    all_pos = pixel_metrics(np.array([0.1, 0.5]), np.array([1, 1]))
    assert math.isnan(all_pos["auroc"]) and all_pos["average_precision"] == 1.0
    with pytest.raises(CavlogError, match="differ in size"):
        pixel_metrics(np.zeros(3), np.zeros(4))
    with pytest.raises(CavlogError, match=r"\[0, 1\]"):
        pixel_metrics(np.array([0.2, 1.5]), np.array([0, 1]), exact=False)
    with pytest.raises(CavlogError, match="NaN"):
        exact_curves(np.array([np.nan, 0.5]), np.array([0, 1]))


def _map_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores shaped like normalised anomaly maps: many exact zeros, continuous float32 values."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.03
    scores = rng.beta(2, 5, n) + 0.35 * labels * rng.random(n)
    scores[rng.random(n) < 0.1] = 0.0  # eroded rim / image minima
    scores = (scores / scores.max()).astype(np.float32)
    return scores, labels


def test_binned_path_within_bound_and_1e4():
    scores, labels = _map_like(1_500_000, seed=3)
    exact = pixel_metrics(scores, labels, exact=True)
    binned = pixel_metrics(scores, labels, exact=False)  # 2^20 bins
    assert not binned["exact"]
    bound = binned["error_bound"]
    assert 0 < bound <= 1e-4
    for key in ("auroc", "auprc", "average_precision", "dice_best", "iou_best"):
        err = abs(binned[key] - exact[key])
        assert err <= bound + 1e-12, (key, err, bound)
    # The binned operating point is a real mask: its F1 equals the reported dice_best.
    pred = scores >= binned["threshold_best"]
    assert binary_scores(pred, labels)["dice"] == pytest.approx(binned["dice_best"], abs=1e-12)


def test_binned_bound_is_valid_with_coarse_bins_and_exact_for_quantised_scores():
    rng = np.random.default_rng(5)
    scores, labels = _map_like(200_000, seed=4)
    exact = pixel_metrics(scores, labels, exact=True)
    for bins in (16, 256, 4096):
        got = pixel_metrics(scores, labels, exact=False, bins=bins) if bins > 16 else None
        if got is None:
            with pytest.warns(RuntimeWarning, match="error bound"):
                got = pixel_metrics(scores, labels, exact=False, bins=bins)
        for key in ("auroc", "auprc", "average_precision", "dice_best", "iou_best"):
            assert abs(got[key] - exact[key]) <= got["error_bound"] + 1e-12, (bins, key)
    # 8-bit maps: every bin of 2^20 holds one distinct value, so binned == exact exactly.
    q = (np.round(rng.random(100_000) * 255) / 255).astype(np.float32)
    y = rng.random(100_000) < q * 0.3
    a, b = pixel_metrics(q, y, exact=True), pixel_metrics(q, y, exact=False)
    assert b["error_bound"] == 0.0
    for key in ("auroc", "auprc", "average_precision", "dice_best", "threshold_best"):
        assert b[key] == pytest.approx(a[key], abs=1e-12), key


def test_histogram_streams_and_merges_like_one_pass():
    scores, labels = _map_like(60_000, seed=6)
    mask = np.random.default_rng(7).random(60_000) < 0.8
    whole = ScoreHistogram(1 << 12)
    whole.update(scores, labels, mask)
    a, b = ScoreHistogram(1 << 12), ScoreHistogram(1 << 12)
    a.update(scores[:25_000], labels[:25_000], mask[:25_000])
    b.update(scores[25_000:], labels[25_000:], mask[25_000:])
    merged = a.merge(b)
    assert np.array_equal(merged.counts, whole.counts) and merged.n_pixels == int(mask.sum())
    assert merged.curves().summary() == whole.curves().summary()
    with pytest.raises(CavlogError, match="power of two"):
        ScoreHistogram(1000)


def test_curves_for_plotting():
    scores, labels = _map_like(50_000, seed=8)
    curves = exact_curves(scores, labels)
    prec, rec, thr = curves.pr()
    p_sk, r_sk, t_sk = sk.precision_recall_curve(labels, scores)
    assert np.allclose(prec, p_sk) and np.allclose(rec, r_sk) and np.allclose(thr, t_sk)
    r, p, t = curves.pr_curve(max_points=100)
    assert len(p) == len(t) == len(r)
    assert len(r) <= 100 and np.all(np.diff(r) >= 0) and r[-1] == 1.0
    fpr, tpr = curves.roc()
    assert np.trapezoid(tpr, fpr) == pytest.approx(sk.roc_auc_score(labels, scores), abs=1e-9)


def test_binary_scores_and_conventions():
    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
    gt = np.array([[1, 0, 0, 0], [1, 1, 1, 0]], dtype=bool)
    # tp = 2, fp = 1, fn = 2
    got = binary_scores(pred, gt)
    assert got == pytest.approx({"dice": 4 / 7, "iou": 2 / 5, "precision": 2 / 3, "recall": 0.5})
    assert dice(pred, gt) == pytest.approx(4 / 7) and iou(pred, gt) == pytest.approx(0.4)
    assert precision(pred, gt) == pytest.approx(2 / 3) and recall(pred, gt) == 0.5
    empty = np.zeros(4, dtype=bool)
    assert binary_scores(empty, empty) == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}
    some = np.array([1, 0, 0, 0], dtype=bool)
    assert binary_scores(some, empty) == {"dice": 0.0, "iou": 0.0, "precision": 0.0, "recall": 0.0}
    assert binary_scores(empty, some) == {"dice": 0.0, "iou": 0.0, "precision": 0.0, "recall": 0.0}
    # uint8 BraTS labels: nonzero = lesion
    assert dice(np.array([0, 2, 4]), np.array([0, 1, 0])) == pytest.approx(2 / 3)


def test_counts_at_thresholds_matches_direct_counts():
    rng = np.random.default_rng(9)
    s = rng.random(5000)
    y = rng.random(5000) < 0.2
    m = rng.random(5000) < 0.7
    thr = np.array([0.9, 0.1, 0.5, 0.5, 0.0, 1.0])
    tp, fp, fn = counts_at_thresholds(s, y, thr, m)
    for i, t in enumerate(thr):
        p = (s >= t) & m
        assert tp[i] == np.sum(p & y) and fp[i] == np.sum(p & ~y) and fn[i] == np.sum(~p & y & m)
    vec = scores_from_counts(tp, fp, fn)
    assert vec["dice"].shape == (6,)
    assert vec["dice"][2] == pytest.approx(binary_scores((s >= 0.5)[m], y[m])["dice"])
