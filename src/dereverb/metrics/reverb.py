"""The REVERB challenge's intrusive measures: cepstral distance, LLR, frequency-weighted SegSNR.

Each follows the challenge's evaluation tools (Kinoshita et al., "A summary of the REVERB
challenge: state-of-the-art and remaining challenges in reverberant speech processing research",
EURASIP J. Adv. Signal Process. 2016:7; tools distributed by the organisers, July 2013), which
adapt the composite measures of Hu & Loizou ("Evaluation of objective quality measures for
speech enhancement", IEEE TASLP 16(1), 2008; Loizou, "Speech Enhancement: Theory and
Practice", 2013): 25 ms MATLAB-``hanning`` frames every 10 ms, per-frame values clamped to the
challenge's ranges, then averaged over frames (``reduce="median"`` gives the challenge's
other statistic).

Inputs are 1-D float arrays ``(S,)`` at ``sr`` Hz: ``ref`` the clean reference, ``est`` the
processed signal; the longer one is trimmed.  Silent input gives NaN with a warning.
"""

from __future__ import annotations

import numpy as np

from ._common import check_pair, frames, hann, undefined

FRAME_S, SHIFT_S = 0.025, 0.010


def _reduce(values: np.ndarray, how: str, metric: str) -> float:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return undefined(metric, "no frame with energy in both signals")
    return float(np.median(values) if how == "median" else np.mean(values))


def _framed(ref, est, sr, metric):
    """Windowed frames ``(N, frame)`` of both signals, or ``None`` with the reason."""
    frame, shift = int(FRAME_S * sr), int(SHIFT_S * sr)
    r, e, why = check_pair(ref, est, metric, min_samples=frame)
    if why:
        return None, None, why
    win = hann(frame)
    return frames(r, frame, shift) * win, frames(e, frame, shift) * win, None


def _real_cepstrum(x: np.ndarray, order: int, floor_db: float = -100.0) -> np.ndarray:
    """Cepstra ``(N, order+1)`` of frames ``(N, L)``; magnitudes floored 100 dB below the peak."""
    n_fft = 1 << int(np.ceil(np.log2(x.shape[1])))
    mag = np.abs(np.fft.rfft(x, n_fft, axis=1))  # (N, n_fft/2+1): the spectrum of real frames
    mag = np.maximum(mag, mag.max() * 10 ** (floor_db / 20))
    return np.fft.irfft(np.log(mag), n_fft, axis=1)[:, : order + 1]


def cepstral_distance(
    ref: np.ndarray, est: np.ndarray, sr: int, order: int = 24, reduce: str = "mean"
) -> float:
    """Cepstral distance in dB (lower is better; 0 for identical signals), REVERB definition.

    Real cepstra (FFT of the next power of two, magnitude floored at -100 dB re the peak) up to
    ``order``, cepstral mean normalisation over frames, then per frame
    ``CD = 10/ln(10) * sqrt((c_0 - c'_0)^2 + 2 sum_{k=1..order} (c_k - c'_k)^2)`` clamped to
    [0, 10] dB, averaged over frames.

    Reference: Kinoshita et al., EURASIP JASP 2016 (REVERB challenge), eq. for CD; Hu & Loizou,
    IEEE TASLP 16(1), 2008.
    """
    x, y, why = _framed(ref, est, sr, "cepstral_distance")
    if why:
        return undefined("cepstral_distance", why)
    cx, cy = _real_cepstrum(x, order), _real_cepstrum(y, order)  # (N, order+1)
    cx -= cx.mean(axis=0)
    cy -= cy.mean(axis=0)
    err = (cx - cy) ** 2
    d = 10.0 / np.log(10.0) * np.sqrt(err[:, 0] + 2.0 * err[:, 1:].sum(axis=1))
    return _reduce(np.clip(d, 0.0, 10.0), reduce, "cepstral_distance")


def _autocorr(x: np.ndarray, lags: int) -> np.ndarray:
    """Biased autocorrelation ``(N, lags+1)`` of frames ``(N, L)`` (divided by ``L``)."""
    n_fft = 1 << int(np.ceil(np.log2(2 * x.shape[1] - 1)))
    spec = np.fft.rfft(x, n_fft, axis=1)
    return np.fft.irfft(np.abs(spec) ** 2, n_fft, axis=1)[:, : lags + 1] / x.shape[1]


def lpc(r: np.ndarray) -> np.ndarray:
    """LPC polynomials ``(N, p+1)`` (leading 1) from autocorrelations ``(N, p+1)`` (Levinson).

    Frames with ``r_0 = 0`` give NaN rows.
    """
    n, p = r.shape[0], r.shape[1] - 1
    a = np.zeros((n, p + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(1, p + 1):
            k = -(a[:, :i] * r[:, i:0:-1]).sum(axis=1) / err  # reflection coefficient
            a[:, 1 : i + 1] = a[:, 1 : i + 1] + k[:, None] * a[:, i - 1 :: -1][:, :i]
            err = err * (1.0 - k**2)
    return a


def _quad_form(a: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``a^T R a`` per frame, with ``R`` the Toeplitz matrix of ``r``; ``(N,)``."""
    p = a.shape[1]
    lag = np.abs(np.arange(p)[:, None] - np.arange(p)[None, :])  # (p, p)
    return np.einsum("ni,nij,nj->n", a, r[:, lag], a)


def llr(ref: np.ndarray, est: np.ndarray, sr: int, order: int = 12, reduce: str = "mean") -> float:
    """LPC log-likelihood ratio (lower is better; 0 for identical signals), REVERB definition.

    Per frame ``LLR = ln((a_e^T R_c a_e) / (a_c^T R_c a_c))`` with ``a_c``, ``a_e`` the order-12
    LPC polynomials of the clean and processed frames and ``R_c`` the clean autocorrelation
    matrix; the 5% largest frame values are dropped as outliers, the rest clamped to [0, 2].

    Reference: Kinoshita et al., EURASIP JASP 2016 (REVERB challenge); Hu & Loizou, IEEE TASLP
    16(1), 2008; Quackenbush, Barnwell & Clements, "Objective Measures of Speech Quality", 1988.
    """
    x, y, why = _framed(ref, est, sr, "llr")
    if why:
        return undefined("llr", why)
    rc, re = _autocorr(x, order), _autocorr(y, order)
    live = (rc[:, 0] > 0) & (re[:, 0] > 0)  # frames of digital silence have no LPC model
    rc, re = rc[live], re[live]
    ac, ae = lpc(rc), lpc(re)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.log(_quad_form(ae, rc) / _quad_form(ac, rc))
    d = np.sort(d[np.isfinite(d)])[: int(np.ceil(0.95 * np.isfinite(d).sum()))]
    return _reduce(np.clip(d, 0.0, 2.0), reduce, "llr")


def mel_filterbank(n_fft: int, sr: int, n_bands: int) -> np.ndarray:
    """Triangular filters ``(n_bands, n_fft//2+1)`` of unit peak, equally spaced on the HTK mel
    scale ``2595 log10(1 + f/700)`` from 0 Hz to ``sr/2``."""
    mel_max = 2595.0 * np.log10(1.0 + (sr / 2) / 700.0)
    edges = 700.0 * (10 ** (np.linspace(0.0, mel_max, n_bands + 2) / 2595.0) - 1.0)  # Hz
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (freqs - lo) / (mid - lo)
    fall = (hi - freqs) / (hi - mid)
    return np.maximum(0.0, np.minimum(rise, fall))


def fwsegsnr(
    ref: np.ndarray, est: np.ndarray, sr: int, n_bands: int = 23, reduce: str = "mean"
) -> float:
    """Frequency-weighted segmental SNR in dB (higher is better; 35 for identical signals).

    Both signals are scaled to unit energy; magnitude spectra (FFT of the next power of two)
    pass through ``n_bands`` mel triangles; per frame
    ``10 sum_b W_b log10(C_b^2 / (C_b - E_b)^2) / sum_b W_b`` with ``W_b = C_b^0.2`` (the clean
    band magnitude to the power 0.2), clamped to [-10, 35] dB, averaged over frames.

    Reference: Kinoshita et al., EURASIP JASP 2016 (REVERB challenge); Hu & Loizou, IEEE TASLP
    16(1), 2008; Tribolet et al., "A study of complexity and quality of speech waveform coders",
    ICASSP 1978.
    """
    r, e, why = check_pair(ref, est, "fwsegsnr", min_samples=int(FRAME_S * sr))
    if why:
        return undefined("fwsegsnr", why)
    r, e = r / np.sqrt(r @ r), e / np.sqrt(e @ e)
    frame, shift = int(FRAME_S * sr), int(SHIFT_S * sr)
    n_fft = 1 << int(np.ceil(np.log2(frame)))
    win = hann(frame)
    mel = mel_filterbank(n_fft, sr, n_bands)  # (B, F)
    c = np.abs(np.fft.rfft(frames(r, frame, shift) * win, n_fft, axis=1)) @ mel.T  # (N, B)
    p = np.abs(np.fft.rfft(frames(e, frame, shift) * win, n_fft, axis=1)) @ mel.T
    tiny = 1e-30  # identical bands give a huge ratio, clamped below to 35 dB
    snr = 10.0 * np.log10(np.maximum(c**2, tiny) / np.maximum((c - p) ** 2, tiny))  # (N, B)
    w = c**0.2
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = (w * snr).sum(axis=1) / total
    d = d[total > 0]
    return _reduce(np.clip(d, -10.0, 35.0), reduce, "fwsegsnr")
