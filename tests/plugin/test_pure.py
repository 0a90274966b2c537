"""Qt-free parts of the napari plugin: axis mapping, live thresholding, job driver, registry,
presets and reader preferences; they import neither napari nor Qt and run without them."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from cavlog_core import drain

# No napari needed: these are the plugin's Qt-free modules (they run on a server without Qt).
from cavlog_core.errors import CavlogError
from cavlog_core.metrics import binary_scores
from napari_cavlog._models import ModelRegistry, demo_checkpoint_path
from napari_cavlog._orient import (
    from_display,
    scale_from_spacing,
    slice_to_display,
    spacing_from_scale,
    to_display,
)
from napari_cavlog._runner import drive
from napari_cavlog._threshold import ThresholdCache


def test_display_mapping_is_an_exact_inverse_and_puts_anterior_up():
    vol = np.arange(4 * 3 * 2).reshape(4, 3, 2)  # (X, Y, Z)
    disp = to_display(vol)
    assert disp.shape == (2, 3, 4) and disp.flags.c_contiguous
    np.testing.assert_array_equal(from_display(disp), vol)
    # display[z, row, col] = vol[col, Y-1-row, z]: row 0 is the most anterior Y.
    assert disp[1, 0, 3] == vol[3, 2, 1]
    assert disp[0, 2, 0] == vol[0, 0, 0]
    np.testing.assert_array_equal(slice_to_display(vol[:, :, 1]), disp[1])
    assert scale_from_spacing((0.5, 0.8, 3.0)) == (3.0, 0.8, 0.5)
    assert spacing_from_scale((3.0, 0.8, 0.5)) == (0.5, 0.8, 3.0)
    with pytest.raises(ValueError, match="3D"):
        to_display(np.zeros((2, 2)))


def _scan(seed: int = 0, shape=(12, 20, 24)):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    brain = zz**2 / 0.9 + yy**2 / 0.8 + xx**2 / 0.8 < 1
    gt = ((zz - 0.1) ** 2 + (yy - 0.2) ** 2 + (xx + 0.1) ** 2 < 0.12) & brain
    gt[0, 0, 0] = True  # a lesion voxel outside the brain: always a false negative
    anomaly = np.where(brain, 0.6 * rng.random(shape) + 0.4 * gt, 0).astype(np.float32)
    anomaly[brain & (rng.random(shape) < 0.05)] = 0.5  # ties exactly at a threshold
    return anomaly, brain, gt


@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.5, 0.7, 0.9999, 1.0, 1.5])
def test_threshold_cache_equals_core_binary_scores(threshold):
    anomaly, brain, gt = _scan()
    cache = ThresholdCache(anomaly, brain, gt)
    from cavlog_core.maps import mask_in_brain

    mask = cache.mask(threshold)
    expected_mask = mask_in_brain(anomaly, brain, threshold)  # the one definition, in the core
    assert np.array_equal(expected_mask, brain & (anomaly >= threshold))
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask.astype(bool), expected_mask)
    assert cache.metrics(threshold) == pytest.approx(binary_scores(expected_mask, gt), abs=1e-12)
    assert cache.n_positive(threshold) == int(expected_mask.sum())
    for z in (0, 5, 11):
        assert cache.slice_metrics(z) == pytest.approx(
            binary_scores(expected_mask[z], gt[z]), abs=1e-12)
    errors = cache.errors()
    np.testing.assert_array_equal(errors == 1, expected_mask & ~gt)
    np.testing.assert_array_equal(errors == 2, ~expected_mask & gt)
    assert set(np.unique(errors)) <= {0, 1, 2}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_cache_best_threshold_is_the_core_oracle(seed):
    from cavlog_core.metrics import pixel_metrics

    anomaly, brain, gt = _scan(seed)  # with many exact ties at 0.5
    best = pixel_metrics(anomaly, gt, mask=brain)
    assert ThresholdCache(anomaly, brain, gt).best_threshold() == best["threshold_best"]
    assert ThresholdCache(anomaly, brain).best_threshold() is None


def test_threshold_cache_hand_computed_and_without_ground_truth():
    anomaly = np.array([0.1, 0.4, 0.4, 0.8, 0.9, 0.0], np.float32).reshape(1, 1, 6)
    brain = np.array([1, 1, 1, 1, 1, 0], bool).reshape(1, 1, 6)
    gt = np.array([0, 1, 0, 1, 0, 1], bool).reshape(1, 1, 6)
    cache = ThresholdCache(anomaly, brain, gt)
    # t = 0.4: predicted {1, 2, 3, 4}; tp = {1, 3}, fp = {2, 4}, fn = {5} (outside the brain).
    assert cache.counts(0.4) == (2, 2, 1)
    m = cache.metrics(0.4)
    assert m["dice"] == pytest.approx(4 / 7) and m["iou"] == pytest.approx(2 / 5)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(2 / 3)
    assert cache.counts(0.95) == (0, 0, 3)
    # F1 over the brain voxels (lesion in brain: 1, 3): t = 0.8 gives tp 1, fp 1 -> 2/4; t = 0.4
    # gives 2 * 2 / (2 + 2 + 2) = 2/3, the best; t = 0.1 gives 4/7.
    assert cache.best_threshold() == pytest.approx(0.4)
    pr = cache.pr_curve(n=11)
    assert pr.thresholds.max() <= 0.9 + 1e-9  # empty masks (t > 0.9) are left out
    counts, edges = cache.histogram(bins=10)
    assert counts.sum() == 5 and edges[0] == 0 and edges[-1] == 1

    plain = ThresholdCache(anomaly, brain)
    assert plain.metrics(0.4) is None and plain.slice_metrics(0) is None
    assert plain.pr_curve() is None
    np.testing.assert_array_equal(plain.mask(0.4).ravel(), [0, 1, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="threshold"):
        plain.mask(float("nan"))
    with pytest.raises(ValueError, match="shape"):
        ThresholdCache(anomaly, brain[..., :3])


def test_threshold_cache_mask_is_one_shared_buffer():
    anomaly, brain, gt = _scan(1)
    cache = ThresholdCache(anomaly, brain, gt)
    first = cache.mask(0.2)
    second = cache.mask(0.8)
    assert first is second is cache.buffer
    assert cache.threshold == 0.8


def _events(n: int, log: list):
    try:
        yield from range(n)
        return "result"
    finally:
        log.append("closed")


def test_drive_returns_result_and_cancels_by_closing_the_core_generator():
    log: list = []
    gen = drive(lambda: _events(3, log), threading.Event())
    assert list(_collect(gen)) == [0, 1, 2, ("returned", "result", False, None)]
    assert log == ["closed"]

    log.clear()
    cancel = threading.Event()
    gen = drive(lambda: _events(100, log), cancel)
    assert next(gen) == 0
    cancel.set()
    outcome = drain(gen)
    assert outcome.cancelled and outcome.result is None
    assert log == ["closed"]  # the core's finally ran in the driving thread


def test_drive_turns_expected_errors_into_a_message():
    def failing():
        yield 1
        raise CavlogError("scan.nii.gz: corrupt")

    outcome = drain(drive(failing, threading.Event()))
    assert outcome.error == "scan.nii.gz: corrupt" and not outcome.cancelled

    def bug():
        raise KeyError("bug")
        yield

    # Any other failure also ends the job with one line (a widget must never wait forever).
    outcome = drain(drive(bug, threading.Event()))
    assert outcome.error == "KeyError: 'bug'" and outcome.unexpected and outcome.result is None

    def full_disk():
        yield 1
        raise OSError(28, "No space left on device")

    outcome = drain(drive(full_disk, threading.Event()))
    assert outcome.error == "OSError: [Errno 28] No space left on device"


def _collect(gen):
    while True:
        try:
            yield next(gen)
        except StopIteration as stop:
            yield ("returned", stop.value.result, stop.value.cancelled, stop.value.error)
            return


def test_model_registry_deduplicates_and_notifies(tmp_path):
    registry = ModelRegistry()
    calls = []
    registry.subscribe(lambda: calls.append(1))
    a = registry.add(tmp_path / "run" / "checkpoint.pt", origin="finetuned")
    b = registry.add(tmp_path / "run" / ".." / "run" / "checkpoint.pt")
    assert a is b and len(registry.entries()) == 1 and calls == [1]
    assert a.label == "run/checkpoint.pt" and a.origin == "finetuned"
    assert demo_checkpoint_path().name == "demo.pt"


def test_finetune_problem_flags_bad_inputs(tmp_path, make_case):
    from napari_cavlog._jobs import finetune_problem

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "choose" in finetune_problem("", str(tmp_path / "out"), None)
    assert "no cases found" in finetune_problem(str(empty), str(tmp_path / "out"), None)
    data = make_case("H1", root=tmp_path / "data").parent
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert "not a folder" in finetune_problem(str(data), str(blocker), None)
    assert "not writable" in finetune_problem(str(data), str(blocker / "sub"), None)
    assert "not found" in finetune_problem(str(data), str(tmp_path / "out"), tmp_path / "x.pt")
    assert finetune_problem(str(data), str(tmp_path / "out"), None) is None
    (tmp_path / "out" / "checkpoint.pt").write_bytes(b"")
    assert "already holds a run" in finetune_problem(str(data), str(tmp_path / "out"), None)


def test_plugin_imports_no_qt_outside_its_qt_package():
    """Only ``napari_cavlog._qt`` imports Qt (or napari's Qt side): every other module of the
    plugin imports without it."""
    code = (
        "import importlib, pkgutil, sys, napari_cavlog\n"
        "for m in pkgutil.iter_modules(napari_cavlog.__path__, 'napari_cavlog.'):\n"
        "    if not m.name.startswith('napari_cavlog._qt'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'magicgui', 'superqt', 'vispy'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_training_config_for_finetuning_and_from_scratch():
    from cavlog_core.config import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
    from napari_cavlog._jobs import FineTuneSettings, training_config

    base = RunConfig(preprocess=PreprocessConfig(resolution=128, slices="central:10"),
                     model=ModelConfig(resolution=128, width=0.25))
    kw = FineTuneSettings(iterations=50, lr=3e-4, lam=5.0, p=0.3, t=10.0, batch_size=16,
                          device="cpu", resolution=64, width=0.5, precision="fp32")
    tuned = training_config(base, kw)
    assert tuned.model == base.model  # the weights fix the architecture
    assert tuned.preprocess.resolution == 128 and tuned.preprocess.slices == "brain"
    t = tuned.train
    assert (t.iterations, t.lr, t.lam, t.p, t.t, t.batch_size, t.device) == (
        50, 3e-4, 5.0, 0.3, 10.0, 16, "cpu")
    assert t.warmup_iterations == 0 and t.split_fractions == (1.0, 0.0, 0.0)
    assert t.checkpoint_every == 50

    scratch = training_config(None, kw)
    assert scratch.model.resolution == scratch.preprocess.resolution == 64
    assert scratch.model.width == 0.5
    assert scratch.train.warmup_iterations == min(TrainConfig().warmup_iterations, 10)


def test_reader_preference_is_added_once_and_never_overrides_the_user():
    from types import SimpleNamespace

    from napari_cavlog._reader import READER_PATTERNS, prefer_this_reader

    settings = SimpleNamespace(plugins=SimpleNamespace(extension2reader={"*.nii": "other"}))
    added = prefer_this_reader(settings)
    assert "*.nii" not in added and set(added) == set(READER_PATTERNS) - {"*.nii"}
    prefs = settings.plugins.extension2reader
    assert prefs["*.nii"] == "other" and prefs["*.nii.gz"] == "napari-cavlog"
    assert prefer_this_reader(settings) == []  # second call: nothing to add


def test_both_napari_manifests_are_the_same():
    root = Path(__file__).resolve().parents[2]
    assert (root / "napari.yaml").read_text() == \
        (root / "src" / "napari_cavlog" / "napari.yaml").read_text()


def test_finetune_config_turns_on_cpu_bf16_with_precision_auto(monkeypatch):
    from cavlog_core import device as devmod
    from napari_cavlog._jobs import FineTuneSettings, training_config

    def tiny(precision):
        return FineTuneSettings(iterations=10, batch_size=4, device="cpu", resolution=64,
                                width=0.125, precision=precision)

    monkeypatch.setattr(devmod, "cpu_bf16_units", lambda: ("amx_bf16",))
    assert training_config(None, tiny("auto")).train.cpu_bf16
    assert not training_config(None, tiny("fp32")).train.cpu_bf16
    monkeypatch.setattr(devmod, "cpu_bf16_units", lambda: ())
    assert not training_config(None, tiny("auto")).train.cpu_bf16


def test_finetune_settings_defaults_come_from_the_core_config():
    from cavlog_core.config import FINETUNE_ITERATIONS, ModelConfig, TrainConfig
    from napari_cavlog._jobs import FineTuneSettings

    d, train, model = FineTuneSettings(), TrainConfig(), ModelConfig()
    assert (d.lr, d.lam, d.p, d.t, d.batch_size) == (train.lr, train.lam, train.p, train.t,
                                                     train.batch_size)
    assert (d.resolution, d.width, d.iterations) == (model.resolution, model.width,
                                                     FINETUNE_ITERATIONS)
