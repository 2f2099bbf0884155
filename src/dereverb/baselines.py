"""Reference systems every dereverberation result is compared with.

- ``unprocessed``: the reverberant input itself (the floor any method must beat);
- ``wpe``: single-channel weighted prediction error dereverberation (Nakatani et al., "Speech
  dereverberation based on variance-normalized delayed linear prediction", IEEE TASLP 18(7),
  2010; Yoshioka & Nakatani, IEEE TASLP 20(10), 2012) via ``nara_wpe`` (Drude et al., ITG 2018);
  one channel needs longer filters than the multi-channel default (10 taps), hence 40;
- ``oracle-magnitude``: the clean magnitude with the reverberant phase, the ceiling of any method
  that estimates a magnitude and keeps the reverberant phase (as dereverb's magnitude models do).

All take and return float ``(S,)`` arrays at one rate; outputs have the input's length.
"""

from __future__ import annotations

import numpy as np
import scipy.signal as ss

from .errors import DereverbError
from .wpe import WpeConfig

BASELINES = ("unprocessed", "wpe", "oracle-magnitude")
NEEDS_CLEAN = ("oracle-magnitude",)


def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Complex ``(F, T)`` Hann STFT, zero padded at both ends (inverted by :func:`_istft`)."""
    return ss.stft(x, nperseg=n_fft, noverlap=n_fft - hop, window="hann", boundary="zeros",
                   padded=True)[2]


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    y = ss.istft(spec, nperseg=n_fft, noverlap=n_fft - hop, window="hann", boundary=True)[1]
    y = y[:length]
    return np.pad(y, (0, length - y.size)) if y.size < length else y


def wpe(reverb: np.ndarray, cfg: WpeConfig = WpeConfig()) -> np.ndarray:
    """Single-channel WPE of ``reverb (S,)``; returns ``(S,)`` float32."""
    from nara_wpe.wpe import wpe as nara_wpe

    x = np.asarray(reverb, dtype=np.float64)
    spec = _stft(x, cfg.n_fft, cfg.hop_length)  # (F, T)
    out = nara_wpe(spec[:, None, :], taps=cfg.taps, delay=cfg.delay,
                   iterations=cfg.iterations, statistics_mode="full")[:, 0, :]  # (F, 1, T) -> (F, T)
    return _istft(out, cfg.n_fft, cfg.hop_length, x.size).astype(np.float32)


def oracle_magnitude(reverb: np.ndarray, clean: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """``|STFT(clean)| * exp(j angle STFT(reverb))`` back to a waveform ``(S,)`` (``reverb``'s length).

    ``clean`` must be aligned with ``reverb``; a shorter one is zero padded, a longer one cut.
    """
    x = np.asarray(reverb, dtype=np.float64)
    c = np.asarray(clean, dtype=np.float64)[: x.size]
    c = np.pad(c, (0, x.size - c.size))
    sx, sc = _stft(x, n_fft, hop), _stft(c, n_fft, hop)
    spec = np.abs(sc) * np.exp(1j * np.angle(sx))
    return _istft(spec, n_fft, hop, x.size).astype(np.float32)


def run_baseline(name: str, reverb: np.ndarray, clean: np.ndarray | None = None,
                 wpe_cfg: WpeConfig = WpeConfig()) -> np.ndarray:
    """Output ``(S,)`` of baseline ``name`` (one of :data:`BASELINES`) for ``reverb (S,)``."""
    if name == "unprocessed":
        return np.asarray(reverb, dtype=np.float32)
    if name == "wpe":
        return wpe(reverb, wpe_cfg)
    if name == "oracle-magnitude":
        if clean is None:
            raise DereverbError("oracle-magnitude needs the clean reference (--clean DIR)")
        return oracle_magnitude(reverb, clean, wpe_cfg.n_fft, wpe_cfg.hop_length)
    raise DereverbError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
