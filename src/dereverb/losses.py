"""Training losses: L1 on the network's features (plain, or relative to each input's own), the
pix2pix adversarial loss for the GAN variant, and the validation measures SI-SDR and
log-spectral distance.

Every loss returns a scalar tensor to minimise; batch axes are averaged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import DereverbError


def spectral_loss(pred: Tensor, target: Tensor) -> Tensor:
    """L1 between normalised features ``(B, C, F, T)`` (Ernst et al. 2018)."""
    return spectral_loss_per_example(pred, target).mean()


def relative_spectral_loss(pred: Tensor, target: Tensor, unprocessed: Tensor, floor: float = 0.1) -> Tensor:
    """Feature loss with each example weighted by ``1 / (floor + its input's own loss)``.

    ``pred``, ``target``, ``unprocessed`` ``(B, C, F, T)``: the input in the output's feature space
    (what doing nothing would score).  The weights are normalised to mean 1 over the batch, so the
    loss keeps the plain loss's scale; an example whose input is already close to its target
    (nearly dry, near the microphone) weighs up to ``(floor + far) / floor`` times a far-field one,
    so damaging it costs what it costs a listener, relative to the input.
    """
    err = spectral_loss_per_example(pred, target)
    with torch.no_grad():
        weight = 1.0 / (floor + spectral_loss_per_example(unprocessed, target))
        weight = weight / weight.mean()
    return (weight * err).mean()


def spectral_loss_per_example(pred: Tensor, target: Tensor) -> Tensor:
    """:func:`spectral_loss` per example, ``(B, ...)`` -> ``(B,)``."""
    return (pred - target).abs().mean(dim=tuple(range(1, pred.ndim)))


def si_sdr(est: Tensor, ref: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SDR in dB, ``(B, S), (B, S) -> (B,)`` (Le Roux et al., ICASSP 2019)."""
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    scale = (est * ref).sum(-1, keepdim=True) / (ref.square().sum(-1, keepdim=True) + eps)
    target = scale * ref
    noise = est - target
    return 10 * torch.log10((target.square().sum(-1) + eps) / (noise.square().sum(-1) + eps))


def log_spectral_distance(est_mag: Tensor, ref_mag: Tensor, floor_db: float = -80.0) -> Tensor:
    """Log-spectral distance in dB, ``(B, F, T)`` magnitudes -> ``(B,)``.

    RMS over frequency of the dB difference, averaged over frames; both spectra are floored at
    ``floor_db`` below each reference's peak so silent bins do not dominate.
    """
    peak = ref_mag.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    floor = peak * 10 ** (floor_db / 20)
    diff = 20 * (torch.maximum(est_mag, floor).log10() - torch.maximum(ref_mag, floor).log10())
    return diff.square().mean(dim=-2).sqrt().mean(dim=-1)


def adversarial_loss(logits: Tensor, real: bool, kind: str = "lsgan") -> Tensor:
    """GAN loss of PatchGAN ``logits`` (B, 1, F', T') against the label ``real``.

    ``"lsgan"``: least squares (Mao et al., ICCV 2017), the stable default;
    ``"bce"``: the original binary cross-entropy used by pix2pix (Isola et al., CVPR 2017).
    """
    label = torch.full_like(logits, 1.0 if real else 0.0)
    if kind == "lsgan":
        return F.mse_loss(logits.float(), label.float())
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits.float(), label.float())
    raise DereverbError(f"unknown GAN loss {kind!r} (lsgan, bce)")


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: str = "lsgan") -> Tensor:
    """Half the sum of the real and fake terms (pix2pix halves D's objective to slow it down)."""
    return 0.5 * (adversarial_loss(real_logits, True, kind) + adversarial_loss(fake_logits, False, kind))


def generator_loss(fake_logits: Tensor, reconstruction: Tensor, l1_weight: float = 100.0,
                   kind: str = "lsgan") -> Tensor:
    """pix2pix generator objective: fool D, plus ``l1_weight`` x the reconstruction loss (the
    run's own: :func:`spectral_loss`, or :func:`relative_spectral_loss`), a scalar."""
    return adversarial_loss(fake_logits, True, kind) + l1_weight * reconstruction
