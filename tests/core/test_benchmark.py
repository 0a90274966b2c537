"""Benchmark (issue 5): settings, resumable runs, summary tables, and the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from cavlog_core.benchmark import (
    ABLATIONS,
    TABLE1_METHODS,
    BenchmarkConfig,
    RunResult,
    ablation,
    benchmark,
    method_settings,
    run_benchmark,
)
from cavlog_core.benchmark.report import markdown_table, percentile_table
from cavlog_core.benchmark.runner import RunBusy, config_difference, run_lock
from cavlog_core.benchmark.settings import run_folders
from cavlog_core.config import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from cavlog_core.errors import CavlogError
from cavlog_core.methods import list_methods
from cavlog_core.training import read_checkpoint


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread avoids spin-waiting on a busy 2-core CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _base(**train) -> RunConfig:
    fields = {"iterations": 4, "warmup_iterations": 1, "batch_size": 4, "checkpoint_every": 2,
              "split_fractions": (0.5, 0.25, 0.25), "device": "cpu", **train}
    return RunConfig(preprocess=PreprocessConfig(resolution=64, slices="brain"),
                     model=ModelConfig(resolution=64, width=0.125), train=TrainConfig(**fields))


@pytest.fixture
def dataset(make_case, tmp_path):
    root = tmp_path / "data"
    for i in range(6):  # the two lesion-free cases give the split healthy validation slices
        make_case(f"CASE_{i:03d}", root=root, seed=i, lesion=i % 3 != 2, shape=(24, 20, 12))
    return root


def test_settings_cover_table_1_and_the_ablations():
    assert [s.label for s in method_settings("all")][:len(TABLE1_METHODS)] == list(TABLE1_METHODS)
    assert set(TABLE1_METHODS) <= set(list_methods())
    assert [s.method for s in method_settings("vae, cavga")] == ["vae", "cavga"]
    with pytest.raises(CavlogError, match="nope"):
        method_settings("vae,nope")
    with pytest.raises(CavlogError, match="twice"):
        method_settings("vae,vae")
    assert set(ABLATIONS) == {"barrier-vs-l2", "image-vs-pixel", "lambda", "cam-stage", "t",
                              "recon", "healthy-percentile", "cam-weights", "latent", "p-by-t",
                              "map-flips"}
    bl2 = ablation("barrier-vs-l2").settings
    assert len(bl2) == 14 and {s.group for s in bl2} == {"barrier", "l2"}
    assert sorted({s.value for s in bl2}) == [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    base = _base()
    for abl in ABLATIONS.values():  # every setting yields a valid configuration
        for s in abl.settings:
            cfg = s.apply(base)
            assert cfg.train.method == "constrained" and cfg.train.iterations == 4
    l2 = next(s for s in bl2 if s.label == "l2-p0.10").apply(base)
    assert (l2.train.constraint, l2.train.p) == ("l2", 0.1)
    assert ablation("cam-stage").settings[3].apply(base).model.cam_stage == 4
    assert [s.apply(base).train.lam for s in ablation("lambda").settings] == \
        [0.01, 0.1, 1.0, 10.0, 100.0]
    assert [s.apply(base).model.latent_dim for s in ablation("latent").settings] == \
        [16, 32, 64, 128]
    pt = {s.label: s.apply(base).train for s in ablation("p-by-t").settings}
    assert len(pt) == 9 and {(c.p, c.t) for c in pt.values()} == \
        {(p, t) for p in (0.1, 0.2, 0.3) for t in (10.0, 20.0, 50.0)}
    # cells on another ablation's line share its folder (its runs are reused), the rest their own
    folders = run_folders(ablation("p-by-t").settings, base)
    assert folders == {"p0.10-t10": "p0.10-t10", "p0.10-t20": "barrier-p0.10",
                       "p0.10-t50": "p0.10-t50", "p0.20-t10": "t-10",
                       "p0.20-t20": "constrained", "p0.20-t50": "t-50",
                       "p0.30-t10": "p0.30-t10", "p0.30-t20": "barrier-p0.30",
                       "p0.30-t50": "p0.30-t50"}
    lam = run_folders(ablation("lambda").settings, base)
    assert lam["lambda-10"] == "constrained" and lam["lambda-100"] == "lambda-100"
    assert run_folders(method_settings("vae,constrained"), base) == \
        {"vae": "vae", "constrained": "constrained"}
    with pytest.raises(CavlogError, match="unknown"):
        ablation("dropout")
    assert config_difference(json.loads(json.dumps(base.to_dict())), base) is None
    older = json.loads(json.dumps(base.to_dict()))
    del older["model"]["latent_dim"]  # a field a later version added: its default applies
    assert config_difference(older, base) is None
    older["model"]["bogus"] = 1
    assert "not readable" in config_difference(older, base)
    other = _base(iterations=5, device="cuda")  # device is free, iterations is not
    assert "iterations" in config_difference(json.loads(json.dumps(base.to_dict())), other)


def test_benchmark_resumes_and_skips_finished_runs(dataset, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "bench"
    cfg = BenchmarkConfig(data=dataset, out=out, base=_base(), methods="vae,flair-threshold",
                          seeds=1, eval_slices="central:4", cache_dir=tmp_path / "cache")
    # 1. interrupt the first run after iteration 3 (periodic checkpoint at 2; closing the
    #    generator saves the completed iteration 3)
    gen = benchmark(cfg)
    for ev in gen:
        if ev.stage == "train" and ev.step == 3:
            break
    gen.close()
    ckpt = out / "vae" / "seed0" / "checkpoint.pt"
    payload = read_checkpoint(ckpt)
    assert payload["iteration"] == 3 and not payload["extra"]["finished"]
    assert not (out / "vae" / "seed0" / "result.json").exists()

    # 2. run again: vae resumes at iteration 4, flair-threshold runs, summary written
    events = list(_drain(benchmark(cfg)))
    vae_steps = [e.step for e in events if e.stage == "train" and e.label == "vae"]
    assert vae_steps == [4]
    assert [e.label for e in events if e.stage == "done"] == ["vae", "flair-threshold"]
    result = json.loads((out / "vae" / "seed0" / "result.json").read_text())
    assert result["iterations"] == 4 and result["split"]["seed"] == 0
    assert 0 <= result["metrics"]["auroc"] <= 1 and result["pr_curve"]["recall"]
    flair = json.loads((out / "flair-threshold" / "seed0" / "result.json").read_text())
    assert flair["iterations"] == 0 and flair["metrics"]["cases"] == result["metrics"]["cases"]
    summary = (out / "summary.md").read_text()
    assert "| vae |" in summary and "| flair-threshold |" in summary
    assert (out / "pr_curves.png").stat().st_size > 1000
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".json", ".pt")}

    # 3. once more: everything is skipped and nothing is rewritten
    res = run_benchmark(cfg)
    assert all(r.skipped for r in res.results) and len(res.results) == 2
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}

    # 4. summarising only: nothing computed, missing runs listed
    res = run_benchmark(BenchmarkConfig(data=dataset, out=out, base=_base(),
                                        methods="vae,ae", seeds=(0,), eval_slices="central:4",
                                        cache_dir=tmp_path / "cache", summarize_only=True))
    assert [r.label for r in res.results] == ["vae"] and res.missing == ("ae/seed0",)
    assert "ae/seed0" in (out / "summary.md").read_text()

    # 5. the same folder with another budget is refused, not silently reused
    with pytest.raises(CavlogError, match="another configuration"):
        run_benchmark(BenchmarkConfig(data=dataset, out=out, base=_base(iterations=6),
                                      methods="vae", seeds=1, eval_slices="central:4",
                                      cache_dir=tmp_path / "cache"))


def test_keep_going_reports_a_failing_run(dataset, tmp_path):
    # f-anogan refuses --epochs (its phases are scheduled by iteration); flair needs no training
    cfg = BenchmarkConfig(data=dataset, out=tmp_path / "b", base=_base(epochs=1),
                          methods="f-anogan,flair-threshold", seeds=(1,), eval_slices="central:4",
                          cache_dir=tmp_path / "cache", keep_going=True)
    res = run_benchmark(cfg)
    assert list(res.failed) == ["f-anogan/seed1"] and "--epochs" in res.failed["f-anogan/seed1"]
    assert [(r.label, r.seed) for r in res.results] == [("flair-threshold", 1)]
    assert "Failed runs" in res.summary_path.read_text()
    with pytest.raises(CavlogError, match="--epochs"):
        run_benchmark(dataclasses.replace(cfg, out=tmp_path / "c", keep_going=False))


def test_run_lock(tmp_path):
    import os
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    with run_lock(run_dir):
        assert (run_dir / "running.lock").read_text() == str(os.getpid())
    assert not (run_dir / "running.lock").exists()
    (run_dir / "running.lock").write_text(str(os.getppid()))  # a live process holds it
    with pytest.raises(RunBusy, match="being computed"), run_lock(run_dir):
        pass
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (run_dir / "running.lock").write_text(gone)  # its process has exited: stale, taken over
    with run_lock(run_dir):
        assert (run_dir / "running.lock").read_text() == str(os.getpid())


def _drain(gen):
    while True:
        try:
            yield next(gen)
        except StopIteration:
            return


def _run(label: str, seed: int, **metrics) -> RunResult:
    data = {"metrics": metrics, "healthy_fc_satisfied": metrics.pop("share", None),
            "train_seconds": 10.0}
    return RunResult(label, label, seed, Path("."), data)


def test_summary_tables_mean_std():
    strat = {"healthy_p95": {"threshold": 0.8, "dice": 0.5, "iou": 0.3,
                             "dice_per_scan_mean": 0.4, "dice_per_scan_std": 0.2}}
    runs = [_run("vae", 0, auroc=0.8, auprc=0.4, strategies=strat),
            _run("vae", 1, auroc=0.9, auprc=0.6, strategies=strat),
            _run("flair", 0, auroc=0.95, auprc=math.nan)]
    table = markdown_table(runs).splitlines()
    assert table[0].startswith("| Method | AUROC | AUPRC | DICE p95 | DICE/scan p95 |")
    # std over two seeds (ddof=1): AUROC 0.85 ± 0.0707, AUPRC 0.5 ± 0.1414
    assert table[2].startswith("| vae | 0.850 ± 0.071 | 0.500 ± 0.141 | 0.500 ± 0.000 | "
                               "0.400 ± 0.200 |")
    assert table[3].startswith("| flair | 0.950 | – | – | – |")
    pct = percentile_table(runs[:2]).splitlines()
    assert pct[2] == "| healthy_p95 | 0.800 ± 0.000 | 0.500 ± 0.000 | 0.300 ± 0.000 | " \
                     "0.400 ± 0.200 | 2 |"


def _cli_args(dataset: Path, out: Path, cache: Path, methods: str, seeds: int) -> list[str]:
    """A tiny ``cavlog benchmark`` command line (64², width 0.125, 2 iterations, CPU)."""
    return ["benchmark", str(dataset), "--out", str(out), "--methods", methods,
            "--seeds", str(seeds), "--resolution", "64", "--width", "0.125", "--iterations", "2",
            "--warmup-iterations", "0", "--batch-size", "4", "--slices", "brain",
            "--eval-slices", "central:4", "--split-fractions", "0.5,0.25,0.25",
            "--device", "cpu", "--cache-dir", str(cache)]


def test_cli_benchmark_and_bad_input(dataset, tmp_path, capsys):
    from cavlog_core.cli import main

    out = tmp_path / "cli"
    args = _cli_args(dataset, out, tmp_path / "cache", "flair-threshold", 1)
    assert main(args) == 0
    assert (out / "flair-threshold" / "seed0" / "result.json").is_file()
    assert "summary:" in capsys.readouterr().out
    assert main([*args[:5], "nope", *args[6:]]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main([*args, "--eval-slices", "middle"]) == 2
    assert "middle" in capsys.readouterr().err


def test_cli_benchmark_parallel_workers_share_the_runs(dataset, tmp_path, capsys):
    from cavlog_core.cli import main
    from cavlog_core.cli.benchmark import _worker_argv

    out = tmp_path / "par"
    args = _cli_args(dataset, out, tmp_path / "cache", "flair-threshold,ae", 2)
    assert main([*args, "--parallel", "2", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert "1 more worker process(es)" in captured.err and "4 runs" in captured.out
    for name in ("flair-threshold", "ae"):
        for seed in (0, 1):
            assert (out / name / f"seed{seed}" / "result.json").is_file()
    log = (out / "worker1.log").read_text()
    assert "4 runs" in log and "summary:" not in log  # ran to the end; the summary is ours
    assert "--parallel 2" in (out / "summary.md").read_text()
    # Every run was computed once: what one process computed, the other skipped or waited for.
    assert not list(out.rglob("running.lock"))
    assert main([*args, "--parallel", "0"]) == 2
    assert "--parallel 0" in capsys.readouterr().err

    given = argparse.Namespace(_argv=["benchmark", "D", "--parallel", "3", "--threads=4",
                                      "--out", "O"], threads=2)
    assert _worker_argv(given) == ["benchmark", "D", "--out", "O", "--threads", "2",
                                   "--no-summary"]
