"""fit(): a tiny real training run, the data-folder route, CLI train/finetune and failure modes."""

import importlib
import json
import math
import warnings

import numpy as np
import pytest
import torch

from cavlog_core import cli
from cavlog_core.config import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from cavlog_core.data import SliceArrays
from cavlog_core.errors import CavlogError
from cavlog_core.methods.constrained import ConstrainedVAE
from cavlog_core.training import FitResult, TrainEvent, fit, load_checkpoint, run_fit


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and a busy machine makes them spin.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def disks(n: int, r: int = 64, seed: int = 0) -> SliceArrays:
    """Healthy synthetic 'slices': a textured bright disk (the brain) on a dark background."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:r, 0:r]
    cx, cy = g.uniform(0.4 * r, 0.6 * r, (2, n))
    rad = g.uniform(0.25 * r, 0.4 * r, n)
    d = np.hypot(xx[None] - cx[:, None, None], yy[None] - cy[:, None, None])
    brain = d < rad[:, None, None]
    img = np.where(brain, 0.5 + 0.3 * np.cos(d / 3) ** 2, 0).astype(np.float16)
    return SliceArrays(img[:, None], brain[:, None], None, np.zeros(n, np.int64),
                       np.arange(n), ("disks",))


def tiny_config(**train) -> RunConfig:
    opts = {"iterations": 60, "warmup_iterations": 20, "batch_size": 16, "lr": 1e-3,
            "log_every": 1, "device": "cpu", **train}
    return RunConfig(preprocess=PreprocessConfig(resolution=64, slices="brain"),
                     model=ModelConfig(resolution=64, width=0.125),
                     train=TrainConfig(**opts))


def drain(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def test_tiny_run_reduces_loss_and_expands_attention(tmp_path):
    torch.manual_seed(0)
    # 80 constrained steps: with batch statistics and lr 1e-3 the barrier phase oscillates for
    # its first ~40 steps (where it relapses depends on the CPU's kernels), then settles.
    cfg = tiny_config(iterations=100)
    events, result = drain(fit(cfg, disks(64), out_dir=tmp_path / "run"))
    steps = [e for e in events if e.phase in ("warmup", "constrained")]
    assert [e.iteration for e in steps] == list(range(1, 101))
    assert all(isinstance(e, TrainEvent) and e.total_iterations == 100 for e in steps)
    assert {e.phase for e in steps[:20]} == {"warmup"}
    assert {e.phase for e in steps[20:]} == {"constrained"}
    assert all(e.losses["constraint"] == 0 for e in steps[:20])
    assert events[-1].phase == "done" and events[-2].phase == "validate"

    def mean(key, part):
        return float(np.mean([e.losses[key] for e in part]))

    # warm-up: the VAE learns to reconstruct
    assert mean("recon", steps[15:20]) < mean("recon", steps[:5]) - 0.05
    # constrained phase: the barrier drives the loss down and the attention up
    assert mean("loss", steps[-10:]) < 0.5 * mean("loss", steps[20:25])
    assert mean("mean_attention", steps[-10:]) > mean("mean_attention", steps[15:20]) + 0.15
    assert mean("mean_fc", steps[-10:]) < mean("mean_fc", steps[15:20]) - 0.15
    assert steps[-1].mean_fc == steps[-1].losses["mean_fc"]
    assert steps[-1].lr == 1e-3 and steps[-1].images_per_s > 0

    assert isinstance(result, FitResult)
    assert result.iterations == 100 and result.checkpoint_path.is_file()
    assert 0.0 <= result.healthy_fc_satisfied <= 1.0
    keys = ["healthy_p85", "healthy_p90", "healthy_p95", "healthy_p98", "healthy_p99"]
    fpr_keys = ["healthy_fpr0.5", "healthy_fpr1", "healthy_fpr5"]
    assert list(result.thresholds) == keys + fpr_keys
    values = [result.thresholds[k] for k in keys]
    assert values == sorted(values) and 0 < values[0] and values[-1] <= 1
    fpr = [result.thresholds[k] for k in fpr_keys]  # a lower stated rate, a higher threshold
    assert fpr == sorted(fpr, reverse=True) and 0 < fpr[-1] and fpr[0] <= 1

    lines = [json.loads(s) for s in result.history_path.read_text().splitlines()]
    assert [ln["iteration"] for ln in lines[:100]] == list(range(1, 101))
    assert lines[-1]["phase"] == "done"
    assert lines[-1]["losses"]["healthy_fc_satisfied"] == result.healthy_fc_satisfied
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert RunConfig.from_dict(stored) == cfg

    ck = load_checkpoint(result.checkpoint_path)
    assert ck.thresholds == pytest.approx(result.thresholds)
    assert ck.meta["healthy_fc_satisfied"] == pytest.approx(result.healthy_fc_satisfied)
    assert not ck.model.training


def _read_when_due(monkeypatch):
    """Make fit read the logs as it does on a GPU: only before log lines, checkpoints, the end."""
    fit_module = importlib.import_module("cavlog_core.training.fit")
    monkeypatch.setattr(fit_module, "_reads_every_iteration", lambda device: False)


@pytest.mark.parametrize("deferred", [False, True])
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, deferred):
    if deferred:  # iteration 5 is not read on its own: found in the window read at 6
        _read_when_due(monkeypatch)
    real = ConstrainedVAE.training_step

    def flaky(self, modules, optimizers, batch, iteration):
        logs = real(self, modules, optimizers, batch, iteration)
        return {**logs, "loss": math.nan} if iteration == 4 else logs

    monkeypatch.setattr(ConstrainedVAE, "training_step", flaky)
    cfg = tiny_config(iterations=8, warmup_iterations=2, batch_size=4, checkpoint_every=2,
                      log_every=10)
    with pytest.raises(CavlogError, match=r"iteration 5: the loss is nan") as err:
        run_fit(cfg, disks(8), out_dir=tmp_path)
    assert "\n" not in str(err.value) and "last good checkpoint" in str(err.value)
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck.meta["iteration"] == 4 and ck.meta["extra"]["finished"] is False


def test_cancel_after_an_unread_nan_loss_writes_no_checkpoint(tmp_path, monkeypatch):
    _read_when_due(monkeypatch)
    real = ConstrainedVAE.training_step

    def flaky(self, modules, optimizers, batch, iteration):
        logs = real(self, modules, optimizers, batch, iteration)
        return {**logs, "loss": torch.tensor(math.nan)} if iteration == 1 else logs

    monkeypatch.setattr(ConstrainedVAE, "training_step", flaky)
    cfg = tiny_config(iterations=8, warmup_iterations=2, batch_size=4, log_every=10)
    gen = fit(cfg, disks(8), out_dir=tmp_path)
    for event in gen:
        if event.iteration == 3:  # iterations 2 (NaN) and 3 are not read yet
            break
    gen.close()
    assert not (tmp_path / "checkpoint.pt").exists()


def test_deferred_log_reads_give_the_same_run(tmp_path, monkeypatch):
    """Reading the logs in windows (the GPU path) changes neither the weights nor log.jsonl."""
    cfg = tiny_config(iterations=10, warmup_iterations=4, batch_size=4, log_every=3,
                      checkpoint_every=4)
    every_events, every = drain(fit(cfg, disks(8), out_dir=tmp_path / "every"))
    _read_when_due(monkeypatch)
    deferred_events, deferred = drain(fit(cfg, disks(8), out_dir=tmp_path / "deferred"))

    def steps(events):
        return [e for e in events if e.phase in ("warmup", "constrained")]

    assert all("loss" in e.losses for e in steps(every_events))
    # read: the first iteration, log lines (3, 6, 9), checkpoints (4, 8) and the last
    assert [e.iteration for e in steps(deferred_events) if e.losses] == [1, 3, 4, 6, 8, 9, 10]
    assert all(math.isnan(e.mean_fc) for e in steps(deferred_events) if not e.losses)

    def history(result):
        lines = [json.loads(s) for s in result.history_path.read_text().splitlines()]
        return [(ln["iteration"], ln["phase"], ln["losses"]) for ln in lines]

    assert history(deferred) == history(every)
    a, b = load_checkpoint(every.checkpoint_path), load_checkpoint(deferred.checkpoint_path)
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                            strict=True):
        assert torch.equal(x, y), name


def test_refuses_to_overwrite_and_needs_healthy_slices(tmp_path, make_case):
    cfg = tiny_config(iterations=1, warmup_iterations=0, batch_size=2)
    run_fit(cfg, disks(4), out_dir=tmp_path / "a")
    with pytest.raises(CavlogError, match="already exists"):
        run_fit(cfg, disks(4), out_dir=tmp_path / "a")
    with pytest.raises(CavlogError, match=r"no checkpoint\.pt to resume"):
        run_fit(cfg, disks(4), out_dir=tmp_path / "b", resume=True)
    # every selected slice holds lesion -> one clear line
    root = tmp_path / "sick"
    for i in range(2):
        make_case(f"SICK_{i}", root=root, seed=i)
    sick = RunConfig(preprocess=PreprocessConfig(resolution=64, slices="central:2"),
                     model=cfg.model, train=TrainConfig(**{**cfg.train.__dict__,
                                                           "split_fractions": (1.0, 0.0, 0.0)}))
    with pytest.raises(CavlogError, match="no lesion-free slices") as err:
        run_fit(sick, root, out_dir=tmp_path / "c", cache_dir=tmp_path / "cache")
    assert "\n" not in str(err.value)


def test_epochs_and_explicit_validation_slices(tmp_path):
    cfg = tiny_config(iterations=100, epochs=2, warmup_iterations=1, batch_size=4)
    events, result = drain(fit(cfg, disks(9), out_dir=tmp_path, val_data=disks(5, seed=3)))
    steps = [e for e in events if e.phase in ("warmup", "constrained")]
    assert result.iterations == 4 and [e.epoch for e in steps] == [0, 0, 1, 1]  # 9 // 4 = 2
    extra = load_checkpoint(result.checkpoint_path).meta["extra"]
    assert extra["train_slices"] == 9 and extra["val_slices"] == 5


def _cli(monkeypatch, argv):
    # Only the two subcommands under test, so the test does not depend on the others.
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("train", "finetune"))
    return cli.main([str(a) for a in argv])


def test_cli_train_on_a_folder_then_finetune(tmp_path, make_case, monkeypatch, capsys):
    root = tmp_path / "data"
    for i in range(3):
        make_case(f"H_{i}", root=root, seed=i, lesion=False)
    make_case("L_0", root=root, seed=9, lesion=True)
    common = ["--device", "cpu", "--cache-dir", tmp_path / "cache"]
    rc = _cli(monkeypatch, [
        "train", root, "--out", tmp_path / "run", "--resolution", 64, "--width", 0.125,
        "--iterations", 4, "--warmup-iterations", 2, "--batch-size", 4, "--lr", 1e-3,
        "--slices", "brain", "--split-fractions", "1,0,0", "--log-every", 2, *common])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "checkpoint:" in out and "healthy slices with f_c(a) <= 0" in out and "p95=" in out
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ck.config.model.width == 0.125 and ck.config.train.iterations == 4
    assert ck.meta["extra"]["train_slices"] > 8  # lesion-free slices of all four cases

    argv = ["finetune", tmp_path / "run" / "checkpoint.pt", root / "H_0", "--out", tmp_path / "ft",
            "--iterations", 2, "--batch-size", 2, "--device", "auto", "--cache-dir",
            tmp_path / "cache"]
    capsys.readouterr()
    monkeypatch.setattr("cavlog_core.device._cpu_notice_given", False)  # once per process
    with warnings.catch_warnings():  # whatever -W says; also undoes main()'s showwarning
        warnings.simplefilter("always")
        rc = _cli(monkeypatch, argv)
    assert rc == 0
    if not torch.cuda.is_available():  # auto on a CPU-only machine: one warning line
        assert "cavlog: warning: no GPU found: running on the CPU\n" in capsys.readouterr().err
    ft = load_checkpoint(tmp_path / "ft" / "checkpoint.pt")
    assert ft.config.preprocess.slices == "brain" and ft.config.train.warmup_iterations == 0
    assert ft.config.train.iterations == 2 and ft.meta["extra"]["init_checkpoint"]

    # expected failures: one line on stderr, exit 2
    capsys.readouterr()
    rc = _cli(monkeypatch, ["train", root, "--out", tmp_path / "x", "--resolution", 100])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "resolution=100" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    rc = _cli(monkeypatch, ["finetune", bad, root, "--out", tmp_path / "y"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and str(bad) in err
    if not torch.cuda.is_available():
        rc = _cli(monkeypatch, ["train", root, "--out", tmp_path / "z", "--device", "cuda"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "CUDA is not available" in err


def test_calibrate_recomputes_thresholds_with_the_same_weights(tmp_path):
    """``healthy_fpr1`` after calibration flags 1 % of the healthy brain pixels it was set on."""

    from cavlog_core._progress import drain
    from cavlog_core.calibrate import calibrate
    from napari_fixtures import make_tiny_checkpoint, write_synthetic_cases

    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pt")
    healthy = tmp_path / "healthy"
    write_synthetic_cases(healthy, (31, 32), shape=(64, 64, 24), healthy=True)
    with pytest.raises(CavlogError, match="new file"):
        drain(calibrate(ckpt, healthy, out=ckpt, device="cpu"))
    result = drain(calibrate(ckpt, healthy, out=tmp_path / "site.pt", device="cpu"))
    assert set(result.thresholds) >= {"healthy_p95", "healthy_fpr0.5", "healthy_fpr1",
                                      "healthy_fpr5"}
    assert result.previous == load_checkpoint(ckpt).thresholds and result.slices > 10
    new, old = load_checkpoint(result.checkpoint_path), load_checkpoint(ckpt)
    assert new.thresholds == pytest.approx(result.thresholds)
    assert new.meta["extra"]["calibrated_on"]["n_slices"] == result.slices
    # The minimum lesion volume comes from the same healthy scans: stored and used as default.
    from cavlog_core.lesions import min_lesion_ml

    assert result.min_lesion_ml is not None and result.min_lesion_ml >= 0
    assert min_lesion_ml(new.meta) == pytest.approx(result.min_lesion_ml)
    assert min_lesion_ml(old.meta) == 0.05
    for a, b in zip(new.modules.state_dict().values(), old.modules.state_dict().values()):
        assert torch.equal(a, b)
    # The promise: the fraction of healthy brain pixels at or above healthy_fpr1 is 1 %.
    assert _healthy_share_at(new, healthy, "healthy_fpr1") == pytest.approx(0.01, abs=0.002)


def _healthy_share_at(loaded, healthy, key: str) -> float:
    """Share of the brain pixels of ``healthy``'s lesion-free slices at or above ``key``."""
    import dataclasses

    from cavlog_core._progress import drain
    from cavlog_core.data import find_cases, iter_slice_arrays
    from cavlog_core.maps.normalize import normalize_maps

    pre = dataclasses.replace(loaded.config.preprocess, slices="brain")
    arrays = drain(iter_slice_arrays(find_cases(healthy), pre, healthy_only=True))
    images, brain = torch.from_numpy(arrays.images).float(), torch.from_numpy(arrays.brain).bool()
    keep = brain.flatten(1).any(dim=1)
    maps = normalize_maps(loaded.method.maps(loaded.modules, images[keep], brain[keep]).float(),
                          brain[keep], erosion=loaded.config.preprocess.mask_erosion)
    return float((maps[brain[keep]] >= loaded.thresholds[key]).float().mean())


def test_calibrate_can_change_the_map_flips(tmp_path, capsys):
    """--map-flips 4: the new checkpoint makes flip-averaged maps, with thresholds for them."""
    from napari_fixtures import make_tiny_checkpoint, write_synthetic_cases

    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pt")
    assert load_checkpoint(ckpt).config.model.map_flips == 1
    healthy = tmp_path / "healthy"
    write_synthetic_cases(healthy, (31, 32), shape=(64, 64, 24), healthy=True)
    out = tmp_path / "flips4.pt"
    assert cli.main(["calibrate", str(ckpt), str(healthy), "--out", str(out), "--device", "cpu",
                     "--map-flips", "4"]) == 0
    assert "map flips: 4" in capsys.readouterr().out
    new = load_checkpoint(out)
    assert new.config.model.map_flips == new.method.config.model.map_flips == 4
    assert _healthy_share_at(new, healthy, "healthy_fpr1") == pytest.approx(0.01, abs=0.002)


def test_cpu_bf16_autocast_only_when_asked_and_supported(monkeypatch):
    import importlib

    fitmod = importlib.import_module("cavlog_core.training.fit")
    cpu = torch.device("cpu")
    monkeypatch.setattr(fitmod, "cpu_bf16_units", lambda: ("avx512_bf16",))
    on = fitmod._autocast(cpu, TrainConfig(cpu_bf16=True))
    assert isinstance(on, torch.autocast) and on.fast_dtype == torch.bfloat16
    assert not isinstance(fitmod._autocast(cpu, TrainConfig()), torch.autocast)  # default: fp32
    monkeypatch.setattr(fitmod, "cpu_bf16_units", lambda: ())
    assert not isinstance(fitmod._autocast(cpu, TrainConfig(cpu_bf16=True)), torch.autocast)


def test_training_runs_channels_last_on_cpu_and_cuda(monkeypatch, tmp_path):
    import importlib

    fitmod = importlib.import_module("cavlog_core.training.fit")
    assert fitmod._channels_last(torch.device("cuda"))
    assert fitmod._channels_last(torch.device("cpu"))
    assert not fitmod._channels_last(torch.device("meta"))
    monkeypatch.setattr(fitmod, "cpu_bf16_units", lambda: ("avx512_bf16",))
    # End to end on the CPU (bf16 autocast runs, emulated where the CPU lacks the units):
    # the batches are NHWC, and the step still trains.
    seen = []
    to_device = fitmod._to_device

    def spy(*args, **kwargs):
        batch = to_device(*args, **kwargs)
        seen.append(batch.images.is_contiguous(memory_format=torch.channels_last))
        return batch

    monkeypatch.setattr(fitmod, "_to_device", spy)
    events, result = drain(fitmod.fit(tiny_config(iterations=6, warmup_iterations=2,
                                                  cpu_bf16=True), disks(8), out_dir=tmp_path))
    assert seen and all(seen)
    assert result.iterations == 6
    assert all(np.isfinite(e.losses["loss"]) for e in events if e.phase == "constrained")
