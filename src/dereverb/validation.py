"""Validation during training: a model's SI-SDR (dB) and log-spectral distance (dB) on fixed
reverberant/clean pairs, plus PESQ and ESTOI when :mod:`dereverb.metrics` loads, and the same
SI-SDR/LSD of the unprocessed input as a baseline.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import losses
from .model import DereverbModel


@torch.no_grad()
def validate(model: DereverbModel, items: list[dict], device: torch.device, with_pesq: bool,
             batch_size: int = 8) -> tuple[dict[str, float], list[torch.Tensor]]:
    """Mean SI-SDR (dB) and log-spectral distance (dB), plus PESQ/ESTOI when dereverb.metrics loads.

    Items of equal length go through the network ``batch_size`` at a time: in eval mode each
    output is the one the item would get alone."""
    model.eval()
    metrics = _metrics_module() if with_pesq else None
    rows, outputs = [], []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        for item, est in zip(chunk, _enhance(model, chunk, device)):
            est, clean = est[None], item["clean"].to(device)[None]  # (1, S)
            row = {"si_sdr": losses.si_sdr(est, clean).item(),
                   "lsd": losses.log_spectral_distance(model.stft(est).abs(), model.stft(clean).abs()).item()}
            if metrics is not None:
                ref, out, sr = clean[0].cpu().numpy(), est[0].cpu().numpy(), model.stft_config.sample_rate
                row.update(pesq=float(metrics.pesq(ref, out, sr)), estoi=float(metrics.estoi(ref, out, sr)))
            rows.append(row)
            outputs.append(est[0].cpu())
    model.train()
    means = {k: _finite_mean([r[k] for r in rows]) for k in rows[0]} if rows else {}
    return means, outputs


def _enhance(model: DereverbModel, items: list[dict], device: torch.device) -> list[torch.Tensor]:
    """Enhanced ``(S_i,)`` waveforms of ``items``: one network pass when their lengths agree."""
    waves = [item["reverb"].to(device) for item in items]
    if len({len(w) for w in waves}) == 1:
        return list(model.enhance_wave(torch.stack(waves)))  # (B, S) -> B x (S,)
    return [model.enhance_wave(w[None])[0] for w in waves]


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values (a metric is NaN where it is undefined, e.g. ESTOI on silence)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _metrics_module():
    try:
        from . import metrics
    except ImportError:
        return None
    return metrics


def unprocessed(model: DereverbModel, item: dict, device: torch.device) -> dict[str, float]:
    """SI-SDR and LSD (dB) of an item's reverberant input against its clean target: the baseline."""
    reverb, clean = item["reverb"].to(device)[None], item["clean"].to(device)[None]  # (1, S)
    return {"si_sdr": losses.si_sdr(reverb, clean).item(),
            "lsd": losses.log_spectral_distance(model.stft(reverb).abs(), model.stft(clean).abs()).item()}
