"""DistributedDataParallel: two gloo processes on the CPU under torchrun train the same weights."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

DRIVER = textwrap.dedent('''
    import os, sys
    import numpy as np
    import torch
    from cavlog_core.config import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
    from cavlog_core.data import SliceArrays
    from cavlog_core.methods.constrained import ConstrainedVAE
    from cavlog_core.models.gradcam import unwrap
    from cavlog_core.training import run_fit

    out = sys.argv[1]
    rank = int(os.environ["RANK"])

    class Probe(ConstrainedVAE):
        """The constrained method, saving this rank's weights after its last step."""
        name = "ddp-probe"

        def training_step(self, modules, optimizers, batch, iteration):
            logs = super().training_step(modules, optimizers, batch, iteration)
            with open(f"{out}/batches{rank}.txt", "a") as f:
                f.write(f"{iteration} {batch.images.shape[0]} {type(modules['model']).__name__}\\n")
            if iteration == self.config.train.iterations - 1:
                params = {k: v.detach().clone()
                          for k, v in unwrap(modules["model"]).named_parameters()}
                torch.save(params, f"{out}/rank{rank}.pt")
            return logs

    n, r = 8, 64
    g = np.random.default_rng(0)
    brain = np.zeros((n, 1, r, r), bool)
    brain[:, :, 16:48, 16:48] = True
    img = np.where(brain, g.uniform(0.3, 0.9, brain.shape), 0).astype(np.float16)
    data = SliceArrays(img, brain, None, np.zeros(n, np.int64), np.arange(n), ("sq",))
    cfg = RunConfig(preprocess=PreprocessConfig(resolution=r),
                    model=ModelConfig(resolution=r, width=0.125),
                    train=TrainConfig(method="ddp-probe", iterations=3, warmup_iterations=1,
                                      batch_size=4, lr=1e-3, device="cpu", seed=0))
    result = run_fit(cfg, data, out_dir=f"{out}/run")
    print("rank", rank, "done", result.iterations, flush=True)
''')


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys() and len(w0) > 10
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k

    # each rank trained on its half of every global batch, through the DDP wrapper
    for rank in (0, 1):
        lines = (tmp_path / f"batches{rank}.txt").read_text().split("\n")
        assert [ln.split() for ln in lines if ln] == [
            [str(i), "2", "DistributedDataParallel"] for i in range(3)]

    # only rank 0 wrote the run folder; the checkpoint holds the shared weights
    from cavlog_core.training import read_checkpoint

    ck = read_checkpoint(tmp_path / "run" / "checkpoint.pt")  # the probe method is not registered
    assert ck["extra"]["world_size"] == 2 and ck["iteration"] == 3 and ck["method"] == "ddp-probe"
    for k in w0:
        assert torch.equal(ck["modules"]["model"][k], w0[k]), k
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint.pt", "config.json", "log.jsonl"]
