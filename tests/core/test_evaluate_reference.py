"""evaluate(): AUROC inside the brain and over all pixels, prevalence and the FLAIR references."""

from __future__ import annotations

import numpy as np
import pytest

from cavlog_core.evaluate import _pooled, run_evaluate
from cavlog_core.metrics import pixel_metrics
from test_evaluate import CONFIG, _expected, _fake, dataset  # noqa: F401 (fixture)


def test_pooled_by_hand():
    # 4x4 -> 2x2 block means -> bilinear back to 4x4; constant blocks stay constant inside.
    img = np.zeros((1, 1, 4, 4), np.float32)
    img[0, 0, :2, :2] = 1.0
    out = _pooled(img, 2)
    assert out.shape == img.shape
    assert out[0, 0, 0, 0] == pytest.approx(1.0) and out[0, 0, 3, 3] == pytest.approx(0.0)
    assert out[0, 0, 1, 1] == pytest.approx(0.5625)  # bilinear between the block centres
    np.testing.assert_allclose(_pooled(img, 4), img)  # a grid as fine as the image: unchanged


def test_report_gives_both_aurocs_prevalence_and_flair_references(dataset):  # noqa: F811
    report = run_evaluate(_fake(), dataset, split="all", slices="central:4", device="cpu")
    _, labels, _ = _expected(dataset, report.cases)
    p = report.pixel
    assert p["prevalence"] == pytest.approx(labels.mean())
    assert p["auroc_brain"] == pytest.approx(p["auroc"], abs=2e-3)  # binned vs exact, same pixels
    everything = _expected(dataset, report.cases, all_pixels=True)
    want_all = pixel_metrics(everything[0], everything[1], exact=True)["auroc"]
    assert p["auroc_all_pixels"] == pytest.approx(want_all, abs=2e-3)
    ref = report.reference
    assert ref["cam_grid"] == CONFIG.model.resolution // 4
    # The fake method's map is an increasing function of the image inside the brain, so the
    # FLAIR reference ranks the brain pixels like the map does.
    assert ref["flair_auprc"] == pytest.approx(p["auprc"], abs=0.05)
    assert 0 < ref["flair_pooled_auprc"] <= 1
    d = report.to_dict()
    assert d["reference"]["cam_grid"] == ref["cam_grid"] and "auroc_all_pixels" in d
    assert "pooled to the" in report.to_markdown()
