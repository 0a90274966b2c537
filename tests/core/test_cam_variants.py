"""CAM weighting variants (``ModelConfig.cam_weights``): gradient, gradient-frozen-bn, mean."""

import argparse

import numpy as np
import pytest
import torch

from cavlog_core.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from cavlog_core.cli import train as cli_train
from cavlog_core.config import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from cavlog_core.errors import CavlogError
from cavlog_core.methods import Batch, get_method, read_logs
from cavlog_core.models import ResNetVAE, constraint_penalty
from cavlog_core.models.gradcam import (
    CAM_WEIGHTS,
    activation_cam,
    attention,
    compute_cam,
    encoder_cam,
    frozen_batch_statistics,
    grad_cam,
    upsample_cam,
)

R = 64


@pytest.fixture(autouse=True)
def _one_thread_seeded():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def config(weights: str, **train) -> RunConfig:
    return RunConfig(preprocess=PreprocessConfig(resolution=R),
                     model=ModelConfig(resolution=R, width=0.125, cam_weights=weights),
                     train=TrainConfig(device="cpu", **train))


def disks(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` bright textured disks on black, ``(n, 1, R, R)`` images and brain masks."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:R, 0:R]
    cx, cy = g.uniform(0.4 * R, 0.6 * R, (2, n))
    rad = g.uniform(0.25 * R, 0.4 * R, n)
    d = np.hypot(xx[None] - cx[:, None, None], yy[None] - cy[:, None, None])
    brain = d < rad[:, None, None]
    img = np.where(brain, 0.5 + 0.3 * np.cos(d / 3) ** 2, 0).astype(np.float32)
    return torch.from_numpy(img[:, None]), torch.from_numpy(brain[:, None])


def test_config_validation_default_and_old_checkpoint_dicts():
    assert ModelConfig().cam_weights == "gradient"
    with pytest.raises(CavlogError, match="cam_weights='bogus'"):
        ModelConfig(cam_weights="bogus")
    cfg = config("gradient-frozen-bn")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["model"]["cam_weights"]  # a checkpoint written before the option existed
    assert RunConfig.from_dict(old).model.cam_weights == "gradient"
    with pytest.raises(ValueError, match="'bogus'"):
        attention(ResNetVAE(resolution=R, width=0.125), torch.rand(2, 1, R, R),
                  create_graph=False, weights="bogus")


def test_cli_option_reaches_the_config():
    parser = argparse.ArgumentParser()
    cli_train.add_parser(parser.add_subparsers())
    base = ["train", ".", "--out", "x", "--resolution", "64"]
    assert cli_train.config_from_args(parser.parse_args(base)).model.cam_weights == "gradient"
    for w in CAM_WEIGHTS:
        args = parser.parse_args([*base, "--cam-weights", w])
        assert cli_train.config_from_args(args).model.cam_weights == w
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--cam-weights", "bogus"])


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_shapes_of_every_variant(mode):
    x, brain = disks(3)
    for w in CAM_WEIGHTS:
        method = get_method("constrained")(config(w))
        modules = getattr(method.build(), mode)()
        att = attention(modules["model"], x, create_graph=False, weights=w)
        assert att.cam.shape == att.attention.shape == (3, R // 4, R // 4)
        assert att.cam.dtype == torch.float32
        assert bool(((att.attention > 0) & (att.attention < 1)).all())
        assert encoder_cam(modules["model"], x, weights=w).shape == (3, R // 4, R // 4)
        with torch.no_grad():
            maps = method.anomaly_maps(modules, x, brain)
        assert maps.shape == (3, 1, R, R) and not maps.requires_grad


def test_mean_is_the_channel_mean_of_the_cam_stage():
    # By hand: two channels of 1x2 pixels -> per-pixel mean of the channels.
    a = torch.tensor([[[[1.0, 2.0]], [[4.0, -2.0]]]])
    torch.testing.assert_close(activation_cam(a), torch.tensor([[[2.5, 0.0]]]))
    x, brain = disks(2)
    for mode in ("train", "eval"):
        method = get_method("constrained")(config("mean"))
        modules = getattr(method.build(), mode)()
        net = modules["model"]
        att = attention(net, x, create_graph=False, weights="mean")
        torch.testing.assert_close(att.cam, att.vae.features.mean(dim=1))
        torch.testing.assert_close(att.attention, torch.sigmoid(att.vae.features.mean(dim=1)))
    with torch.no_grad():  # eval mode here: deterministic, no running-statistics update
        manual = net.features_at(x).mean(dim=1)
        torch.testing.assert_close(encoder_cam(net, x, weights="mean"), manual)
        torch.testing.assert_close(method.anomaly_maps(modules, x, brain), upsample_cam(manual, R))


def test_frozen_bn_equals_gradient_in_eval_mode_and_differs_in_train_mode():
    x, _ = disks(8)
    net = ResNetVAE(resolution=R, width=0.125)
    # Calibrate the running statistics a little so eval mode is not the identity BN.
    with torch.no_grad():
        net.train()
        for _ in range(3):
            net(x)
    net.eval()
    ref = attention(net, x, create_graph=False, weights="gradient").cam
    frozen = attention(net, x, create_graph=False, weights="gradient-frozen-bn").cam
    torch.testing.assert_close(frozen, ref)
    torch.testing.assert_close(encoder_cam(net, x, weights="gradient-frozen-bn"), ref)

    net.train()
    out = net(x)  # updates the running statistics once
    after_forward = [b.clone() for b in net.buffers()]
    grad = compute_cam(net, out.features, out.mu, weights="gradient", create_graph=False,
                       retain_graph=True)
    frozen = compute_cam(net, out.features, out.mu, weights="gradient-frozen-bn",
                         create_graph=False)
    assert (frozen - grad).abs().max() > 0.1 * grad.abs().max()
    for b, v in zip(net.buffers(), after_forward):  # the held-statistics pass updated nothing
        torch.testing.assert_close(b, v)

    # Same forward values, but per-image weights: they no longer cancel across the batch.
    feats = out.features.detach().requires_grad_(True)
    mu, _ = net.encode_from(feats)
    with frozen_batch_statistics(net.stages[1:]):
        held_mu, _ = net.encode_from(feats)
    torch.testing.assert_close(held_mu, mu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_cam(feats, held_mu, create_graph=False, retain_graph=True),
                               frozen, rtol=1e-4, atol=1e-6)
    (g_live,) = torch.autograd.grad(mu.sum(), feats)
    (g_held,) = torch.autograd.grad(held_mu.sum(), feats)

    def cancellation(g):  # |Σ_b α_bk| / Σ_b |α_bk|, pooled over channels k
        a = g.mean(dim=(2, 3))
        return float(a.sum(0).abs().sum() / a.abs().sum(0).sum())

    assert cancellation(g_live) < 0.15 < cancellation(g_held)
    # Module state is restored after the block: the live forward is back.
    assert all("forward" not in bn.__dict__ for bn in net.modules())


@pytest.mark.parametrize("weights", CAM_WEIGHTS)
def test_constraint_gradient_reaches_the_encoder(weights):
    net = ResNetVAE(resolution=R, width=0.125).train()
    x, _ = disks(4)
    att = attention(net, x, create_graph=True, weights=weights)
    penalty, fc = constraint_penalty(att.attention, kind="barrier", p=0.2, t=20.0, lam=10.0)
    assert fc.shape == (4,)
    penalty.backward()
    for param in (net.stem[0].weight, net.stages[0][0].conv1.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0
    later = net.stages[3][0].conv1.weight.grad  # after the CAM stage: only through alpha
    if weights == "mean":
        assert later is None or later.abs().sum() == 0
    else:
        assert later is not None and later.abs().sum() > 0
    assert net.up[0].main[0].weight.grad is None  # the decoder plays no part


@pytest.mark.parametrize("weights", CAM_WEIGHTS)
def test_checkpoint_remembers_the_variant(tmp_path, weights):
    method = get_method("constrained")(config(weights))
    modules = method.build()
    path = save_checkpoint(tmp_path / "c.pt", method=method, modules=modules)
    loaded = load_checkpoint(path)
    assert loaded.config.model.cam_weights == weights == loaded.method.cam_weights
    if weights == "gradient":  # written before the option existed: loads with the default
        payload = read_checkpoint(path)
        del payload["config"]["model"]["cam_weights"]
        torch.save(payload, tmp_path / "old.pt")
        assert load_checkpoint(tmp_path / "old.pt").method.cam_weights == "gradient"


@pytest.mark.parametrize("weights", CAM_WEIGHTS)
def test_tiny_training_raises_mean_attention(weights):
    x, brain = disks(16)
    method = get_method("constrained")(config(weights, iterations=40, warmup_iterations=10,
                                              batch_size=16, lr=1e-3))
    modules = method.build().train()
    opts = method.optimizers(modules)
    batch = Batch(x, brain)
    logs = read_logs(method.training_step(modules, opts, batch, i) for i in range(40))
    assert all(np.isfinite(log["loss"]) for log in logs)
    assert all(log["constraint"] == 0 for log in logs[:10])
    start = np.mean([log["mean_attention"] for log in logs[8:10]])
    end = np.mean([log["mean_attention"] for log in logs[-3:]])
    assert end > start + 0.05, (weights, start, end)
