"""The anomaly widget's Qt-free analysis state (``napari_cavlog._controller``) and the reader's
``Case`` kept by reference; duck-typed layers, no napari and no Qt needed.

The scan is tiny and hand-made, canonical ``(X, Y, Z) = (6, 3, 2)`` at 2 mm (a voxel is
0.008 mL), brain = ``x >= 1``:

* ground truth: ``(4, 1, 0)`` and ``(5, 1, 0)`` (a lesion of 2 voxels), and ``(0, 0, 1)``
  outside the brain (always a false negative);
* map: 0.1 in the brain, 0.9 at ``(4, 1, 0)``, 0.5 at ``(5, 1, 0)``, 0.6 at ``(1, 1, 1)`` (a
  false positive three voxels away from the lesion), 0 outside the brain.

At t = 0.45 the mask is those three voxels: tp 2, fp 1, fn 1, so DICE 4/6, IoU 2/4, precision
2/3, recall 2/3, and two lesions (0.016 and 0.008 mL). At t = 0.7 only ``(4, 1, 0)``: tp 1,
fp 0, fn 2, DICE 2/4, IoU 1/3, precision 1, recall 1/3.
"""

from __future__ import annotations

import copy
import functools
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

# No napari needed: the controller, registry and layer helpers are Qt-free and import no napari.
from cavlog_core.data.io import case_from_arrays
from napari_cavlog._controller import (
    KEEP,
    AnalysisController,
    Choice,
    RunSettings,
    is_flair_candidate,
    is_gt_candidate,
    layer_kind,
)
from napari_cavlog._jobs import analysis_job
from napari_cavlog._layers import (
    CASE_KEY,
    CaseRef,
    case_from_layer,
    case_layer_data,
    derived_metadata,
    reader_case,
)
from napari_cavlog._orient import to_display
from napari_cavlog._runner import drive

THRESHOLDS = {"healthy_p95": 0.3, "healthy_fpr5": 0.45, "healthy_fpr1": 0.7}


# ------------------------------------------------------------------------------ fake napari
class _Layer:
    """A napari layer as far as the plugin uses one."""

    def __init__(self, data, *, name="layer", metadata=None, scale=(1.0, 1.0, 1.0),
                 translate=(0.0, 0.0, 0.0), **_style):
        self.data = data
        self.name = name
        self.metadata = dict(metadata or {})  # napari copies the top level only
        self.scale = tuple(scale)
        self.translate = tuple(translate)
        self.visible = False
        self.opacity = 1.0
        self.contrast_limits = None
        self.refreshes = 0

    def refresh(self, **_kwargs):
        self.refreshes += 1

    def data_to_world(self, point):
        return np.asarray(point, float) * np.asarray(self.scale) + np.asarray(self.translate)


class Image(_Layer):
    pass


class Labels(_Layer):
    contour = 0


class Points(_Layer):
    pass


class Viewer:
    def __init__(self, *layers):
        self.layers = list(layers)


def _make_layer(role, data, *, name, metadata, source, opacity=1.0):
    layer = (Image if role == "anomaly" else Labels)(
        data, name=name, metadata=metadata, scale=source.scale, translate=source.translate)
    layer.opacity = opacity
    return layer


def _from_layer_data(item):
    data, kwargs, kind = item
    return (Image if kind == "image" else Labels)(data, **kwargs)


def _reader_layer(case_id, *, role, with_case=True):
    meta = {"cavlog": {"case_id": case_id, "role": role}}
    kind = Image if role in ("flair", "anomaly") else Labels
    return kind(np.zeros((2, 3, 6), np.float32), name=f"{case_id} {role}", metadata=meta)


def _controller(viewer, chosen=None):
    box = {"flair": chosen}
    control = AnalysisController(viewer, chosen=lambda: box["flair"], make_layer=_make_layer)
    return control, box


# ------------------------------------------------------------------------------ the tiny scan
def _tiny_case(case_id="TINY"):
    shape = (6, 3, 2)
    brain = np.zeros(shape, bool)
    brain[1:] = True
    seg = np.zeros(shape, np.uint8)
    seg[4, 1, 0] = seg[5, 1, 0] = 2
    seg[0, 0, 1] = 1
    anomaly = np.where(brain, 0.1, 0.0).astype(np.float32)
    anomaly[4, 1, 0], anomaly[5, 1, 0], anomaly[1, 1, 1] = 0.9, 0.5, 0.6
    flair = (100 * anomaly + 5).astype(np.float32)
    case = case_from_arrays(flair, seg=seg, brain_mask=brain,
                            affine=np.diag([2.0, 2.0, 2.0, 1.0]), case_id=case_id)
    return case, anomaly


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    """``predict_volume`` replaced by the tiny map (streamed slice by slice); records the Case
    each run was given. The checkpoint is an empty file (never loaded)."""
    import importlib

    import napari_cavlog._jobs as jobs

    # The module, not the package's ``predict`` function of the same name.
    predict = importlib.import_module("cavlog_core.inference.predict")

    seen: list = []
    maps: dict[str, np.ndarray] = {}

    def fake_predict(loaded, case, **_kwargs):
        seen.append(case)
        anomaly = maps[case.case_id]
        for z in range(anomaly.shape[2]):
            yield SimpleNamespace(done=z + 1, total=anomaly.shape[2], z=z,
                                  slice_map=anomaly[:, :, z].copy())
        return SimpleNamespace(anomaly=anomaly, thresholds=dict(THRESHOLDS))

    monkeypatch.setattr(predict, "predict_volume", fake_predict)
    monkeypatch.setattr(jobs, "load_checkpoint_cached",
                        lambda path, device: SimpleNamespace(thresholds=THRESHOLDS, meta=None))
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"")
    return SimpleNamespace(seen=seen, maps=maps, ckpt=ckpt)


def _open_case(viewer, case):
    """What napari does with the reader's layer data: layers over the very same arrays."""
    layers = [_from_layer_data(item) for item in case_layer_data(case)]
    viewer.layers.extend(layers)
    return layers


def _run(control, flair, gt, ckpt, *, shown_z=0):
    """One run as the widget drives it; returns (plan, shown-slice redraws, finished)."""
    plan = control.prepare_run(flair, gt, RunSettings(Path(ckpt), "cpu", 4), opacity=0.8)
    gen = drive(functools.partial(analysis_job, **plan.kwargs), threading.Event())
    redraws = []
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return plan, redraws, control.finish(stop.value)
        redraws.append(control.stream(event, shown_z=shown_z))


# ------------------------------------------------------------------------------ layer roles
def test_layer_kinds_and_candidates():
    flair = _reader_layer("A", role="flair")
    gt = _reader_layer("A", role="ground_truth")
    result = _reader_layer("A", role="anomaly")
    user = Labels(np.zeros((2, 3, 6), np.uint8))
    points = Points(np.zeros((4, 2)))
    assert [layer_kind(x) for x in (flair, gt, user, points)] == ["image", "labels", "labels",
                                                                  None]
    assert is_flair_candidate(flair) and not is_flair_candidate(result)
    assert not is_flair_candidate(gt) and not is_flair_candidate(points)
    assert is_gt_candidate(gt) and is_gt_candidate(user) and not is_gt_candidate(flair)


def test_default_flair_and_ground_truth_matching_by_case_id():
    a, a_gt = _reader_layer("A", role="flair"), _reader_layer("A", role="ground_truth")
    b, b_gt = _reader_layer("B", role="flair"), _reader_layer("B", role="ground_truth")
    c = _reader_layer("C", role="flair")  # a case without ground truth
    plain = Image(np.zeros((2, 3, 6)), name="plain")  # not from the reader: no case id
    user = Labels(np.zeros((2, 3, 6), np.uint8), name="my labels")
    result = _reader_layer("C", role="anomaly")
    control, _ = _controller(Viewer(a, a_gt, b, b_gt, c, plain, user, result))

    assert control.default_flair(None) == Choice(True, plain)  # the newest image, not a result
    assert control.default_flair(a) is KEEP
    assert control.match_ground_truth(b, None) == Choice(True, b_gt)
    assert control.match_ground_truth(a, b_gt) == Choice(True, a_gt)  # the other case's GT goes
    assert control.match_ground_truth(a, a_gt) is KEEP
    assert control.match_ground_truth(c, b_gt) == Choice(True, None)  # C has none
    assert control.match_ground_truth(c, user) is KEEP  # the user's own choice stays
    assert control.match_ground_truth(plain, b_gt) is KEEP
    assert control.match_ground_truth(None, b_gt) is KEEP
    assert _controller(Viewer())[0].default_flair(None) is KEEP

    # A reader's ground truth is drawn as a contour once; other labels never.
    assert control.claim_contour(a_gt) and not control.claim_contour(a_gt)
    assert not control.claim_contour(user) and not control.claim_contour(None)


def test_inserted_layers_are_offered_unless_a_run_is_in_progress():
    control, _ = _controller(Viewer())
    flair, gt = _reader_layer("A", role="flair"), _reader_layer("A", role="ground_truth")
    assert control.inserted(flair, None, None, running=False) == "flair"
    assert control.inserted(flair, flair, None, running=False) is None
    assert control.inserted(gt, flair, None, running=False) == "ground_truth"
    assert control.inserted(gt, flair, gt, running=False) is None
    assert control.inserted(flair, None, None, running=True) is None
    assert control.inserted(_reader_layer("A", role="anomaly"), None, None, running=False) is None


def test_run_problems_are_one_line_each(tmp_path):
    flair = Image(np.zeros((2, 3, 6), np.float32), name="F")
    control, _ = _controller(Viewer(flair))
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"")
    assert "choose a FLAIR" in control.run_problem(None, None, ckpt)
    assert "expected a 3D volume" in control.run_problem(Image(np.zeros((3, 6)), name="F2"),
                                                        None, ckpt)
    assert "demo model is not installed" in control.run_problem(flair, None, None)
    assert "checkpoint file not found" in control.run_problem(flair, None, tmp_path / "x.pt")
    bad_gt = Labels(np.zeros((2, 3, 5), np.uint8), name="G")
    assert "has shape (2, 3, 5)" in control.run_problem(flair, bad_gt, ckpt)
    assert control.run_problem(flair, Labels(np.zeros((2, 3, 6), np.uint8)), ckpt) is None
    assert "not an image layer" in control.layer_problem(Image(np.zeros((2, 3, 6)), name="X"))
    assert "not an image layer" in control.layer_problem(bad_gt)
    assert control.layer_problem(flair) is None


def test_threshold_is_clamped_and_only_reported_when_it_changes():
    control, _ = _controller(Viewer())
    assert control.threshold == 0.5
    assert control.set_threshold(1.5) == 1.0 and control.threshold == 1.0
    assert control.set_threshold(1.0) is None
    assert control.set_threshold(1.0, force=True) == 1.0
    assert control.set_threshold(-2) == 0.0
    assert control.apply_threshold(0) is None and control.metrics is None  # nothing to threshold
    assert control.settle(min_volume_ml=0.0) is None and control.explorer() is None
    assert control.view().analysed is False and control.view().message is None


# ------------------------------------------------------------------------------ a whole run
def test_a_run_from_reader_layers_to_scores_lesions_and_errors(fake_model):
    case, anomaly = _tiny_case()
    fake_model.maps[case.case_id] = anomaly
    viewer = Viewer()
    flair, gt = _open_case(viewer, case)
    control, _ = _controller(viewer, flair)
    assert control.view().message == "TINY FLAIR: not analysed yet (Run)"

    plan, redraws, done = _run(control, flair, gt, fake_model.ckpt, shown_z=1)
    assert fake_model.seen == [case]
    assert fake_model.seen[0] is case  # the reader's Case itself: nothing rebuilt
    assert plan.kwargs["flair"] is flair.data and plan.message == "running model.pt on TINY FLAIR …"
    job = plan.job
    assert [layer.name for layer in viewer.layers] == [
        "TINY FLAIR", "TINY FLAIR anomaly", "TINY FLAIR mask", "TINY ground truth"]
    assert job.anomaly.opacity == 0.8 and job.anomaly.visible and job.mask.visible
    assert CASE_KEY not in job.anomaly.metadata["cavlog"]  # the Case stays with its FLAIR
    assert redraws == [None, job.anomaly]  # only the shown slice (z = 1) asks for a redraw
    assert done.error is None and done.job is job and done.message == "done: TINY with model.pt"
    np.testing.assert_array_equal(job.anomaly.data, to_display(anomaly))
    assert job.mask.data is done.analysis.cache.buffer  # the cache writes into the layer

    # A finished run starts at FPR 5 % (0.45), which is offered in the preset menu.
    view = control.view()
    assert (view.analysed, view.threshold, view.preset_key, view.show_errors) == (
        True, 0.45, "healthy_fpr5", False)
    assert control.set_threshold(view.threshold, force=True) == 0.45
    redraw = control.apply_threshold(0)
    assert redraw.layers == (job.mask,)
    state = redraw.state
    assert state.positives == 3 and state.volume_ml == pytest.approx(3 * 0.008)
    assert state.metrics == pytest.approx({"dice": 2 / 3, "iou": 0.5, "precision": 2 / 3,
                                           "recall": 2 / 3})
    # Slice z = 0 (display) holds the lesion: tp 2, fp 0, fn 0.
    assert state.slice_metrics["dice"] == pytest.approx(1.0)
    assert control.slice_metrics is state.slice_metrics
    expected = to_display(case.brain_mask & (anomaly >= 0.45))
    np.testing.assert_array_equal(job.mask.data.astype(bool), expected)
    # z = 1 holds the false positive and the out-of-brain lesion voxel: tp 0 -> DICE 0.
    assert control.slice_scores(1)["dice"] == 0.0

    settled = control.settle(min_volume_ml=0.0)
    assert settled.layers == (job.mask,)
    table = settled.lesions
    assert [les.voxels for les in table.lesions] == [2, 1]
    assert table.total_ml == pytest.approx(0.024)
    z, centre = control.lesion_focus(0)  # centroid (4.5, 1, 0) -> display (0, 1, 4.5) x 2 mm
    assert z == 0 and centre == pytest.approx((0.0, 2.0, 9.0))
    assert control.lesion_focus(2) is None
    assert control.update_lesions(min_volume_ml=0.01).lesions[0].voxels == 2
    assert len(control.lesions.lesions) == 1

    control.set_threshold(0.7)
    control.apply_threshold(0)
    assert control.metrics == pytest.approx({"dice": 0.5, "iou": 1 / 3, "precision": 1.0,
                                             "recall": 1 / 3})
    data = control.explorer()
    assert data.threshold == 0.7 and data.counts.sum() == 30 and data.recall is not None

    # The error overlay: false positive 1, false negative 2, over the whole scan.
    assert control.show_errors(True) is None
    errors = job.errors
    assert viewer.layers.index(errors) == viewer.layers.index(job.mask) + 1
    canonical_fn = (case.seg > 0) & ~(case.brain_mask & (anomaly >= 0.7))
    np.testing.assert_array_equal(errors.data == 2, to_display(canonical_fn))
    assert not (errors.data == 1).any()  # at 0.7 the one mask voxel is a true positive
    assert control.view().show_errors
    assert control.show_errors(False) is None and job.errors is None
    assert errors not in viewer.layers


def test_presets_and_the_ground_truth_operating_point(fake_model):
    case, anomaly = _tiny_case()
    fake_model.maps[case.case_id] = anomaly
    viewer = Viewer()
    flair, gt = _open_case(viewer, case)
    control, _ = _controller(viewer, flair)
    before = control.preset_view("healthy_fpr5")
    assert before.healthy_value is None and not before.gt_enabled
    assert "not in this checkpoint" not in before.note  # nothing analysed yet
    assert control.healthy_threshold("healthy_fpr5") is None and control.gt_threshold() is None

    _run(control, flair, gt, fake_model.ckpt)
    view = control.preset_view("healthy_fpr1")
    assert view.healthy_value == 0.7 and view.healthy_text == "Healthy: 0.700" and view.gt_enabled
    assert view.note.startswith("FPR 1 %: expected false-positive rate")
    missing = control.preset_view("healthy_p99")
    assert missing.healthy_value is None and "not in this checkpoint" in missing.note
    assert control.healthy_threshold("healthy_p95") == 0.3
    # F1 over the brain voxels (2 lesion voxels there): t = 0.1 tp 2, fp 28 (F1 4/32);
    # t = 0.5 tp 2, fp 1 (4/5); t = 0.6 tp 1, fp 1 (2/4); t = 0.9 tp 1, fp 0 (2/3).
    assert control.gt_threshold() == pytest.approx(0.5)


def test_a_new_ground_truth_rescores_the_cached_map(fake_model):
    case, anomaly = _tiny_case()
    fake_model.maps[case.case_id] = anomaly
    viewer = Viewer()
    flair, gt = _open_case(viewer, case)
    control, _ = _controller(viewer, flair)
    _run(control, flair, gt, fake_model.ckpt)
    control.set_threshold(0.45)
    control.apply_threshold(0)
    assert control.change_ground_truth(gt, running=False) is None  # the same layer
    assert control.change_ground_truth(None, running=True) is None  # not while running

    change = control.change_ground_truth(None, running=False)
    assert change.error is None and change.errors_off and change.threshold == 0.45
    assert control.metrics is None and control.current.ground_truth is None
    wrong = Labels(np.zeros((2, 3, 5), np.uint8), name="wrong")
    change = control.change_ground_truth(wrong, running=False)
    assert "has shape (2, 3, 5)" in change.error and change.errors_off
    only_fp = Labels(to_display(np.pad(np.ones((1, 1, 1), np.uint8), ((1, 4), (1, 1), (1, 0)))),
                     name="fp only")  # labels exactly the false-positive voxel (1, 1, 1)
    change = control.change_ground_truth(only_fp, running=False)
    assert change.error is None and not change.errors_off
    assert control.metrics == pytest.approx({"dice": 0.5, "iou": 1 / 3, "precision": 1 / 3,
                                             "recall": 1.0})


def test_each_flair_layer_keeps_its_own_results_and_removals_are_forgotten(fake_model):
    one, map_one = _tiny_case("ONE")
    two, _ = _tiny_case("TWO")
    fake_model.maps.update(ONE=map_one, TWO=np.where(two.brain_mask, 0.2, 0).astype(np.float32))
    viewer = Viewer()
    flair_one, gt_one = _open_case(viewer, one)
    flair_two, _ = _open_case(viewer, two)
    control, box = _controller(viewer, flair_one)
    first = _run(control, flair_one, gt_one, fake_model.ckpt)[0].job
    control.set_threshold(0.7)
    control.apply_threshold(0)
    box["flair"] = flair_two
    assert control.current is None and not control.view().analysed
    second = _run(control, flair_two, None, fake_model.ckpt)[0].job
    assert second is not first and control.current is second
    assert control.view().threshold == 0.45 and control.metrics is None
    box["flair"] = flair_one
    assert control.current is first and control.view().threshold == 0.7  # its own threshold
    np.testing.assert_array_equal(first.anomaly.data, to_display(map_one))  # untouched

    control.show_errors(True)
    errors = first.errors
    viewer.layers.remove(errors)
    assert control.removed(errors) and first.errors is None  # the box must be unticked
    mask_two = second.mask
    viewer.layers.remove(mask_two)
    assert not control.removed(mask_two) and second.mask is None  # not the current case
    viewer.layers.remove(flair_two)
    control.removed(flair_two)
    assert control.results.get(flair_two) is None and control.results.get(flair_one) is first


def test_a_cancelled_or_failed_run_leaves_no_analysis(fake_model):
    from napari_cavlog._runner import Outcome

    case, anomaly = _tiny_case()
    fake_model.maps[case.case_id] = anomaly
    viewer = Viewer()
    flair, gt = _open_case(viewer, case)
    control, _ = _controller(viewer, flair)
    plan = control.prepare_run(flair, gt, RunSettings(fake_model.ckpt), opacity=0.5)
    done = control.finish(Outcome(None, cancelled=True))
    assert done.cancelled and done.job is plan.job and control.job is None
    assert control.analysis is None and control.view().analysed is False
    control.prepare_run(flair, gt, RunSettings(fake_model.ckpt), opacity=0.5)
    done = control.finish(Outcome(None, error="model.pt: corrupt"))
    assert done.error == "model.pt: corrupt" and control.analysis is None


# ------------------------------------------------------------------------------ Case by reference
def test_case_from_layer_reuses_the_reader_case_until_the_data_is_replaced():
    case, _ = _tiny_case()
    (data, kwargs, _kind), (_seg, seg_kwargs, _) = case_layer_data(case)
    meta = kwargs["metadata"]
    assert isinstance(meta["cavlog"][CASE_KEY], CaseRef)
    assert CASE_KEY not in seg_kwargs["metadata"]["cavlog"]  # the FLAIR layer only
    assert case_from_layer(data, meta, kwargs["scale"]) is case
    assert reader_case(data, meta) is case

    copied = data.copy()  # e.g. the user assigned a new array to layer.data
    assert reader_case(copied, meta) is None
    rebuilt = case_from_layer(copied, meta, kwargs["scale"])
    assert rebuilt is not case and rebuilt.case_id == case.case_id
    np.testing.assert_array_equal(rebuilt.flair, case.flair)
    np.testing.assert_array_equal(rebuilt.brain_mask, case.brain_mask)
    np.testing.assert_allclose(rebuilt.affine, case.affine)

    # Copies of the metadata share the reference (no volume copied); pickling drops it.
    assert copy.deepcopy(meta)["cavlog"][CASE_KEY] is meta["cavlog"][CASE_KEY]
    assert pickle.loads(pickle.dumps(meta))["cavlog"][CASE_KEY].case is None
    assert CASE_KEY not in derived_metadata(meta, "mask")["cavlog"]
    without = {"cavlog": {k: v for k, v in meta["cavlog"].items() if k != CASE_KEY}}
    assert case_from_layer(data, without, kwargs["scale"]) is not case  # not the reader's: rebuilt


def test_a_run_reuses_the_reader_case_and_rebuilds_replaced_data(fake_model):
    case, anomaly = _tiny_case()
    fake_model.maps[case.case_id] = anomaly
    viewer = Viewer()
    flair, gt = _open_case(viewer, case)
    control, _ = _controller(viewer, flair)
    _run(control, flair, gt, fake_model.ckpt)
    assert fake_model.seen[-1] is case

    flair.data = flair.data.copy()  # the user replaced the layer's data
    flair.data[0, 0, 1] += 1.0
    _, _, done = _run(control, flair, gt, fake_model.ckpt)
    rebuilt = fake_model.seen[-1]
    assert rebuilt is not case and done.error is None
    assert rebuilt.flair[1, 2, 0] == case.flair[1, 2, 0] + 1.0  # display (0, 0, 1) -> (1, 2, 0)
    np.testing.assert_array_equal(rebuilt.brain_mask, case.brain_mask)


def test_writer_ignores_the_case_in_the_metadata(tmp_path):
    import nibabel as nib

    from napari_cavlog._writer import write_image

    case, _ = _tiny_case()
    data, kwargs, _ = case_layer_data(case)[0]
    out = write_image(str(tmp_path / "flair.nii.gz"), data, kwargs)
    np.testing.assert_array_equal(np.asarray(nib.load(out[0]).dataobj), case.flair)


def test_the_controller_imports_neither_napari_nor_qt():
    code = (
        "import sys, napari_cavlog._controller\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('napari', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'vispy'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
