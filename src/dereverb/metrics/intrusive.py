"""Intrusive metrics (need the clean reference): PESQ, STOI, ESTOI, SI-SDR.

All take 1-D float arrays ``(S,)`` at ``sr`` Hz, ``ref`` the clean reference and ``est`` the
processed signal; the longer of the two is trimmed to the shorter.  Silent input gives NaN and a
:class:`~dereverb.metrics.MetricWarning`.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..audio import resample
from ._common import check_pair, undefined


def pesq(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """PESQ MOS-LQO (ITU-T P.862.2 wide band at 16 kHz, P.862 narrow band at 8 kHz).

    Uses the ``pesq`` package (Wang, the ITU reference C code).  At 16 kHz the wide-band mode is
    used (range about 1.04-4.64); at 8 kHz the narrow-band mode (about 1.02-4.55).  Any other
    rate is resampled to 16 kHz with soxr and scored wide band.  Undefined (NaN) on silent
    input or when PESQ finds no utterance.

    Reference: ITU-T Rec. P.862 (2001) and P.862.2 (2007); Rix et al., "Perceptual evaluation
    of speech quality (PESQ)", ICASSP 2001.
    """
    import pesq as pesq_lib

    r, e, why = check_pair(ref, est, "pesq")
    if why:
        return undefined("pesq", why)
    if sr not in (8000, 16000):
        r, e, sr = resample(r, sr, 16000), resample(e, sr, 16000), 16000
    mode = "wb" if sr == 16000 else "nb"
    try:
        return float(pesq_lib.pesq(sr, r.astype(np.float32), e.astype(np.float32), mode))
    except pesq_lib.PesqError as err:
        return undefined("pesq", f"{type(err).__name__}: {err}")


def _stoi(ref: np.ndarray, est: np.ndarray, sr: int, extended: bool) -> float:
    from pystoi import stoi as stoi_lib

    name = "estoi" if extended else "stoi"
    r, e, why = check_pair(ref, est, name)
    if why:
        return undefined(name, why)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi_lib(r, e, sr, extended=extended))
    if any("Not enough" in str(w.message) for w in caught):
        return undefined(name, "fewer than 30 non-silent frames (under ~0.4 s of speech)")
    return value


def stoi(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """Short-time objective intelligibility, in [0, 1] (1 = identical).

    Uses ``pystoi`` (resamples to 10 kHz internally and drops silent frames).  Undefined when
    less than about 0.4 s of speech remains.

    Reference: Taal, Hendriks, Heusdens & Jensen, "An algorithm for intelligibility prediction of
    time-frequency weighted noisy speech", IEEE TASLP 19(7), 2011.
    """
    return _stoi(ref, est, sr, extended=False)


def estoi(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """Extended STOI (1 = identical), via ``pystoi``.

    Reference: Jensen & Taal, "An algorithm for predicting the intelligibility of speech masked
    by modulated noise maskers", IEEE/ACM TASLP 24(11), 2016.
    """
    return _stoi(ref, est, sr, extended=True)


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (higher is better).

    Both signals are made zero-mean; ``est`` is projected on ``ref``:
    ``target = <est, ref> / |ref|^2 * ref``, ``SI-SDR = 10 log10(|target|^2 / |est - target|^2)``.
    ``+inf`` when the residual is more than 200 dB below the target (``est`` is a multiple of
    ``ref`` up to float rounding), ``-inf`` when ``est`` is orthogonal to ``ref``.

    Reference: Le Roux, Wisdom, Erdogan & Hershey, "SDR - half-baked or well done?", ICASSP 2019.
    """
    r, e, why = check_pair(ref, est, "si_sdr")
    if why:
        return undefined("si_sdr", why)
    r, e = r - r.mean(), e - e.mean()
    target = (e @ r) / (r @ r) * r
    noise = e - target
    t_pow, n_pow = float(target @ target), float(noise @ noise)
    # Rounding leaves |noise|^2 ~ 1e-32 |target|^2 for identical signals: treat as exact.
    if n_pow <= 1e-20 * t_pow:
        return float("inf")
    if t_pow == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(t_pow / n_pow))
