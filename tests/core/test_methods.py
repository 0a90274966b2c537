"""Baselines of issue 5: each trains a few steps and yields sane maps; exact helper checks."""

from __future__ import annotations

import argparse
import dataclasses
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from cavlog_core.config import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from cavlog_core.errors import CavlogError
from cavlog_core.methods import Batch, Method, get_method, list_methods, read_logs
from cavlog_core.methods.flair_threshold import equalize_in_mask
from cavlog_core.methods.gan import (
    CriticOutput,
    Discriminator,
    FAnoGANOptions,
    decoder_parameters,
    encoder_parameters,
    gradient_penalty,
)
from cavlog_core.methods.gradcam_vae import per_dimension_cams
from cavlog_core.methods.residual import blank_patches, residual_map
from cavlog_core.methods.restoration import restore, total_variation
from cavlog_core.models import ResNetVAE

R = 64
BASELINES = sorted(set(list_methods()) - {"constrained"})  # "constrained" is tested elsewhere


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread avoids spin-waiting on a busy 2-core CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(method: str, **train) -> RunConfig:
    fields = {"method": method, "iterations": 3, "warmup_iterations": 1, "batch_size": 4, **train}
    return RunConfig(preprocess=PreprocessConfig(resolution=R),
                     model=ModelConfig(resolution=R, width=0.125), train=TrainConfig(**fields))


def _phantom(b: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Elliptic 'brains' of mid-grey noisy tissue on a black background."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    brain = ((yy - 32) ** 2 / 26**2 + (xx - 32) ** 2 / 22**2 < 1)
    brain = brain.expand(b, 1, R, R).clone()
    images = (0.5 + 0.1 * torch.rand(b, 1, R, R, generator=g)) * brain
    return images, brain


def test_registry_lists_every_baseline_of_table_1():
    expected = {"ae", "vae", "context-ae", "context-vae", "bayesian-ae", "bayesian-vae",
                "restoration-vae", "anovaegan", "f-anogan", "gradcam-vae", "gradcam-vae-d",
                "cavga", "flair-threshold"}
    methods = list_methods()
    assert expected <= set(methods)
    assert all(methods[m] and "\n" not in methods[m] for m in expected)
    assert get_method("flair-threshold").trainable is False


@pytest.mark.parametrize("name", BASELINES)
def test_method_trains_and_maps(name):
    torch.manual_seed(0)
    method = get_method(name)(_config(name))
    modules = method.build()
    optimizers = method.optimizers(modules)
    before = {k: v.detach().clone() for k, v in modules.state_dict().items()
              if v.is_floating_point()}
    images, brain = _phantom()
    modules.train()
    for it in range(3):  # f-anogan: iterations 0-1 are GAN steps, 2 is an encoder step
        [logs] = read_logs([method.training_step(modules, optimizers, Batch(images, brain), it)])
        assert np.isfinite(logs["loss"])
    modules.eval()
    with torch.no_grad():
        maps = method.anomaly_maps(modules, images, brain)
    assert maps.shape == (4, 1, R, R)
    assert torch.isfinite(maps).all()
    if method.trainable:
        changed = [k for k, v in modules.state_dict().items()
                   if k in before and not torch.equal(v, before[k])]
        assert changed, f"{name}: no weight changed in 3 training steps"
    if name not in ("gradcam-vae", "gradcam-vae-d"):  # raw Grad-CAMs are unbounded
        assert maps.min() >= 0 and maps.max() <= 1
    if name not in ("gradcam-vae", "gradcam-vae-d", "cavga"):  # residual and intensity maps
        assert (maps[~brain] == 0).all()
        assert maps.max() > 0


def test_fanogan_phases_train_the_right_halves():
    torch.manual_seed(0)
    method = get_method("f-anogan")(_config("f-anogan", iterations=10))  # GAN: iterations 0-5
    modules = method.build()
    opts = method.optimizers(modules)
    net = modules["model"]
    enc = [p.detach().clone() for p in encoder_parameters(net)]
    dec = [p.detach().clone() for p in decoder_parameters(net)]
    images, brain = _phantom()
    modules.train()
    [logs] = read_logs([method.training_step(modules, opts, Batch(images, brain), 0)])
    assert logs["phase"] == 1 and logs["generator"] != 0  # iteration 0: critic + generator
    assert all(torch.equal(a, b) for a, b in zip(enc, encoder_parameters(net)))
    assert not all(torch.equal(a, b) for a, b in zip(dec, decoder_parameters(net)))
    dec = [p.detach().clone() for p in decoder_parameters(net)]
    [logs] = read_logs([method.training_step(modules, opts, Batch(images, brain), 6)])
    assert logs["phase"] == 2 and logs["izif"] > 0
    assert not all(torch.equal(a, b) for a, b in zip(enc, encoder_parameters(net)))
    assert all(torch.equal(a, b) for a, b in zip(dec, decoder_parameters(net)))
    # encoder + decoder parameters partition the network
    ids = [id(p) for p in encoder_parameters(net) + decoder_parameters(net)]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    with pytest.raises(CavlogError, match="--epochs"):
        m = get_method("f-anogan")(_config("f-anogan", epochs=2))
        m.training_step(modules, opts, Batch(images, brain), 0)


def test_equalize_in_mask_is_the_empirical_cdf():
    # hand-made volume (X=2, Y=3, Z=2); axial slices are the batch
    vol = np.array([[[0.2, 0.9], [0.8, 0.9], [0.5, 0.1]],
                    [[0.5, 0.3], [0.1, 0.3], [0.7, 0.7]]], dtype=np.float32)
    brain = np.array([[[1, 1], [1, 0], [1, 1]],
                      [[1, 1], [1, 1], [0, 1]]], dtype=bool)
    images = torch.from_numpy(vol).permute(2, 0, 1).unsqueeze(1)  # (Z, 1, X, Y)
    mask = torch.from_numpy(brain).permute(2, 0, 1).unsqueeze(1)
    out = get_method("flair-threshold")(_config("flair-threshold")).anomaly_maps(
        nn.ModuleDict({"model": nn.Identity()}), images, mask)
    # slice 0 brain values: 0.2 0.8 0.5 0.5 0.1 -> CDF 2/5 5/5 4/5 4/5 1/5; 0.7 outside -> 0
    expected0 = np.array([[0.4, 1.0, 0.8], [0.8, 0.2, 0.0]], dtype=np.float32)
    # slice 1 brain values: 0.9 0.1 0.3 0.3 0.7 (the 0.9 at x=0, y=1 is outside)
    expected1 = np.array([[1.0, 0.0, 0.2], [0.6, 0.6, 0.8]], dtype=np.float32)
    np.testing.assert_allclose(out[0, 0].numpy(), expected0, atol=1e-7)
    np.testing.assert_allclose(out[1, 0].numpy(), expected1, atol=1e-7)
    # invariant to increasing intensity transforms; empty masks give zeros
    np.testing.assert_allclose(equalize_in_mask(torch.exp(3 * images), mask).numpy(),
                               out.numpy(), atol=1e-7)
    assert equalize_in_mask(images, torch.zeros_like(mask)).abs().sum() == 0
    with pytest.raises(ValueError, match="shape"):
        equalize_in_mask(images, mask[:1])


def test_residual_map_inside_the_eroded_brain():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 0.9
    recon = torch.full_like(x, 0.25)
    brain = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    brain[..., 1:4, 1:4] = True
    out = residual_map(x, recon, brain, erosion=0)
    assert out[0, 0, 2, 2] == pytest.approx(0.65) and out[0, 0, 1, 1] == pytest.approx(0.25)
    assert out[0, 0, 0, 0] == 0
    eroded = residual_map(x, recon, brain, erosion=1)  # only the centre pixel survives
    assert eroded.count_nonzero() == 1 and eroded[0, 0, 2, 2] == pytest.approx(0.65)


def test_blank_patches_only_blank_inside_brain_centred_squares():
    torch.manual_seed(3)
    images, brain = _phantom(8)
    images = images + 0.1  # no pixel is 0 before blanking
    out = blank_patches(images, brain, patches=1, size_range=(0.125, 0.125))
    holes = out == 0
    assert torch.equal(out[~holes], images[~holes])
    for b in range(8):
        ys, xs = torch.nonzero(holes[b, 0], as_tuple=True)
        assert len(ys) > 0
        cy, cx = ys.float().mean().round().long(), xs.float().mean().round().long()
        # side 8 px: |y - c| < 4 around a brain pixel (squares may be cut by the border)
        assert brain[b, 0, cy, cx] and int(ys.max() - ys.min()) <= 7
    torch.manual_seed(3)
    assert torch.equal(blank_patches(images, brain, patches=1, size_range=(0.125, 0.125)), out)


def test_bayesian_methods_average_random_reconstructions():
    images, brain = _phantom(2)
    for name, random in (("bayesian-ae", True), ("bayesian-vae", True), ("ae", False)):
        torch.manual_seed(0)
        method = get_method(name)(_config(name))
        modules = method.build().eval()
        torch.manual_seed(1)
        a = method.anomaly_maps(modules, images, brain)
        torch.manual_seed(2)
        b = method.anomaly_maps(modules, images, brain)
        assert (not torch.equal(a, b)) == random, name
    method = get_method("bayesian-ae")(_config("bayesian-ae"))
    assert method.dropout == 0.2 and method.mc_samples == 8
    cfg = dataclasses.replace(_config("bayesian-ae"), model=ModelConfig(resolution=R, width=0.125,
                                                                         dropout=0.5))
    assert get_method("bayesian-ae")(cfg).dropout == 0.5


def test_grad_cam_d_equals_a_loop_over_latent_dimensions():
    torch.manual_seed(0)
    net = ResNetVAE(resolution=R, width=0.125, latent_dim=5, cam_stage=2).eval()
    images, _ = _phantom(3)
    cams = per_dimension_cams(net, images)
    assert cams.shape == (5, 3, R // 8, R // 8)
    features = net.features_at(images).detach().requires_grad_(True)
    mu, _ = net.encode_from(features)
    for j in range(5):
        (g,) = torch.autograd.grad(mu[:, j].sum(), features, retain_graph=True)
        manual = (g.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1)
        torch.testing.assert_close(cams[j], manual.detach(), rtol=1e-4, atol=1e-6)


def test_total_variation_and_restoration():
    x = torch.tensor([[[[0.0, 1.0], [1.0, 3.0]]]])
    assert total_variation(x).item() == pytest.approx(1 + 2 + 1 + 2)
    torch.manual_seed(0)
    net = ResNetVAE(resolution=R, width=0.125).eval()
    images, brain = _phantom(2)
    xr = restore(net, images, brain, steps=3, step_size=0.1, tv_weight=0.05)
    assert xr.shape == images.shape and (xr >= 0).all() and (xr <= 1).all()
    assert torch.equal(xr[~brain], images[~brain])  # only brain pixels move
    assert not torch.equal(xr, images)
    assert all(p.grad is None for p in net.parameters())
    assert restore(net, images, brain, steps=0, step_size=0.1, tv_weight=0.05).equal(images)


def test_gradient_penalty_of_a_linear_critic():
    class Linear(nn.Module):
        def forward(self, x):
            return CriticOutput((x * 0.5).flatten(1).sum(dim=1), x)

    real, fake = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    # ∇D = 0.5 everywhere: ||∇D|| = 0.5 · 4 = 2, penalty (2 - 1)² = 1
    assert gradient_penalty(Linear(), real, fake).item() == pytest.approx(1.0)


@pytest.mark.parametrize("res", [64, 224])
def test_discriminator_shapes(res):
    out = Discriminator(resolution=res, width=0.125)(torch.rand(2, 1, res, res))
    assert out.logits.shape == (2,)
    assert out.features.shape[-1] <= 8
    with pytest.raises(ValueError, match="norm"):
        Discriminator(resolution=res, norm="layer")


def test_cli_methods_lists_names(capsys):
    from cavlog_core.cli import methods as cli_methods

    parser = argparse.ArgumentParser()
    cli_methods.add_parser(parser.add_subparsers())
    assert cli_methods.run(parser.parse_args(["methods"])) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(list_methods())
    assert any(line.startswith("flair-threshold ") for line in out)
    assert cli_methods.run(parser.parse_args(["methods", "--json"])) == 0
    assert '"trainable": false' in capsys.readouterr().out


def test_method_options_default_typed_and_kept_in_the_config():
    method = get_method("f-anogan")(_config("f-anogan"))
    assert method.options == FAnoGANOptions()
    # every value, defaults included, is written into the config a checkpoint stores
    assert method.config.train.method_options == {"gan_fraction": 0.6, "n_critic": 5,
                                                  "gp_weight": 10.0, "kappa": 1.0}
    text = get_method("f-anogan")(_config("f-anogan", method_options={"n_critic": "3",
                                                                      "kappa": "0.5"}))
    assert text.options.n_critic == 3 and text.options.kappa == 0.5
    # 10 iterations, gan_fraction 0.3: the GAN trains for round(3.0) = 3 of them
    short = get_method("f-anogan")(_config("f-anogan", iterations=10,
                                           method_options={"gan_fraction": 0.3}))
    assert short.gan_iterations == 3
    assert get_method("constrained")(_config("constrained")).config.train.method_options == {}


@pytest.mark.parametrize(("options", "message"), [
    ({"n_critics": 3}, "method 'f-anogan' has no option 'n_critics'; its options: gan_fraction"),
    ({"n_critic": "three"}, "method 'f-anogan': n_critic='three' is not of type int"),
    ({"n_critic": 0}, "method 'f-anogan': n_critic=0: must be >= 1"),
    ({"n_critic": True}, "method 'f-anogan': n_critic=True is not of type int"),
])
def test_bad_method_options_name_the_method_and_value(options, message):
    with pytest.raises(CavlogError, match=re.escape(message)):
        get_method("f-anogan")(_config("f-anogan", method_options=options))


def test_methods_without_options_refuse_any():
    with pytest.raises(CavlogError, match="has no option 'x'; its options: none"):
        get_method("constrained")(_config("constrained", method_options={"x": 1}))


def test_restoration_options_reach_the_map():
    torch.manual_seed(0)
    images, brain = _phantom(2)
    zero = get_method("restoration-vae")(_config("restoration-vae",
                                                 method_options={"steps": 0}))
    modules = zero.build().eval()
    # zero restoration steps: x_r = x, so the residual map is exactly 0
    assert zero.anomaly_maps(modules, images, brain).abs().max() == 0
    some = get_method("restoration-vae")(_config("restoration-vae"))
    assert some.options.steps == 10
    assert some.anomaly_maps(modules, images, brain).abs().max() > 0


def test_cli_option_flags_become_typed_method_options(tmp_path):
    from cavlog_core.cli import train as cli_train

    parser = argparse.ArgumentParser()
    cli_train.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", str(tmp_path), "--out", str(tmp_path / "run"),
                              "--method", "bayesian-ae", "--option", "mc_samples=4",
                              "--option", "mc_dropout = 0.3"])
    assert cli_train.config_from_args(args).train.method_options == {"mc_samples": 4,
                                                                     "mc_dropout": 0.3}
    args = parser.parse_args(["train", str(tmp_path), "--out", str(tmp_path / "run"),
                              "--option", "oops"])
    with pytest.raises(CavlogError, match="--option 'oops': expected NAME=VALUE"):
        cli_train.config_from_args(args)


def test_options_survive_a_checkpoint_and_old_checkpoints_get_defaults(tmp_path):
    from cavlog_core.checkpoint import load_checkpoint, save_checkpoint

    method = get_method("bayesian-vae")(_config("bayesian-vae", method_options={"mc_samples": 3}))
    save_checkpoint(tmp_path / "new.pt", method=method, modules=method.build())
    assert load_checkpoint(tmp_path / "new.pt").method.options.mc_samples == 3
    # a checkpoint written before options existed has no method_options: the defaults apply
    payload = torch.load(tmp_path / "new.pt", weights_only=False)
    del payload["config"]["train"]["method_options"]
    torch.save(payload, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").method.options.mc_samples == 8
    payload["config"]["train"]["method_options"] = {"mc_samples": -1}
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CavlogError, match=r"bad\.pt.*mc_samples=-1: must be >= 1"):
        load_checkpoint(tmp_path / "bad.pt")


def test_adam_is_fused_on_the_cpu_and_continues_a_multi_tensor_state():
    import copy

    from cavlog_core.methods.base import adam

    torch.manual_seed(0)
    a, b = nn.Linear(6, 3), nn.Linear(6, 3)
    b.load_state_dict(a.state_dict())
    plain = torch.optim.Adam(a.parameters(), lr=1e-2)  # what older checkpoints stored
    fused = adam(b.parameters(), lr=1e-2)
    assert fused.param_groups[0]["fused"] is True
    x = torch.randn(16, 6)

    def step(net, opt):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()

    for _ in range(3):  # same update rule
        step(a, plain)
        step(b, fused)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)
    # A multi-tensor state (as in a checkpoint of the previous release) resumes the same way.
    resumed = adam(b.parameters(), lr=1e-2)
    resumed.load_state_dict(copy.deepcopy(plain.state_dict()))
    b.load_state_dict(a.state_dict())
    step(a, plain)
    step(b, resumed)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)
    assert adam([torch.zeros(2, dtype=torch.int64)], lr=1.0).param_groups[0]["fused"] is None


@pytest.mark.parametrize("fused", [True, False])
def test_step_if_finite_skips_a_nan_step_and_keeps_the_state(fused):
    from cavlog_core.methods import step_if_finite

    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1, fused=fused or None)
    p.grad = torch.ones(3)
    step_if_finite(opt, torch.tensor(2.0))
    assert torch.allclose(p.detach(), torch.full((3,), 0.9))  # Adam's first step: lr·sign
    moment = opt.state[p]["exp_avg"].clone()
    p.grad = torch.full((3,), math.nan)
    step_if_finite(opt, torch.tensor(math.inf))
    assert torch.allclose(p.detach(), torch.full((3,), 0.9))
    assert float(opt.state[p]["step"]) == 1 and torch.equal(opt.state[p]["exp_avg"], moment)
    assert not hasattr(opt, "found_inf")  # GradScaler's attribute is not left behind
    p.grad = torch.ones(3)
    step_if_finite(opt, torch.tensor(1.0))
    assert float(opt.state[p]["step"]) == 2 and p.detach()[0] < 0.9


def test_read_logs_keeps_order_keys_and_plain_floats():
    rows = [{"loss": torch.tensor(1.5), "t": 20.0}, {"loss": torch.tensor([2.5]), "phase": 2}]
    assert read_logs(rows) == [{"loss": 1.5, "t": 20.0}, {"loss": 2.5, "phase": 2.0}]
    assert read_logs([]) == [] and read_logs([{"loss": 0.0}]) == [{"loss": 0.0}]


class _RampMap(Method):
    """Test double: the map is the x coordinate (a ramp along dim -2), f_c the corner pixel."""

    description = "test double"

    def build(self):
        return nn.ModuleDict({"model": nn.Identity()})

    def training_step(self, modules, optimizers, batch, iteration):  # pragma: no cover
        raise NotImplementedError

    def anomaly_maps(self, modules, images, brain):
        ramp = torch.arange(images.shape[-2], dtype=torch.float32)[:, None]
        return (ramp + 10 * images).expand_as(images).clone()

    def raw_maps_and_fc(self, modules, images, brain):
        return self.anomaly_maps(modules, images, brain), images[:, 0, 0, 0].clone()


@pytest.mark.parametrize("flips", [1, 2, 4])
def test_map_flips_average_the_maps_of_the_flipped_slices(flips):
    cfg = RunConfig(preprocess=PreprocessConfig(resolution=32),
                    model=ModelConfig(resolution=32, map_flips=flips))
    method = _RampMap(cfg)
    images = torch.zeros(2, 1, 4, 4)
    images[0, 0, 0, 3] = 1.0  # one bright pixel, top right
    brain = torch.ones_like(images, dtype=torch.bool)
    maps, fc = method.maps_and_fc(method.build(), images, brain)
    # By hand: the ramp 0..3 along x; flipping x and back gives 3..0, so with the mirror the
    # ramp averages to 1.5 everywhere; the bright pixel's +10 stays where it was.
    ramp = torch.arange(4.0)[:, None].expand(4, 4)
    expected = ramp if flips == 1 else torch.full((4, 4), 1.5)
    torch.testing.assert_close(maps[1, 0], expected)
    torch.testing.assert_close(maps[0, 0] - maps[1, 0], 10 * images[0, 0])
    torch.testing.assert_close(fc, torch.tensor([0.0, 0.0]))  # the unflipped slices' corner
    torch.testing.assert_close(method.maps(method.build(), images, brain), maps)


def test_map_flips_leave_a_flip_equivariant_map_unchanged_and_refuse_other_counts():
    images, brain = _phantom()
    one = get_method("flair-threshold")(_config("flair-threshold"))
    cfg = _config("flair-threshold")
    four = get_method("flair-threshold")(dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, map_flips=4)))
    torch.testing.assert_close(four.maps(four.build(), images, brain),
                               one.anomaly_maps(one.build(), images, brain))
    with pytest.raises(CavlogError, match="map_flips=3: expected one of 1, 2, 4"):
        ModelConfig(map_flips=3)


def test_map_flips_option_of_train_and_benchmark_and_old_checkpoints():
    from cavlog_core.cli import benchmark as cli_benchmark
    from cavlog_core.cli import train as cli_train

    parser = argparse.ArgumentParser()
    subs = parser.add_subparsers()
    cli_train.add_parser(subs)
    cli_benchmark.add_parser(subs)
    base = ["train", ".", "--out", "x", "--resolution", "64"]
    assert cli_train.config_from_args(parser.parse_args(base)).model.map_flips == 1
    args = parser.parse_args([*base, "--map-flips", "4"])
    assert cli_train.config_from_args(args).model.map_flips == 4
    bench = parser.parse_args(["benchmark", ".", "--out", "b", "--map-flips", "2"])
    assert cli_benchmark._config(bench).model.map_flips == 2
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--map-flips", "3"])
    old = _config("vae").to_dict()
    del old["model"]["map_flips"]  # a checkpoint written before the option: one pass
    assert RunConfig.from_dict(old).model.map_flips == 1
