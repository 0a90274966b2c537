"""The plugin on the real BraTS cases in ../shared/data (skipped when the folder is absent)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("napari", reason="napari is not installed (pip install napari-cavlog[napari])")

from napari_cavlog import AnomalyWidget, session_models
from napari_cavlog._orient import to_display
from napari_fixtures import add_case, make_tiny_checkpoint

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
BRATS2013 = SHARED / "brats2013" / "BraTS2013_HG_0004"
BRATS2023 = SHARED / "brats2023-no-seg" / "BraTS-GLI-00001-000"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.gui,
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"real BraTS cases not found at {SHARED}"),
]


def _canonical(path: Path) -> np.ndarray:
    """Independent reference: nibabel's own closest-canonical (RAS) reorientation."""
    return np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("real") / "checkpoint.pt")


def test_brats2013_opens_with_aligned_ground_truth_and_runs(make_napari_viewer, tiny_ckpt):
    viewer = make_napari_viewer()
    add_case(viewer, BRATS2013)
    flair = viewer.layers["BraTS2013_HG_0004 FLAIR"]
    seg = viewer.layers["BraTS2013_HG_0004 ground truth"]
    assert flair.data.shape == seg.data.shape == (155, 240, 240)
    # Voxel-exact orientation against nibabel's canonical reorientation of the files.
    np.testing.assert_array_equal(
        seg.data, to_display(_canonical(BRATS2013 / "BraTS2013_HG_0004_seg.nii.gz")))
    reference = to_display(_canonical(BRATS2013 / "BraTS2013_HG_0004_flair.nii.gz"))
    assert np.array_equal(flair.data, reference.astype(np.float32))
    # Anatomically: the tumour sits inside the brain and the oedema is FLAIR-hyperintense.
    brain = flair.metadata["cavlog"]["brain_mask"]
    lesion = seg.data > 0
    assert (lesion & brain).sum() / lesion.sum() > 0.99
    assert np.median(flair.data[seg.data == 2]) > np.median(flair.data[brain & ~lesion]) + 0.5

    session_models.clear()
    widget = AnomalyWidget(viewer)
    widget.set_checkpoint(tiny_ckpt)
    widget.device_combo.setCurrentText("cpu")
    widget.run(block=True)
    assert widget.analysis is not None, widget.status.text()
    assert widget.anomaly_layer.data[brain].max() > 0.99
    assert set(widget.metrics) == {"dice", "iou", "precision", "recall"}
    session_models.clear()


def test_brats2023_opens_without_ground_truth_and_runs(make_napari_viewer, tiny_ckpt):
    viewer = make_napari_viewer()
    layers = add_case(viewer, BRATS2023)
    assert [layer.name for layer in layers] == ["BraTS-GLI-00001-000 FLAIR"]
    flair = layers[0]
    np.testing.assert_array_equal(
        flair.data, to_display(_canonical(BRATS2023 / "BraTS-GLI-00001-000-t2f.nii.gz")))
    session_models.clear()
    widget = AnomalyWidget(viewer)
    assert widget.gt_combo.layer() is None
    widget.set_checkpoint(tiny_ckpt)
    widget.device_combo.setCurrentText("cpu")
    widget.run(block=True)
    assert widget.analysis is not None, widget.status.text()
    assert widget.metrics is None and not widget.gt_button.isEnabled()
    assert widget.mask_layer.data.any()
    session_models.clear()
