"""``cam_weights="gradient-running-bn"``: the training CAM is the map shown at inference."""

import numpy as np
import torch

from cavlog_core.models import ResNetVAE
from cavlog_core.models.gradcam import attention, compute_cam, grad_cam, running_statistics

R = 64


def trained_stats_model(seed: int = 0) -> ResNetVAE:
    """A small model whose BatchNorm running statistics are not the initial 0 / 1."""
    torch.manual_seed(seed)
    model = ResNetVAE(resolution=R, width=0.125)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 1, R, R) * 2 + 0.5)
    return model


def test_training_cam_equals_the_evaluation_mode_cam():
    model = trained_stats_model()
    features = torch.rand(3, model.stages[0][0].conv1.in_channels, R // 4, R // 4)
    features.requires_grad_(True)
    model.train()
    before = [b.clone() for b in model.buffers()]
    cam_train = compute_cam(model, features, torch.zeros(3, 32), weights="gradient-running-bn",
                            create_graph=True)
    for a, b in zip(before, model.buffers()):  # running statistics neither used up nor updated
        torch.testing.assert_close(a, b)
    model.eval()
    eval_features = features.detach().clone().requires_grad_(True)
    mu, _ = model.encode_from(eval_features)
    cam_eval = grad_cam(eval_features, mu, create_graph=False)
    torch.testing.assert_close(cam_train, cam_eval, rtol=1e-5, atol=1e-6)
    # ...whereas the paper's batch-statistics CAM in training mode is a different map.
    model.train()
    mu_b, _ = model.encode_from(features)
    cam_batch = grad_cam(features, mu_b, create_graph=False)
    assert not torch.allclose(cam_batch, cam_eval, atol=1e-3)


def test_the_constraint_trains_through_the_running_statistics_map():
    model = trained_stats_model(1)
    model.train()
    att = attention(model, torch.rand(4, 1, R, R), create_graph=True,
                    weights="gradient-running-bn")
    (1 - att.attention.mean()).backward()
    grads = [p.grad for p in model.stages[1].parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0  # second-order terms reach layer2
    # The patch is gone after the block: training-mode BatchNorms use batch statistics again.
    x = torch.rand(4, 2, 8, 8) * 3
    bn = torch.nn.BatchNorm2d(2).train()
    with running_statistics(bn):
        y_run = bn(x)
    np.testing.assert_allclose(y_run.detach().numpy(), x.numpy() / np.sqrt(1 + bn.eps),
                               rtol=1e-6)
    y = bn(x)
    assert abs(float(y.mean())) < 1e-5  # batch statistics: zero mean per channel
