"""Additive noise for training pairs: generated coloured noise and mixing at a given SNR.

Real reverberant recordings carry noise too (the room recording in ``examples/`` has a masker),
and a model trained on noise-free pairs leaves it, or mistakes it for reverberation.  The
on-the-fly stream (:class:`data.ReverbPairs`, ``data.noise_prob``) adds noise to the reverberant
input only, so the target stays the clean direct path: the network learns to remove both.
Recorded noise comes from ``data.noise`` files; without them, :func:`colored_noise` stands in for
stationary room noise (fans, air conditioning, hiss).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft


def colored_noise(n: int, slope_db_per_octave: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise ``(n,)`` float32 of unit RMS whose power spectrum falls by
    ``-slope_db_per_octave`` dB per octave (0: white, -3: pink, -6: brown)."""
    spec = sfft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = f[1] if len(f) > 1 else 1.0  # no infinite gain at DC
    spec *= f ** (slope_db_per_octave / (20 * np.log10(2)))  # amplitude: half the power slope in dB
    x = sfft.irfft(spec, n)
    return (x / max(float(np.sqrt(np.mean(x**2))), 1e-12)).astype(np.float32)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``signal + g * noise`` ``(S,)`` float32 with ``10 log10(sum(signal^2) / sum((g noise)^2))
    == snr_db``; a silent noise leaves the signal as it is."""
    p_noise = float(np.sum(np.square(noise, dtype=np.float64)))
    if p_noise <= 0:
        return np.asarray(signal, dtype=np.float32)
    p_signal = float(np.sum(np.square(signal, dtype=np.float64)))
    g = np.sqrt(p_signal / p_noise * 10 ** (-snr_db / 10))
    return (signal + np.float32(g) * noise).astype(np.float32)
