"""SRMR: the speech-to-reverberation modulation energy ratio (non-intrusive; higher is better).

Falk, Zheng & Chan, "A non-intrusive quality and intelligibility measure of reverberant and
dereverberated speech", IEEE TASLP 18(7):1766-1774, 2010; the non-intrusive measure of the REVERB
challenge (Kinoshita et al. 2016).  Steps, as in the paper's original (not "fast", not normalised)
variant:

1. a 23-channel 4th-order gammatone filterbank (Slaney's IIR design), centres ERB-spaced from
   125 Hz to just below ``sr/2`` (about 7 kHz at 16 kHz);
2. the temporal envelope of each channel: magnitude of the analytic (Hilbert) signal;
3. 8 second-order band-pass modulation filters, Q = 2, centres log-spaced 4-128 Hz;
4. modulation energy in 256 ms Hamming frames every 64 ms, averaged over frames: ``E (23, 8)``;
5. ``SRMR = sum_k<=4 E / sum_{5<=k<=K*} E``, where ``K*`` (5..8) drops the highest modulation
   bands when the ERB bandwidth of the acoustic channel holding 90% of the cumulative energy is
   below their lower cut-off (speech bandwidth adaptation, section III-C of the paper).

Speech at 8 or 16 kHz is scored at its rate; other rates are resampled to 16 kHz.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.signal as ss

from ..audio import resample
from ._common import check_single, undefined

EAR_Q, MIN_BW = 9.26449, 24.7  # Glasberg & Moore ERB parameters, as in Slaney (1993)
N_ACOUSTIC, LOW_FREQ = 23, 125.0
MOD_LOW, MOD_HIGH, N_MOD, MOD_Q = 4.0, 128.0, 8, 2.0
WIN_S, HOP_S = 0.256, 0.064


def erb_centres(sr: int, n: int = N_ACOUSTIC, low: float = LOW_FREQ) -> np.ndarray:
    """Gammatone centre frequencies ``(n,)`` in Hz, ascending, equally spaced on the ERB scale
    between ``low`` (included) and ``sr/2`` (excluded), per Slaney's ``ERBSpace``."""
    step = (np.log(low + EAR_Q * MIN_BW) - np.log(sr / 2 + EAR_Q * MIN_BW)) / n
    cf = -EAR_Q * MIN_BW + np.exp(np.arange(1, n + 1) * step) * (sr / 2 + EAR_Q * MIN_BW)
    return cf[::-1]


def erb(f: np.ndarray) -> np.ndarray:
    """Equivalent rectangular bandwidth (Hz) at ``f`` Hz (Glasberg & Moore 1990)."""
    return f / EAR_Q + MIN_BW


def modulation_centres() -> np.ndarray:
    """The 8 modulation-filter centres ``(8,)`` in Hz, log-spaced from 4 to 128 Hz."""
    return np.geomspace(MOD_LOW, MOD_HIGH, N_MOD)


def modulation_filter(fc: float, sr: int, q: float = MOD_Q) -> tuple[np.ndarray, np.ndarray]:
    """``(b, a)`` of a 2nd-order band-pass with unit gain at ``fc``: the analog prototype
    ``(s/q) / (s^2 + s/q + 1)`` through the bilinear transform, pre-warped at ``fc``."""
    w = np.tan(np.pi * fc / sr)
    bw = w / q
    b = np.array([bw, 0.0, -bw])
    a = np.array([1.0 + bw + w * w, 2.0 * w * w - 2.0, 1.0 - bw + w * w])
    return b / a[0], a / a[0]


def envelope(x: np.ndarray, sr: int, cf: float) -> np.ndarray:
    """Hilbert envelope ``(S,)`` of ``x (S,)`` through the gammatone filter centred at ``cf`` Hz."""
    band = ss.sosfilt(ss.tf2sos(*ss.gammatone(cf, "iir", fs=sr)), x)
    return np.abs(ss.hilbert(band, N=scipy.fft.next_fast_len(x.size))[: x.size])


def modulation_energy(x: np.ndarray, sr: int) -> np.ndarray:
    """Frame-averaged modulation energy ``(23, 8)``: acoustic channel x modulation band.

    One acoustic channel at a time, so memory stays a few copies of ``x`` however long it is.
    """
    win = int(np.ceil(WIN_S * sr))
    hop = int(np.ceil(HOP_S * sr))
    w2 = np.hamming(win) ** 2
    n_frames = int(np.ceil(x.size / hop))
    filters = [modulation_filter(fc, sr) for fc in modulation_centres()]
    energy = np.empty((N_ACOUSTIC, N_MOD))
    for i, cf in enumerate(erb_centres(sr)):
        env = envelope(x, sr, cf)
        for j, (b, a) in enumerate(filters):
            m2 = np.pad(ss.lfilter(b, a, env) ** 2, (0, win))
            # sum over a frame of (w * m)^2 = <m^2 frame, w^2>; frames are strided views, no copies
            framed = np.lib.stride_tricks.sliding_window_view(m2, win)[::hop][:n_frames]  # (T, win)
            energy[i, j] = np.einsum("tk,k->t", framed, w2).mean()  # no copy of the frames
    return energy


def srmr(x: np.ndarray, sr: int) -> float:
    """SRMR of ``x (S,)`` at ``sr`` Hz (Falk, Zheng & Chan 2010); NaN on silent input.

    Typical values at 16 kHz: clean read speech 6-12, strongly reverberant speech 2-4.  The
    ratio does not depend on the signal level.
    """
    a, why = check_single(x, "srmr", min_samples=int(WIN_S * sr))
    if why:
        return undefined("srmr", why)
    if sr not in (8000, 16000):
        a, sr = resample(a, sr, 16000).astype(np.float64), 16000
    e = modulation_energy(a, sr)
    k_star = bandwidth_cutoff(e, sr)
    den = e[:, 4:k_star].sum()
    if den <= 0:
        return undefined("srmr", "no energy in the high modulation bands")
    return float(e[:, :4].sum() / den)


def bandwidth_cutoff(energy: np.ndarray, sr: int) -> int:
    """``K*`` (5..8): number of modulation bands kept for the denominator (paper section III-C)."""
    share = np.cumsum(energy.sum(axis=1)) / energy.sum()  # acoustic channels, low to high
    k90 = int(np.argmax(share > 0.9))
    bw = erb(erb_centres(sr)[k90])
    lower_cut = modulation_centres() * (1.0 - 1.0 / (2.0 * MOD_Q))  # approximate -3 dB edges
    return 5 + int(np.sum(bw > lower_cut[5:]))
