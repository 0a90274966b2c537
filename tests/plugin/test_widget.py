"""End-to-end tests of the napari widgets (Xvfb display via pytest-xvfb, pytest-qt)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari", reason="napari is not installed (pip install napari-cavlog[napari])")

from cavlog_core.metrics import binary_scores, pixel_metrics
from napari_cavlog import AnomalyWidget, FineTuneWidget, session_models
from napari_fixtures import (
    TINY_THRESHOLDS,
    add_case,
    lesion_slice,
    make_tiny_checkpoint,
    write_synthetic_cases,
)

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """One lesioned synthetic case folder, healthy scans for fine-tuning, a tiny checkpoint."""
    root = tmp_path_factory.mktemp("napari_assets")
    case = write_synthetic_cases(root / "cases", (11,), shape=(80, 80, 48))[0]
    healthy = root / "healthy"
    write_synthetic_cases(healthy, (21,), shape=(64, 64, 32), healthy=True)
    ckpt = make_tiny_checkpoint(root / "tiny" / "checkpoint.pt")
    return {"case": case, "healthy": healthy, "ckpt": ckpt, "root": root}


@pytest.fixture(autouse=True)
def _fresh_registry():
    session_models.clear()
    yield
    session_models.clear()


def _widget(viewer, assets) -> AnomalyWidget:
    add_case(viewer, assets["case"])
    widget = AnomalyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(assets["ckpt"])
    widget.device_combo.setCurrentText("cpu")
    return widget


def test_anomaly_widget_end_to_end(make_napari_viewer, assets):
    viewer = make_napari_viewer(show=True)  # a hidden canvas renders black under Xvfb
    widget = _widget(viewer, assets)
    flair = viewer.layers["SYN_0011 FLAIR"]
    gt_layer = viewer.layers["SYN_0011 ground truth"]
    assert widget.flair_combo.layer() is flair and widget.gt_combo.layer() is gt_layer
    assert widget.metrics is None

    widget.run(block=True)
    assert not widget.running and widget.analysis is not None, widget.status.text()
    overlay = widget.anomaly_layer
    assert overlay is widget.results_for(flair).anomaly
    assert overlay.data.shape == flair.data.shape and "inferno" in overlay.colormap.name
    # Translucent, transparent at 0 (the map is 0 outside the brain), with a colour bar.
    assert overlay.blending == "translucent" and overlay.colormap.map(np.array([0.0]))[0, 3] == 0
    assert overlay.colorbar.visible
    assert gt_layer.contour > 0 and widget.mask_layer.contour > 0  # outlines, not fills
    assert viewer.dims.axis_labels[0].startswith("axial")
    letters = [layer for layer in viewer.layers if layer.name == "orientation"]
    assert len(letters) == 1 and list(letters[0].features["letter"]) == ["A", "P", "L", "R"]
    brain = flair.metadata["cavlog"]["brain_mask"]
    # Min-max normalised at model resolution, then resampled to the scan: max close to 1.
    assert 0.9 < overlay.data[brain].max() <= 1.0 and overlay.data.min() == 0.0
    assert overlay.data[~brain].max() == 0.0
    assert widget.progress.value() == widget.progress.maximum() > 0
    # Starts at the checkpoint's healthy p95.
    assert widget.threshold == pytest.approx(TINY_THRESHOLDS["healthy_p95"])

    gt = np.asarray(gt_layer.data) > 0
    results = {}
    for t in (0.3, 0.5, 0.8):
        widget.threshold = t
        mask = np.asarray(widget.mask_layer.data).astype(bool)
        np.testing.assert_array_equal(mask, brain & (overlay.data >= t))
        assert widget.metrics == pytest.approx(binary_scores(mask, gt), abs=1e-12)
        results[t] = (int(mask.sum()), widget.metrics["dice"])
    counts = [results[t][0] for t in (0.3, 0.5, 0.8)]
    assert counts[0] > counts[1] > counts[2] > 0  # a higher threshold keeps fewer voxels
    assert len({results[t][1] for t in results}) == 3  # and the DICE follows it

    # The GT operating point is the F1-best threshold: its DICE is the best one.
    best = pixel_metrics(overlay.data, gt, mask=brain)
    assert widget.gt_button.isEnabled()
    widget.gt_button.click()
    assert widget.threshold == pytest.approx(best["threshold_best"])
    assert widget.metrics["dice"] == pytest.approx(best["dice_best"], abs=1e-9)
    assert widget.metrics["dice"] >= max(d for _, d in results.values())

    # Current slice DICE follows the viewer's slice; presets and the error overlay.
    z = lesion_slice(gt_layer.data)
    viewer.dims.set_current_step(0, z)
    mask = np.asarray(widget.mask_layer.data).astype(bool)
    assert widget.slice_metrics == pytest.approx(binary_scores(mask[z], gt[z]), abs=1e-12)
    widget.percentile_combo.setCurrentText("p99")
    widget.healthy_button.click()
    assert widget.threshold == pytest.approx(TINY_THRESHOLDS["healthy_p99"])
    widget.fixed_button.click()
    assert widget.threshold == 0.5
    widget.errors_check.setChecked(True)
    errors = np.asarray(widget.error_layer.data)
    mask = np.asarray(widget.mask_layer.data).astype(bool)
    np.testing.assert_array_equal(errors == 1, mask & ~gt)
    np.testing.assert_array_equal(errors == 2, gt & ~mask)
    widget.threshold = 0.9  # the error overlay follows the threshold: the shown slice at once,
    mask = np.asarray(widget.mask_layer.data).astype(bool)
    np.testing.assert_array_equal(np.asarray(widget.error_layer.data)[z] == 2, gt[z] & ~mask[z])
    widget.flush()  # the whole volume once the threshold settles
    np.testing.assert_array_equal(np.asarray(widget.error_layer.data) == 2, gt & ~mask)
    np.testing.assert_array_equal(np.asarray(widget.error_layer.data) == 1, mask & ~gt)

    # Dropping the ground truth: no scores, same cached map.
    widget.gt_combo.setCurrentText("(none)")
    assert widget.metrics is None and not widget.gt_button.isEnabled()
    assert not widget.errors_check.isChecked()

    # Screenshot with the overlay visible has real, coloured pixels.
    viewer.layers.selection.clear()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    overlay.visible = False
    plain = viewer.screenshot(canvas_only=True, flash=False)
    rgb = shot[..., :3].astype(int)
    colourful = (np.abs(rgb[..., 0] - rgb[..., 2]) > 40).sum()
    assert colourful > 200, "the inferno overlay should colour the brain"
    assert np.abs(shot.astype(int) - plain.astype(int)).sum() > 0


def test_a_run_uses_the_readers_case_until_the_layer_data_is_replaced(make_napari_viewer,
                                                                       assets, monkeypatch):
    """The FLAIR layer keeps the reader's ``Case``: a run analyses that very object, and only a
    layer whose data the user replaced is rebuilt from its array."""
    import importlib

    predict = importlib.import_module("cavlog_core.inference.predict")
    seen = []
    real = predict.predict_volume

    def recording(model, case, **kwargs):
        seen.append(case)
        return (yield from real(model, case, **kwargs))

    monkeypatch.setattr(predict, "predict_volume", recording)
    viewer = make_napari_viewer()
    widget = _widget(viewer, assets)
    flair = viewer.layers["SYN_0011 FLAIR"]
    loaded = flair.metadata["cavlog"]["case"].case
    assert loaded.case_id == "SYN_0011" and loaded.source_path is not None
    widget.run(flair, block=True)
    assert widget.analysis is not None, widget.status.text()
    assert len(seen) == 1 and seen[0] is loaded
    first = widget.anomaly_layer.data.copy()

    flair.data = flair.data.copy()  # same values, but no longer the reader's array
    widget.run(flair, block=True)
    assert widget.analysis is not None, widget.status.text()
    assert len(seen) == 2 and seen[1] is not loaded
    np.testing.assert_array_equal(seen[1].flair, loaded.flair)
    np.testing.assert_allclose(widget.anomaly_layer.data, first, atol=1e-6)


def test_two_cases_keep_their_own_results(make_napari_viewer, assets, tmp_path):
    """A second case never writes into the first case's layers; a re-run updates its own."""
    viewer = make_napari_viewer()
    widget = _widget(viewer, assets)
    first = viewer.layers["SYN_0011 FLAIR"]
    widget.run(first, block=True)
    one = widget.results_for(first)
    assert one is not None and one.analysis is not None, widget.status.text()
    assert (one.anomaly.name, one.mask.name) == ("SYN_0011 FLAIR anomaly", "SYN_0011 FLAIR mask")
    names = [layer.name for layer in viewer.layers]
    at = names.index("SYN_0011 FLAIR")
    assert names[at + 1:at + 3] == ["SYN_0011 FLAIR anomaly", "SYN_0011 FLAIR mask"]
    map_one, mask_one = one.anomaly.data.copy(), one.mask.data.copy()
    one.mask.visible = False  # the user's choice on case 1 must survive a run on case 2

    other = write_synthetic_cases(tmp_path, (12,), shape=(72, 72, 40))[0]
    add_case(viewer, other)
    second = viewer.layers["SYN_0012 FLAIR"]
    widget.run(second, block=True)
    two = widget.results_for(second)
    assert two is not None and two.analysis is not None, widget.status.text()
    assert two.anomaly is not one.anomaly and two.mask is not one.mask
    assert two.anomaly.name == "SYN_0012 FLAIR anomaly" and two.anomaly.visible
    assert two.anomaly.data.shape == second.data.shape != first.data.shape
    assert widget.analysis.case_id == "SYN_0012" and widget.anomaly_layer is two.anomaly
    names = [layer.name for layer in viewer.layers]
    at = names.index("SYN_0012 FLAIR")
    assert names[at + 1:at + 3] == ["SYN_0012 FLAIR anomaly", "SYN_0012 FLAIR mask"]
    np.testing.assert_array_equal(one.anomaly.data, map_one)  # case 1 untouched
    np.testing.assert_array_equal(one.mask.data, mask_one)
    assert not one.mask.visible and one.analysis.case_id == "SYN_0011"
    assert widget.gt_combo.layer().name == "SYN_0012 ground truth"

    # Choosing case 1 again shows its own results and threshold; a re-run updates its layers.
    widget.threshold = 0.42
    widget.flair_combo.select(first)
    assert widget.analysis is one.analysis
    assert widget.gt_combo.layer().name == "SYN_0011 ground truth"
    assert widget.threshold == pytest.approx(TINY_THRESHOLDS["healthy_p95"])
    n_layers = len(viewer.layers)
    widget.run(block=True)
    assert widget.results_for(first) is one and len(viewer.layers) == n_layers
    assert one.anomaly.visible and one.mask.visible
    np.testing.assert_allclose(one.anomaly.data, map_one, atol=1e-6)  # same model, same map
    assert two.anomaly in viewer.layers and widget.results_for(second).threshold == 0.42


def test_lesion_table_and_fpr_presets(make_napari_viewer, assets, tmp_path):
    import torch

    from cavlog_core.lesions import find_lesions
    from napari_cavlog._orient import from_display

    ckpt = make_tiny_checkpoint(tmp_path / "fpr" / "checkpoint.pt")

    payload = torch.load(ckpt, weights_only=False)
    payload["thresholds"] = {**TINY_THRESHOLDS, "healthy_fpr0.5": 0.9, "healthy_fpr1": 0.8,
                             "healthy_fpr5": 0.6}
    torch.save(payload, ckpt)
    viewer = make_napari_viewer()
    widget = _widget(viewer, assets)
    widget.set_checkpoint(ckpt)
    widget.run(block=True)
    assert widget.analysis is not None, widget.status.text()
    assert widget.threshold == pytest.approx(0.6)  # FPR 5 % is the starting point
    assert widget.percentile_combo.currentText() == "FPR 5 %"
    widget.percentile_combo.setCurrentText("FPR 1 %")
    assert "1 % of brain voxels" in widget.preset_note.text()
    widget.healthy_button.click()
    assert widget.threshold == pytest.approx(0.8)

    table = widget.lesions  # the same components as cavlog predict's <ID>_lesions.csv
    flair = viewer.layers["SYN_0011 FLAIR"]
    expected = find_lesions(from_display(np.asarray(widget.mask_layer.data, bool)),
                            affine=flair.metadata["cavlog"]["affine"],
                            min_volume_ml=widget.lesion_panel.min_volume_ml)
    assert [les.voxels for les in table.lesions] == [les.voxels for les in expected.lesions]
    assert table.total_ml == pytest.approx(expected.total_ml)
    assert widget.lesion_panel.table.rowCount() == len(table.lesions) > 0
    assert "mL in" in widget.lesion_panel.total.text()
    widget.lesion_panel.min_spin.setValue(table.lesions[0].volume_ml + 1)
    assert widget.lesions.lesions == () and widget.lesion_panel.table.rowCount() == 0
    widget.lesion_panel.min_spin.setValue(0.0)
    biggest = widget.lesions.lesions[0]
    widget.go_to_lesion(0)
    assert viewer.dims.current_step[0] == round(biggest.centroid_voxel[2])


def test_anomaly_widget_cancel_and_bad_inputs(make_napari_viewer, assets, tmp_path):
    viewer = make_napari_viewer()
    widget = AnomalyWidget(viewer)
    assert widget.run() is None
    assert "FLAIR" in widget.status.text()

    add_case(viewer, assets["case"])
    widget.model_combo.setCurrentIndex(0)
    if widget.model_combo.currentData() is None:  # demo weights absent in a source checkout
        assert widget.run() is None and "demo model is not installed" in widget.status.text()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    widget.set_checkpoint(broken)
    widget.run(block=True)
    assert widget.analysis is None and "broken.pt" in widget.status.text()

    widget.set_checkpoint(assets["ckpt"])
    widget.batch_spin.setValue(1)
    cancelled = []
    worker = widget.run()
    worker.yielded.connect(lambda _e: cancelled or (cancelled.append(1), widget.cancel()))
    from napari_cavlog._qt.common import wait_until

    assert wait_until(lambda: not widget.running, timeout=60)
    assert cancelled and "cancelled" in widget.status.text()
    assert widget.progress.value() < widget.progress.maximum()
    assert widget.analysis is None and widget.metrics is None
    assert widget.anomaly_layer in viewer.layers and widget.mask_layer in viewer.layers
    assert widget.anomaly_layer.data.shape == viewer.layers["SYN_0011 FLAIR"].data.shape
    widget.threshold = 0.4  # no analysis: nothing to threshold, no error
    widget.batch_spin.setValue(32)
    widget.run(block=True)  # and a new run works after a cancel
    assert widget.analysis is not None


def test_finetune_then_run_with_the_new_model(make_napari_viewer, assets, tmp_path):
    viewer = make_napari_viewer()
    anomaly = AnomalyWidget(viewer)
    tune = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(tune)

    # Invalid inputs are flagged before any worker starts.
    empty = tmp_path / "empty"
    empty.mkdir()
    tune.folder_edit.setText(str(empty))
    tune.output_edit.setText(str(tmp_path / "run"))
    assert tune.start() is None and "no cases found" in tune.status.text()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    tune.folder_edit.setText(str(assets["healthy"]))
    tune.output_edit.setText(str(blocker / "run"))
    assert tune.start() is None and "not writable" in tune.status.text()

    tune.set_start_checkpoint(assets["ckpt"])
    assert not tune.resolution_combo.isEnabled()
    # The greyed-out fields show the starting model's own resolution and width (64, 0.125),
    # and the proposed budget is the fine-tuning one.
    from cavlog_core.config import FINETUNE_ITERATIONS

    assert (tune.resolution_combo.currentText(), tune.width_spin.value()) == ("64", 0.125)
    assert tune.iterations_spin.value() == FINETUNE_ITERATIONS
    tune.output_edit.setText(str(tmp_path / "run"))
    tune.iterations_spin.setValue(3)
    tune.batch_spin.setValue(8)
    tune.device_combo.setCurrentText("cpu")
    tune.start(block=True)
    assert tune.result is not None, tune.status.text()
    assert tune.result.checkpoint_path.is_file() and tune.result.iterations == 3
    assert tune.plot.points == (1, 2, 3)
    assert tune.progress.value() == 3
    assert " left" in tune.status.text() or "done" in tune.status.text()
    assert set(tune.result.thresholds) >= {"healthy_p95"}

    # The new model is offered by the anomaly widget and runs.
    labels = [anomaly.model_combo.itemText(i) for i in range(anomaly.model_combo.count())]
    assert "Fine-tuned: run" in labels
    anomaly.model_combo.setCurrentText("Fine-tuned: run")
    add_case(viewer, assets["case"])
    anomaly.flair_combo.setCurrentText("SYN_0011 FLAIR")
    anomaly.device_combo.setCurrentText("cpu")
    anomaly.run(block=True)
    assert anomaly.analysis is not None, anomaly.status.text()
    assert anomaly.analysis.checkpoint == tune.result.checkpoint_path
    assert anomaly.anomaly_layer.data.max() > 0
    # A fine-tuned checkpoint has the fixed-false-positive-rate presets: it starts at FPR 5 %.
    assert anomaly.threshold == pytest.approx(tune.result.thresholds["healthy_fpr5"])

    # Starting again into the same folder is refused (the run would be overwritten).
    assert tune.start() is None and "already holds a run" in tune.status.text()


def test_finetune_without_healthy_slices_is_reported(make_napari_viewer, assets, tmp_path):
    import nibabel as nib

    folder = write_synthetic_cases(tmp_path / "sick", (5,), shape=(64, 64, 40))[0]
    seg_path = folder / "SYN_0005_seg.nii.gz"
    seg = nib.load(seg_path)
    nib.save(nib.Nifti1Image(np.full(seg.shape, 2, np.uint8), seg.affine), seg_path)
    viewer = make_napari_viewer()
    tune = FineTuneWidget(viewer)
    tune.set_start_checkpoint(assets["ckpt"])
    tune.folder_edit.setText(str(folder.parent))
    tune.output_edit.setText(str(tmp_path / "run"))
    tune.iterations_spin.setValue(2)
    tune.start(block=True)
    assert tune.result is None
    assert "lesion-free" in tune.status.text() and tune.last_error
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_finetune_cancel_leaves_no_broken_state(make_napari_viewer, assets, tmp_path):
    viewer = make_napari_viewer()
    tune = FineTuneWidget(viewer)
    tune.set_start_checkpoint(assets["ckpt"])
    tune.folder_edit.setText(str(assets["healthy"]))
    tune.output_edit.setText(str(tmp_path / "run"))
    tune.iterations_spin.setValue(500)
    tune.batch_spin.setValue(4)
    tune.device_combo.setCurrentText("cpu")
    worker = tune.start()
    seen = []

    def on_event(event):
        if event.phase == "constrained" and not seen:
            seen.append(event.iteration)
            tune.cancel()

    worker.yielded.connect(on_event)
    from napari_cavlog._qt.common import wait_until

    assert wait_until(lambda: not tune.running, timeout=120)
    assert seen and tune.result is None and "cancelled" in tune.status.text()
    assert tune.progress.value() < 500
    ckpt = tmp_path / "run" / "checkpoint.pt"
    if ckpt.exists():  # when fit saves on cancel, the checkpoint must load and be resumable
        from cavlog_core.checkpoint import load_checkpoint

        loaded = load_checkpoint(ckpt)
        assert 0 < loaded.meta["iteration"] < 500


@pytest.mark.parametrize("error", [RuntimeError("CUDA error: out of memory"),
                                   OSError(28, "No space left on device"), MemoryError()])
def test_a_failing_job_is_reported_and_the_widgets_can_run_again(make_napari_viewer, assets,
                                                                 tmp_path, monkeypatch, error):
    import napari_cavlog._qt.anomaly as anomaly_module
    import napari_cavlog._qt.finetune as finetune_module

    def broken(*args, **kwargs):
        raise error
        yield

    viewer = make_napari_viewer()
    widget = _widget(viewer, assets)
    real = anomaly_module.analysis_job
    monkeypatch.setattr(anomaly_module, "analysis_job", broken)
    widget.run(block=True)
    assert not widget.running and widget.run_button.isEnabled()
    assert type(error).__name__ in widget.status.text()
    monkeypatch.setattr(anomaly_module, "analysis_job", real)
    widget.run(block=True)  # idle again: the next run works
    assert widget.analysis is not None

    tune = FineTuneWidget(viewer)
    tune.set_start_checkpoint(assets["ckpt"])
    tune.folder_edit.setText(str(assets["healthy"]))
    tune.output_edit.setText(str(tmp_path / "run"))
    tune.iterations_spin.setValue(2)
    monkeypatch.setattr(finetune_module, "finetune_job", broken)
    tune.start(block=True)
    assert not tune.running and tune.start_button.isEnabled()
    assert tune.last_error and type(error).__name__ in tune.last_error


@pytest.mark.parametrize("damage", ["nan_weights", "nan_threshold", "huge_latent"])
def test_hostile_checkpoints_through_both_widgets(make_napari_viewer, assets, tmp_path, damage):
    import torch

    payload = torch.load(assets["ckpt"], map_location="cpu", weights_only=True)
    if damage == "nan_weights":
        for module in payload["modules"].values():
            for k, t in module.items():
                if t.is_floating_point():
                    module[k] = torch.full_like(t, float("nan"))
    elif damage == "nan_threshold":
        payload["thresholds"] = {k: float("nan") for k in payload["thresholds"]}
    else:
        payload["config"]["model"]["latent_dim"] = 10**7
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    viewer = make_napari_viewer()
    widget = _widget(viewer, assets)
    widget.set_checkpoint(bad)
    widget.run(block=True)
    assert not widget.running and widget.analysis is None
    assert "bad.pt" in widget.status.text() and "\n" not in widget.status.text()
    widget.set_checkpoint(assets["ckpt"])
    widget.run(block=True)  # and the next run with a good model works
    assert widget.analysis is not None

    tune = FineTuneWidget(viewer)
    tune.set_start_checkpoint(bad)
    tune.folder_edit.setText(str(assets["healthy"]))
    tune.output_edit.setText(str(tmp_path / "run"))
    tune.iterations_spin.setValue(2)
    tune.start(block=True)
    assert not tune.running and tune.last_error and "bad.pt" in tune.last_error
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_plugin_dock_opens_both_widgets_as_tabs(make_napari_viewer, assets, tmp_path):
    """``napari -w napari-cavlog`` docks the plugin's first widget: both tools, tabbed."""
    from napari_cavlog import CavlogWidget

    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-cavlog")
    assert isinstance(widget, CavlogWidget)
    assert [widget.tabText(i) for i in range(widget.count())] == ["Anomaly segmentation",
                                                                  "Fine-tune"]
    assert isinstance(widget.anomaly, AnomalyWidget)
    assert isinstance(widget.finetune, FineTuneWidget)
    # Once a widget is open, a BraTS folder opens with this plugin, no reader dialog.
    folder = write_synthetic_cases(tmp_path / "BraTS_site", (13,), shape=(48, 48, 24))[0]
    layers = viewer.open(str(folder), plugin=None)  # None: napari chooses, as File > Open does
    assert [layer.name for layer in layers] == ["SYN_0013 FLAIR", "SYN_0013 ground truth"]
