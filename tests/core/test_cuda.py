"""CUDA paths (bf16 autocast, channels-last, pinned memory): skipped where no GPU is present.

CI has no GPU; these run on a lent GPU machine (see README, "GPU checks"). The same code paths
have CPU tests elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cavlog_core import ModelConfig, PreprocessConfig, RunConfig, SynthConfig, TrainConfig
from cavlog_core._progress import drain
from cavlog_core.checkpoint import load_checkpoint
from cavlog_core.data import find_cases, load_case
from cavlog_core.inference.predict import predict
from cavlog_core.synth import write_synthetic_dataset
from cavlog_core.training.fit import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda")
    data = root / "synth"
    drain(write_synthetic_dataset(data, SynthConfig(subjects=4, seed=1, shape=(96, 96, 48))))
    config = RunConfig(
        preprocess=PreprocessConfig(resolution=64, slices="brain"),
        model=ModelConfig(resolution=64, width=0.25),
        train=TrainConfig(iterations=20, warmup_iterations=5, batch_size=16, device="cuda",
                          split_fractions=(1.0, 0.0, 0.0)),
    )
    result = drain(fit(config, data, out_dir=root / "run"))
    return result, data


def test_cuda_training_runs_bf16_and_stays_finite(trained):
    result, _ = trained
    assert result.checkpoint_path.is_file()
    assert result.iterations == 20
    assert all(np.isfinite(v) for v in result.thresholds.values())


def test_cuda_prediction_matches_cpu(trained):
    result, data = trained
    case = load_case(find_cases(data)[0])
    gpu = predict(load_checkpoint(result.checkpoint_path, device="cuda"), case, device="cuda")
    cpu = predict(load_checkpoint(result.checkpoint_path, device="cpu"), case, device="cpu")
    assert gpu.anomaly.shape == cpu.anomaly.shape == case.flair.shape
    inside = case.brain_mask
    diff = np.abs(gpu.anomaly[inside] - cpu.anomaly[inside])
    # bf16 autocast on the GPU against fp32 on the CPU: same maps up to bf16 rounding.
    assert diff.mean() < 0.03, diff.mean()
    assert np.corrcoef(gpu.anomaly[inside], cpu.anomaly[inside])[0, 1] > 0.98


def test_cuda_training_reads_its_logs_only_when_due(trained):
    import json

    result, _ = trained
    lines = [json.loads(s) for s in result.history_path.read_text().splitlines()]
    steps = [ln for ln in lines if ln["phase"] in ("warmup", "constrained")]
    assert [ln["iteration"] for ln in steps] == [1, 10, 20]  # log_every 10, and the last
    assert all(np.isfinite(ln["losses"]["loss"]) for ln in steps)


def test_cuda_fused_adam_skips_a_nan_step_on_the_device():
    from cavlog_core.methods import step_if_finite
    from cavlog_core.methods.base import adam

    p = torch.nn.Parameter(torch.ones(3, device="cuda"))
    opt = adam([p], lr=0.1)
    assert opt.param_groups[0]["fused"] is True
    p.grad = torch.full_like(p, float("nan"))
    step_if_finite(opt, torch.tensor(float("nan"), device="cuda"))
    assert torch.equal(p.detach().cpu(), torch.ones(3))
    p.grad = torch.ones_like(p)
    step_if_finite(opt, torch.tensor(1.0, device="cuda"))
    assert float(opt.state[p]["step"]) == 1 and float(p.detach()[0]) < 1
