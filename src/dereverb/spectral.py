"""The STFT and everything built on it, each transform beside its inverse.

Shapes: waveforms ``(..., S)`` float; complex spectrograms ``(..., F, T)`` with ``F = n_fft//2+1``
(full) or ``StftConfig.n_freq`` (trimmed for the network); features ``(B, C, F, T)`` float.

Why these transforms (the question dereverb answers): a spectrogram stored as an RGB image
trains well only because the image pipeline silently applied a dB scale and a [0, 1] range; the
colormap and 8-bit quantisation then make the audio unrecoverable.  Here the same benefit comes
from explicit, invertible steps: dB (or power-law) compression, then mean/std normalisation with
statistics saved in the model, on float arrays.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .config import FeatureConfig, StftConfig


def make_window(cfg: StftConfig) -> Tensor:
    """The analysis window, ``(win_length,)`` float32."""
    if cfg.window == "hann":
        return torch.hann_window(cfg.win_length)
    if cfg.window == "hamming":
        return torch.hamming_window(cfg.win_length)
    return torch.hann_window(cfg.win_length).sqrt()


class Stft(nn.Module):
    """Complex STFT and its inverse with the window as a buffer (moves with ``.to(device)``).

    ``forward``: ``(..., S)`` -> complex ``(..., n_fft//2+1, T)`` with ``T = S // hop + 1``
    (centred frames, zero padded so any length works).  ``inverse`` undoes it exactly
    (``length=`` restores the sample count).
    """

    def __init__(self, cfg: StftConfig = StftConfig()):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", make_window(cfg), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])  # (N, S)
        spec = torch.stft(
            flat,
            n_fft=self.cfg.n_fft,
            hop_length=self.cfg.hop_length,
            win_length=self.cfg.win_length,
            window=self.window.to(flat.dtype),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (N, F, T)
        return spec.reshape(*lead, *spec.shape[-2:])

    def inverse(self, spec: Tensor, length: int | None = None) -> Tensor:
        """Complex ``(..., n_fft//2+1, T)`` -> waveform ``(..., S)``."""
        lead = spec.shape[:-2]
        flat = spec.reshape(-1, *spec.shape[-2:])  # (N, F, T)
        wave = torch.istft(
            flat,
            n_fft=self.cfg.n_fft,
            hop_length=self.cfg.hop_length,
            win_length=self.cfg.win_length,
            window=self.window.to(flat.real.dtype),
            center=True,
            length=length,
        )  # (N, S)
        return wave.reshape(*lead, wave.shape[-1])

    def frames(self, n_samples: int) -> int:
        """Number of frames ``T`` for a signal of ``n_samples``."""
        return n_samples // self.cfg.hop_length + 1


def trim_freq(spec: Tensor, n_freq: int) -> tuple[Tensor, Tensor]:
    """Split ``(..., F_full, T)`` into the ``n_freq`` kept bins and the dropped top bins."""
    return spec[..., :n_freq, :], spec[..., n_freq:, :]


def restore_freq(spec: Tensor, n_fft: int, dropped: Tensor | None = None) -> Tensor:
    """Append the bins :func:`trim_freq` dropped: ``dropped`` if given (e.g. the input's), else 0."""
    n_missing = n_fft // 2 + 1 - spec.shape[-2]
    if n_missing == 0:
        return spec
    if dropped is None:
        dropped = spec.new_zeros(*spec.shape[:-2], n_missing, spec.shape[-1])
    return torch.cat([spec, dropped], dim=-2)


# --- compression: magnitude <-> compressed features -------------------------------------------


def magnitude_to_db(mag: Tensor, floor_db: float = -100.0) -> Tensor:
    """``20 log10(|X|)`` in dB relative to 1.0, floored at ``floor_db`` (avoids log(0))."""
    floor = 10.0 ** (floor_db / 20.0)
    return 20.0 * torch.log10(mag.clamp_min(floor))


def db_to_magnitude(db: Tensor) -> Tensor:
    """Inverse of :func:`magnitude_to_db` (above the floor)."""
    return torch.pow(10.0, db / 20.0)


# The power-law compressions raise magnitudes to this first: d/dx x ** p is infinite at 0.
MAG_FLOOR = 1e-12


def power_compress(mag: Tensor, power: float = 0.3) -> Tensor:
    """``|X| ** power``: the compression used by complex-target models (e.g. Braun et al. 2021).

    Magnitudes below ``MAG_FLOOR`` (digital silence) are raised to it, as in :func:`compress_complex`:
    ``d/dx x ** p`` is infinite at 0, so a mask model trained through this compression got a NaN
    gradient (and diverged in its first steps) wherever the reverberant input was exactly zero.
    """
    return mag.clamp_min(MAG_FLOOR).pow(power)


def power_decompress(feat: Tensor, power: float = 0.3) -> Tensor:
    """Inverse of :func:`power_compress`."""
    return feat.clamp_min(0).pow(1.0 / power)


def compress(mag: Tensor, cfg: FeatureConfig) -> Tensor:
    """Magnitude -> compressed feature (dB or power law) as set in ``cfg``."""
    if cfg.compression == "log":
        return magnitude_to_db(mag, cfg.floor_db)
    return power_compress(mag, cfg.power)


def decompress(feat: Tensor, cfg: FeatureConfig) -> Tensor:
    """Compressed feature -> magnitude; inverse of :func:`compress`."""
    if cfg.compression == "log":
        return db_to_magnitude(feat)
    return power_decompress(feat, cfg.power)


def compress_complex(spec: Tensor, power: float = 0.3) -> Tensor:
    """Compress a complex spectrogram's magnitude, keep its phase: ``|X|^p e^{j angle X}``."""
    mag = spec.abs()
    return spec * (mag.clamp_min(MAG_FLOOR).pow(power - 1.0))


def decompress_complex(spec: Tensor, power: float = 0.3) -> Tensor:
    """Inverse of :func:`compress_complex`."""
    mag = spec.abs()
    return spec * (mag.clamp_min(MAG_FLOOR).pow(1.0 / power - 1.0))


# --- real/imag channels ------------------------------------------------------------------------


def complex_to_channels(spec: Tensor) -> Tensor:
    """Complex ``(B, F, T)`` -> float ``(B, 2, F, T)`` with channels (real, imag)."""
    return torch.stack([spec.real, spec.imag], dim=1)


def channels_to_complex(x: Tensor) -> Tensor:
    """Float ``(B, 2, F, T)`` -> complex ``(B, F, T)``; inverse of :func:`complex_to_channels`."""
    return torch.complex(x[:, 0].float(), x[:, 1].float())


# --- normalisation -----------------------------------------------------------------------------


class Normalizer(nn.Module):
    """Mean/std normalisation of features, with statistics that are saved in the model.

    ``mode``: ``"global"`` (scalar mean/std), ``"per_freq"`` (one per bin) or ``"none"``.
    Buffers ``mean`` and ``std`` are ``(F, 1)`` (or ``(1, 1)``) so they broadcast over
    ``(B, C, F, T)``.
    """

    def __init__(self, n_freq: int, mode: str = "per_freq"):
        super().__init__()
        self.mode = mode
        rows = n_freq if mode == "per_freq" else 1
        self.register_buffer("mean", torch.zeros(rows, 1))
        self.register_buffer("std", torch.ones(rows, 1))

    @torch.no_grad()
    def fit(self, feats: Tensor) -> "Normalizer":
        """Estimate statistics from features ``(N, F, T)`` (or ``(N, C, F, T)``, pooled over C)."""
        if self.mode == "none":
            return self
        x = feats.reshape(-1, feats.shape[-2], feats.shape[-1]).double()  # (N, F, T)
        if self.mode == "global":
            mean, std = x.mean().reshape(1, 1), x.std().reshape(1, 1)
        else:
            mean = x.mean(dim=(0, 2)).unsqueeze(-1)  # (F, 1)
            std = x.std(dim=(0, 2)).unsqueeze(-1)
        self.mean.copy_(mean.float())
        self.std.copy_(std.float().clamp_min(1e-5))
        return self

    def forward(self, feats: Tensor) -> Tensor:
        """Normalise ``(..., F, T)``."""
        return (feats - self.mean) / self.std

    def inverse(self, feats: Tensor) -> Tensor:
        """Undo :meth:`forward`."""
        return feats * self.std + self.mean

    def to_dict(self) -> dict[str, Any]:
        """Statistics as plain lists (for JSON)."""
        return {"mode": self.mode, "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], n_freq: int) -> "Normalizer":
        """Rebuild from :meth:`to_dict` output."""
        norm = cls(n_freq, d["mode"])
        norm.mean.copy_(torch.tensor(d["mean"]).reshape_as(norm.mean))
        norm.std.copy_(torch.tensor(d["std"]).reshape_as(norm.std))
        return norm


# --- reconstruction from a magnitude -------------------------------------------------------------


def with_phase(mag: Tensor, phase_from: Tensor) -> Tensor:
    """Complex spectrogram with magnitude ``mag`` and the phase of complex ``phase_from``."""
    unit = phase_from / phase_from.abs().clamp_min(1e-12)
    unit = torch.where(phase_from.abs() > 0, unit, torch.ones_like(unit))
    return mag * unit


def griffin_lim(
    mag: Tensor,
    stft: Stft,
    length: int,
    n_iter: int = 32,
    momentum: float = 0.99,
    init_phase: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Waveform whose STFT magnitude approaches ``mag`` (full bins ``(..., F, T)``).

    ``momentum = 0`` is plain Griffin-Lim (Griffin & Lim 1984); ``momentum > 0`` is the fast
    Griffin-Lim of Perraudin, Balazs & Sondergaard (2013), where ``0.99`` is their recommended value.
    ``init_phase``: complex ``(..., F, T)`` whose phase starts the iteration (e.g. the reverberant
    one); otherwise a random phase from ``generator``.  Works on batches.

    Returns:
        ``(..., length)`` waveform.
    """
    if init_phase is not None:
        spec = with_phase(mag, init_phase)
    else:
        angle = torch.rand(mag.shape, generator=generator, dtype=mag.dtype) * (2 * math.pi)
        spec = torch.polar(mag, angle.to(mag.device))
    prev = torch.zeros_like(spec)
    for _ in range(n_iter):
        proj = stft(stft.inverse(spec, length))  # consistent spectrogram nearest to spec
        new = with_phase(mag, proj)
        accel = new + momentum * (new - prev) if momentum > 0 else new
        prev = new
        spec = accel
    final = prev if n_iter > 0 else spec
    return stft.inverse(final, length)

