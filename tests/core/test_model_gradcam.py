"""ResNetVAE architecture, Grad-CAM against a manual computation, losses on tiny hand cases."""

import math

import pytest
import torch
from torch import nn

from cavlog_core.config import ModelConfig, PreprocessConfig, RunConfig
from cavlog_core.methods import get_method
from cavlog_core.models import (
    EncoderOutput,
    ResNetVAE,
    VAEOutput,
    attention,
    constraint_penalty,
    encoder_cam,
    grad_cam,
    kl_divergence,
    reconstruction_loss,
    size_constraint,
    ssim,
    upsample_cam,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and a busy machine makes them spin.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_parameter_count_at_224_width_1():
    n = sum(p.numel() for p in ResNetVAE().parameters())
    assert abs(n - 14.5e6) / 14.5e6 < 0.10, n


@pytest.mark.parametrize("resolution", [64, 128, 224])
def test_output_shapes_and_stage_sizes(resolution):
    x = torch.rand(2, 1, resolution, resolution)
    for stage, (div, ch) in enumerate([(4, 8), (8, 16), (16, 32), (32, 64)], start=1):
        m = ResNetVAE(resolution=resolution, width=0.125, latent_dim=5, cam_stage=stage)
        enc = m.encode(x)
        assert isinstance(enc, EncoderOutput)
        side = resolution // div
        assert enc.features.shape == (2, ch, side, side)
        assert enc.mu.shape == enc.logvar.shape == (2, 5)
    out = m(x)
    assert isinstance(out, VAEOutput)
    assert out.logits.shape == (2, 1, resolution, resolution)
    assert m.decode(out.z).shape == (2, 1, resolution, resolution)


def test_same_output_type_in_train_and_eval_and_eval_is_deterministic():
    m = ResNetVAE.from_config(ModelConfig(resolution=64, width=0.125))
    x = torch.rand(3, 1, 64, 64)
    train_out = m.train()(x)
    m.eval()
    a, b = m(x), m(x)
    assert type(train_out) is type(a) is VAEOutput
    torch.testing.assert_close(a.z, a.mu)  # no sampling in evaluation mode
    torch.testing.assert_close(a.logits, b.logits)
    assert not torch.equal(train_out.z, train_out.mu)


def test_bad_input_shape_names_the_shape():
    m = ResNetVAE(resolution=64, width=0.125)
    with pytest.raises(ValueError, match=r"\(2, 1, 32, 32\)"):
        m(torch.rand(2, 1, 32, 32))


def test_channels_last_gives_the_same_result():
    m = ResNetVAE(resolution=64, width=0.125).eval()
    x = torch.rand(2, 1, 64, 64)
    ref = m(x).logits
    m_cl = m.to(memory_format=torch.channels_last)
    out = m_cl(x.contiguous(memory_format=torch.channels_last)).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_grad_cam_equals_manual_computation_on_tiny_net():
    # mu = W · flatten(A²): d(Σ_b Σ_j mu_bj)/dA_bkij = 2 A_bkij Σ_j W[j, (k,i,j)].
    torch.manual_seed(1)
    b, c, h, w, z = 2, 3, 2, 2, 4
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    conv = nn.Conv2d(c, c, 1, dtype=torch.float64)
    lin = nn.Linear(c * h * w, z, dtype=torch.float64)
    a = conv(x)
    mu = lin((a * a).flatten(1))
    cam = grad_cam(a, mu, create_graph=False)

    col = lin.weight.detach().sum(dim=0).view(1, c, h, w)  # Σ_j W[j, :]
    grads = 2 * a.detach() * col
    manual = torch.zeros(b, h, w, dtype=torch.float64)
    for bi in range(b):
        for k in range(c):
            alpha = grads[bi, k].mean()
            manual[bi] += alpha * a.detach()[bi, k]
    torch.testing.assert_close(cam, manual)
    # no ReLU: the raw map keeps negative values
    assert cam.shape == (b, h, w)


def test_grad_cam_linear_case_by_hand():
    # One image, 2 channels of 1x2 pixels, mu = 1·A[0,0,0] + 3·A[1,0,1]; alpha = (0.5, 1.5).
    a = torch.tensor([[[[1.0, 2.0]], [[4.0, -2.0]]]], requires_grad=True)
    mu = (a[:, 0, 0, 0] + 3 * a[:, 1, 0, 1]).view(1, 1)
    cam = grad_cam(a, mu, create_graph=False)
    torch.testing.assert_close(cam, torch.tensor([[[0.5 * 1 + 1.5 * 4, 0.5 * 2 + 1.5 * -2]]]))


def test_constraint_gradient_reaches_the_encoder_only_through_create_graph():
    m = ResNetVAE(resolution=64, width=0.125)
    x = torch.rand(4, 1, 64, 64)
    for create_graph in (True, False):
        m.zero_grad(set_to_none=True)
        att = attention(m, x, create_graph=create_graph, retain_graph=True)
        penalty, fc = constraint_penalty(att.attention, kind="barrier", p=0.2, t=20.0, lam=10.0)
        assert fc.shape == (4,)
        penalty.backward()
        stem, layer1 = m.stem[0].weight.grad, m.stages[0][0].conv1.weight.grad
        assert stem is not None and stem.abs().sum() > 0
        assert layer1 is not None and layer1.abs().sum() > 0
        later = m.stages[3][0].conv1.weight.grad  # after the CAM stage: only via alpha
        if create_graph:
            assert later is not None and later.abs().sum() > 0
        else:
            assert later is None or later.abs().sum() == 0
        assert m.up[0].main[0].weight.grad is None  # the decoder plays no part


def test_encoder_cam_and_anomaly_maps_match_full_forward():
    cfg = RunConfig(preprocess=PreprocessConfig(resolution=64),
                    model=ModelConfig(resolution=64, width=0.125, cam_stage=2))
    method = get_method("constrained")(cfg)
    modules = method.build().eval()
    x = torch.rand(3, 1, 64, 64)
    ref = attention(modules["model"], x, create_graph=False).cam
    with torch.no_grad():
        cam = encoder_cam(modules["model"], x)
        maps = method.anomaly_maps(modules, x, x > 0.5)
    torch.testing.assert_close(cam, ref, rtol=1e-5, atol=1e-6)
    assert cam.shape == (3, 8, 8)
    assert maps.shape == (3, 1, 64, 64) and not maps.requires_grad
    torch.testing.assert_close(maps, upsample_cam(ref, 64), rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        xi = x.clone()  # an inference tensor
        torch.testing.assert_close(method.anomaly_maps(modules, xi, xi > 0.5), maps)
    joint, fc = method.raw_maps_and_fc(modules, x, x > 0.5)
    torch.testing.assert_close(joint, maps)
    torch.testing.assert_close(fc, size_constraint(torch.sigmoid(ref), cfg.train.p))


def test_loss_terms_on_hand_cases():
    x = torch.tensor([[[[0.0, 1.0]]]])
    logits = torch.zeros(1, 1, 1, 2)  # sigmoid = 0.5 everywhere
    assert reconstruction_loss(logits, x, "bce").item() == pytest.approx(math.log(2))
    assert reconstruction_loss(logits, x, "l2").item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="'huber'"):
        reconstruction_loss(logits, x, "huber")
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # 0.5 * (mu² + σ² - 1 - log σ²) per dim: 0.5 and 0.5 * (1 - log 2); mean of both
    assert kl_divergence(mu, logvar).item() == pytest.approx((0.5 + 0.5 * (1 - math.log(2))) / 2)
    assert kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0

    a = torch.tensor([[[0.9, 0.7]], [[0.2, 0.4]]])  # mean attention 0.8 and 0.3
    fc = size_constraint(a, 0.2)
    torch.testing.assert_close(fc, torch.tensor([0.0, 0.5]))
    l2, _ = constraint_penalty(a, kind="l2", p=0.2, t=20.0, lam=10.0)
    assert l2.item() == pytest.approx(10 * (0.0 + 0.25) / 2)
    l1, _ = constraint_penalty(a, kind="pixel-l1", p=0.2, t=20.0, lam=2.0)
    assert l1.item() == pytest.approx(2 * (0.1 + 0.3 + 0.8 + 0.6) / 4)
    none, _ = constraint_penalty(a, kind="none", p=0.2, t=20.0, lam=2.0)
    assert none.item() == 0.0


def test_ssim_identity_and_decrease():
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    assert (ssim(x, noisy) < 0.9).all()
    assert reconstruction_loss(torch.logit(x.clamp(1e-4, 1 - 1e-4)), x, "ssim").item() < 1e-3
