"""Input checks shared by every metric: 1-D float64 signals, silence -> NaN with a warning.

A metric on silent or empty input is undefined, not an error: the function warns with
:class:`MetricWarning` (so an evaluation of a thousand files keeps going and can record why) and
returns ``nan``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import DereverbError

# Peak below -100 dBFS counts as silence: no metric can say anything about such a signal.
SILENCE_PEAK = 1e-5


class MetricWarning(UserWarning):
    """A metric was undefined for its input (silence, too short) and returned NaN."""


def undefined(metric: str, reason: str) -> float:
    """Warn that ``metric`` is undefined because of ``reason`` and return ``nan``."""
    warnings.warn(f"{metric}: {reason}; result is undefined (NaN)", MetricWarning, stacklevel=3)
    return float("nan")


def as_signal(x: np.ndarray, metric: str) -> np.ndarray:
    """``x`` as a 1-D float64 array; ``(1, S)`` is accepted, more channels are an error."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 1:
        raise DereverbError(f"{metric}: expected a 1-D signal (S,), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DereverbError(f"{metric}: signal contains NaN or infinite samples")
    return a


def is_silent(x: np.ndarray) -> bool:
    """True for empty input or a peak below :data:`SILENCE_PEAK` (-100 dBFS)."""
    return x.size == 0 or float(np.max(np.abs(x))) < SILENCE_PEAK


def check_single(x: np.ndarray, metric: str, min_samples: int = 1) -> tuple[np.ndarray, str | None]:
    """Validate one signal; returns ``(x, reason)`` where ``reason`` is why it is undefined."""
    a = as_signal(x, metric)
    if is_silent(a):
        return a, "silent input"
    if a.size < min_samples:
        return a, f"input shorter than {min_samples} samples"
    return a, None


def check_pair(
    ref: np.ndarray, est: np.ndarray, metric: str, min_samples: int = 1
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Validate a (reference, estimate) pair and trim both to the shorter length.

    Trimming follows the REVERB challenge scripts, which cut the longer signal; callers that
    care about mismatched lengths (``evaluate``) report them before calling a metric.
    """
    r, e = as_signal(ref, metric), as_signal(est, metric)
    n = min(r.size, e.size)
    r, e = r[:n], e[:n]
    if is_silent(r):
        return r, e, "silent reference"
    if is_silent(e):
        return r, e, "silent estimate"
    if n < min_samples:
        return r, e, f"signals shorter than {min_samples} samples"
    return r, e, None


def frames(x: np.ndarray, frame: int, shift: int) -> np.ndarray:
    """Frames ``(N, frame)`` of ``x`` at hop ``shift``, without padding (partial tail dropped)."""
    n = (x.size - frame) // shift + 1
    if n <= 0:
        return np.zeros((0, frame))
    idx = np.arange(frame)[None, :] + shift * np.arange(n)[:, None]  # (N, frame)
    return x[idx]


def hann(n: int) -> np.ndarray:
    """MATLAB's ``hanning(n)``: the symmetric Hann window without its zero end points."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1, n + 1) / (n + 1))
