"""Losses against hand-computed values and their invariants."""

from __future__ import annotations

import math

import pytest
import torch

from dereverb import losses
from dereverb.errors import DereverbError


def _noise(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_spectral_loss_is_the_mean_absolute_error():
    a, b = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 2.0)
    b[1] = -1.0
    assert losses.spectral_loss(a, b).item() == 1.5
    assert losses.spectral_loss_per_example(a, b).tolist() == [2.0, 1.0]


def test_si_sdr_known_values():
    ref = _noise(2, 8000)
    noise = _noise(2, 8000, seed=1)
    noise = noise - (noise * ref).sum(-1, keepdim=True) / ref.square().sum(-1, keepdim=True) * ref  # orthogonal
    noise = noise - noise.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    noise = noise / noise.norm(dim=-1, keepdim=True) * ref.norm(dim=-1, keepdim=True) / math.sqrt(10)
    got = losses.si_sdr(3.0 * ref + 3.0 * noise, ref)  # 10 dB, and invariant to the gain 3
    assert torch.allclose(got, torch.full((2,), 10.0), atol=1e-3)
    assert losses.si_sdr(ref, ref).min() > 60


def test_relative_spectral_loss_weights_examples_by_their_inputs_own_error():
    target = torch.zeros(2, 1, 3, 4)
    pred = torch.full_like(target, 0.5)  # both examples off by 0.5
    same = torch.ones_like(target)  # both inputs off by 1: equal weights, the plain loss
    assert math.isclose(losses.relative_spectral_loss(pred, target, same).item(), 0.5, rel_tol=1e-6)
    unprocessed = torch.stack([torch.full((1, 3, 4), 0.1), torch.full((1, 3, 4), 0.9)])
    pred = torch.stack([torch.full((1, 3, 4), 0.2), torch.zeros(1, 3, 4)])  # only the near one is hurt
    w = torch.tensor([1 / 0.2, 1 / 1.0])
    w = w / w.mean()
    expected = (w[0] * 0.2).item() / 2
    assert math.isclose(losses.relative_spectral_loss(pred, target, unprocessed, floor=0.1).item(), expected, rel_tol=1e-6)
    assert expected > losses.spectral_loss(pred, target).item()  # the harm to the near example counts more
    # the weights carry no gradient
    unprocessed.requires_grad_(True)
    pred.requires_grad_(True)
    losses.relative_spectral_loss(pred, target, unprocessed).backward()
    assert unprocessed.grad is None and pred.grad is not None


def test_log_spectral_distance_of_a_gain_is_its_db():
    ref = _noise(1, 257, 40).abs() + 0.1
    assert torch.allclose(losses.log_spectral_distance(ref * 10 ** (6 / 20), ref), torch.tensor([6.0]), atol=1e-4)
    assert losses.log_spectral_distance(ref, ref).item() == 0.0


@pytest.mark.parametrize("kind", ["lsgan", "bce"])
def test_adversarial_losses(kind):
    sure_real, sure_fake = torch.full((2, 1, 5, 5), 20.0), torch.full((2, 1, 5, 5), -20.0)
    if kind == "lsgan":
        sure_real, sure_fake = torch.ones(2, 1, 5, 5), torch.zeros(2, 1, 5, 5)
    assert losses.adversarial_loss(sure_real, True, kind).item() < 1e-6
    assert losses.adversarial_loss(sure_fake, False, kind).item() < 1e-6
    assert losses.discriminator_loss(sure_real, sure_fake, kind).item() < 1e-6
    assert losses.adversarial_loss(sure_fake, True, kind).item() > 0.9
    g = losses.generator_loss(sure_real, torch.tensor(0.5), l1_weight=100.0, kind=kind)
    assert math.isclose(g.item(), 50.0, rel_tol=1e-5)  # D fooled: only the weighted reconstruction
    with pytest.raises(DereverbError, match="unknown GAN loss"):
        losses.adversarial_loss(sure_real, True, "wgan")
