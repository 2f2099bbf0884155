"""Room impulse responses: measured ones loaded and analysed, and the reverberant/target pairs
built from them.  Simulated rooms and pools of them on disk live in :mod:`dereverb.simulate`.

Every RIR becomes a :class:`Rir`: mono float32 at the working rate, trimmed to start 2.5 ms before
its direct path, scaled so the direct-path peak is +1, tail cut where the decay meets the noise
floor, with T30 (Schroeder backward integration, ISO 3382 fit from -5 to -35 dB, T20 when the
decay is too short) and DRR (direct path +-2.5 ms against everything after it) measured on it.

Targets (:func:`reverberate`): ``"direct"`` keeps the direct path +-2.5 ms of the RIR (as in
WSJ0-REVERB), ``"early"`` the direct path and the next 50 ms, ``"dry"`` the dry signal delayed to
the direct path.  Input and target share the RIR's delay, so they are aligned sample for sample.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import fft as sfft
from scipy import signal

from . import audio
from .errors import DereverbError

DIRECT_MS = 2.5  # half width of the direct-path window
EARLY_MS = 50.0  # early reflections kept by the "early" target
TARGETS = ("direct", "early", "dry")


@dataclasses.dataclass(frozen=True, eq=False)
class Rir:
    """One analysed RIR.

    ``audio``: ``(S,)`` float32 with ``audio[direct_index] == 1``; ``t30`` in s, ``drr`` in dB;
    ``meta``: provenance (file, channel, or simulated room, T60 asked for, distance, ...).
    """

    audio: np.ndarray
    sample_rate: int
    name: str
    direct_index: int
    t30: float
    drr: float
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.audio) / self.sample_rate


# --- analysis ----------------------------------------------------------------------------------


def _ms(sample_rate: int, ms: float) -> int:
    return int(round(ms * 1e-3 * sample_rate))


def find_direct(h: np.ndarray) -> int:
    """Sample index of the direct path in ``h`` ``(S,)``.

    The first local peak reaching half the global peak: a strong early reflection can exceed a
    far source's direct sound, but it never arrives before it.
    """
    mag = np.abs(h)
    first = int(np.argmax(mag >= 0.5 * mag.max()))
    stop = min(len(h), first + 16)  # the peak of that arrival lies within a millisecond
    return first + int(np.argmax(mag[first:stop]))


def tail_end(h: np.ndarray, sample_rate: int, start: int) -> tuple[int, float]:
    """Where the decay of ``h`` after ``start`` meets the noise floor (a one-pass Lundeby 1995).

    Energy in 10 ms blocks (dB); the noise floor is the mean of the last tenth; a line fitted from
    the peak down to 10 dB above that floor crosses the floor at the returned sample.
    Returns ``(end_sample, decay_range_db)``: the range from the peak block to the floor.
    """
    block = max(1, _ms(sample_rate, 10))
    n = (len(h) - start) // block
    if n < 10:
        return len(h), 0.0
    energy = (h[start : start + n * block].astype(np.float64) ** 2).reshape(n, block).mean(axis=1)
    env = 10 * np.log10(energy + 1e-30)
    noise = 10 * np.log10(energy[-max(1, n // 10) :].mean() + 1e-30)
    top = int(np.argmax(env))
    below = np.nonzero(env[top:] < noise + 10)[0]
    stop = top + (int(below[0]) if below.size else n - top)
    if stop - top < 3:
        return len(h), float(env[top] - noise)
    slope, icpt = np.polyfit(np.arange(top, stop), env[top:stop], 1)
    if slope >= 0:
        return len(h), float(env[top] - noise)
    cross = (noise - icpt) / slope
    return int(min(len(h), start + max(stop, cross) * block)), float(env[top] - noise)


def schroeder_db(h: np.ndarray) -> np.ndarray:
    """Energy decay curve (Schroeder 1965 backward integration) of ``(S,)``, dB re its start."""
    edc = np.cumsum((h.astype(np.float64) ** 2)[::-1])[::-1]
    return 10 * np.log10(edc / max(edc[0], 1e-300) + 1e-300)


def decay_time(h: np.ndarray, sample_rate: int, decay_range: float = math.inf) -> tuple[float, str]:
    """Reverberation time (s) of ``h`` ``(S,)`` starting at the direct path (ISO 3382-1).

    Least-squares line on the Schroeder curve from -5 to -35 dB, extrapolated to -60 dB (T30);
    T30 needs the decay to span ``decay_range`` >= 45 dB above the noise floor, else the fit runs
    from -5 to -25 dB (T20, needs 35 dB).  Returns ``(seconds, "T30"|"T20")``, or ``(nan, "")``.
    """
    edc = schroeder_db(h)
    for low, kind in ((-35.0, "T30"), (-25.0, "T20")):
        if edc.min() > low or decay_range < -low + 10:
            continue
        sel = np.nonzero((edc <= -5.0) & (edc >= low))[0]
        sel = sel[: np.argmax(np.diff(sel, append=sel[-1] + 2) > 1) + 1]  # first contiguous run
        if len(sel) < 4:
            continue
        step = max(1, len(sel) // 4000)
        slope = np.polyfit(sel[::step] / sample_rate, edc[sel[::step]], 1)[0]
        if slope < 0:
            return float(-60.0 / slope), kind
    return float("nan"), ""


OCTAVE_BANDS = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 6000.0)  # Hz, centres of band_decay_times


def band_decay_times(rir: Rir, centres: Sequence[float] = OCTAVE_BANDS) -> np.ndarray:
    """T30 (T20 when short, nan when neither fits; :func:`decay_time`) of each octave band, ``(B,)`` s.

    Bands ``[fc / sqrt 2, fc * sqrt 2]``, the top edge kept below Nyquist; 4th-order Butterworth
    run forwards and backwards (zero phase, so the filter's own ringing does not lengthen the
    decay), applied from the direct path on.
    """
    sr, h = rir.sample_rate, rir.audio[rir.direct_index :].astype(np.float64)
    out = []
    for fc in centres:
        lo, hi = fc / math.sqrt(2.0), min(fc * math.sqrt(2.0), 0.49 * sr)
        if lo >= hi:
            out.append(math.nan)
            continue
        sos = signal.butter(4, [lo, hi], "bandpass", fs=sr, output="sos")
        out.append(decay_time(signal.sosfiltfilt(sos, h), sr)[0])
    return np.asarray(out)


def direct_to_reverberant(h: np.ndarray, direct_index: int, sample_rate: int) -> float:
    """DRR in dB: energy of the direct path +-2.5 ms over the energy after that window."""
    w = _ms(sample_rate, DIRECT_MS)
    e = h.astype(np.float64) ** 2
    direct = e[max(0, direct_index - w) : direct_index + w + 1].sum()
    late = e[direct_index + w + 1 :].sum()
    return float(10 * np.log10(direct / max(late, 1e-30)))


def is_clipped(h: np.ndarray) -> bool:
    """True if the peak of ``(S,)`` sits at full scale for 3 or more consecutive samples."""
    mag = np.abs(h)
    peak = mag.max()
    run = np.convolve(mag >= peak * (1 - 1e-4), np.ones(3), "valid")
    return bool(peak >= 0.99 and run.size and run.max() >= 3)


def analyze(h: np.ndarray, sample_rate: int, name: str, meta: dict | None = None) -> Rir:
    """Turn a raw mono RIR ``(S,)`` into a :class:`Rir` (trim, scale, cut, measure).

    Raises :class:`DereverbError` for silent, clipped, non-finite or too-short RIRs.
    """
    h = np.asarray(h, dtype=np.float64)
    if not np.isfinite(h).all():
        raise DereverbError(f"{name}: RIR contains NaN or infinite samples")
    peak = np.abs(h).max() if h.size else 0.0
    if peak < 1e-6:
        raise DereverbError(f"{name}: RIR is silent")
    if is_clipped(h):
        raise DereverbError(f"{name}: RIR is clipped (flat peak at full scale)")
    d = find_direct(h)
    lead = min(d, _ms(sample_rate, DIRECT_MS))
    h = h[d - lead :] / h[d]  # direct path now at `lead`, value +1
    end, decay_range = tail_end(h, sample_rate, lead)
    h = h[:end].copy()
    fade = min(_ms(sample_rate, 5), max(0, end - lead - 1))
    if fade:
        h[-fade:] *= np.hanning(2 * fade)[fade:]
    if len(h) - lead < _ms(sample_rate, 20):
        raise DereverbError(f"{name}: RIR too short (under 20 ms after the direct path)")
    t, kind = decay_time(h[lead:], sample_rate, decay_range)
    if not math.isfinite(t):
        raise DereverbError(f"{name}: RIR decays only {decay_range:.0f} dB above its noise floor (35 needed)")
    info = dict(meta or {}, decay_fit=kind, direct_in_file=d)
    drr = direct_to_reverberant(h, lead, sample_rate)
    return Rir(h.astype(np.float32), sample_rate, name, lead, t, drr, info)


# --- measured RIRs -----------------------------------------------------------------------------


def warn_skipped(bad: list[str], strict: bool, what: str) -> None:
    """Report the ``bad`` inputs (one reason each) in one warning, or one error if ``strict``."""
    if not bad:
        return
    if strict:
        raise DereverbError(f"{len(bad)} bad {what}: " + "; ".join(bad))
    warnings.warn(f"skipped {len(bad)} bad {what}: " + "; ".join(bad), stacklevel=3)


def load_rirs(
    paths: Sequence[str | Path], sample_rate: int, channels: str = "first", strict: bool = False
) -> list[Rir]:
    """Load measured RIR files (or folders of them, recursive) at ``sample_rate`` Hz.

    ``channels``: ``"first"`` (channel 0) or ``"all"`` (each channel its own RIR, named
    ``stem:chN``).  Bad files are listed in one warning and skipped (``strict``: an error).
    """
    if channels not in ("first", "all"):
        raise DereverbError(f"rir channels must be 'first' or 'all', got {channels!r}")
    files = [f for p in paths for f in audio.list_audio(p)]
    rirs, bad = [], []
    for f in files:
        try:
            x, rate = audio.read(f, channel=0 if channels == "first" else None)
        except DereverbError as e:
            bad.append(str(e))
            continue
        for c, h in enumerate(x):
            name = f.stem if len(x) == 1 else f"{f.stem}:ch{c}"
            try:
                if is_clipped(h):  # before resampling smooths the flat top away
                    raise DereverbError(f"{name}: RIR is clipped (flat peak at full scale)")
                h = audio.resample(h, rate, sample_rate)
                rirs.append(analyze(h, sample_rate, name, {"file": str(f), "channel": c}))
            except DereverbError as e:
                bad.append(f"{f}{'' if len(x) == 1 else f' ch{c}'}: {str(e).removeprefix(name + ': ')}")
    warn_skipped(bad, strict, "RIR file(s)")
    if not rirs:
        raise DereverbError(f"no usable RIR in {', '.join(map(str, paths))}")
    return rirs


# --- reverberant / target pairs ----------------------------------------------------------------


def target_kernel(rir: Rir, target: str = "direct") -> tuple[np.ndarray, int]:
    """The part of the RIR a target keeps: ``(kernel, offset)`` with ``kernel = h[offset:...]``."""
    d, sr = rir.direct_index, rir.sample_rate
    w = _ms(sr, DIRECT_MS)
    if target == "direct":
        return rir.audio[max(0, d - w) : d + w + 1], max(0, d - w)
    if target == "early":
        return rir.audio[max(0, d - w) : d + _ms(sr, EARLY_MS) + 1], max(0, d - w)
    if target == "dry":
        return np.ones(1, dtype=np.float32), d
    raise DereverbError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")


def with_drr(rir: Rir, drr_db: float) -> Rir:
    """The RIR rescaled outside its direct-path window (+-2.5 ms) so its DRR is ``drr_db``.

    Data augmentation after Bryan (ICASSP 2020, "Impulse response data augmentation"): a room's
    tail with a louder direct path is the same room heard from closer, so a pool simulated at
    0.5-4 m (DRR mostly below 0 dB) also teaches near-field input (DRR +5 to +15 dB), the case
    where an untaught model over-processes.  The direct path stays at 1, so the ``direct`` and
    ``dry`` targets do not change (the ``early`` target's reflections scale with the tail), nor
    does the tail's decay rate (T30).
    """
    d, w = rir.direct_index, _ms(rir.sample_rate, DIRECT_MS)
    now = direct_to_reverberant(rir.audio, d, rir.sample_rate)
    if now > 200:  # no tail to rescale (an anechoic RIR)
        return rir
    gain = 10.0 ** ((now - drr_db) / 20.0)
    h = rir.audio.copy()
    h[: max(0, d - w)] *= gain
    h[d + w + 1 :] *= gain
    return dataclasses.replace(rir, audio=h, drr=float(drr_db),
                               meta={**rir.meta, "drr_from": now})


def _extra_decay_rate(scale, t30: float):
    """Nepers per second to add so a decay of ``t30`` s (60 dB) becomes one of ``scale * t30``."""
    return 3.0 * math.log(10.0) * (1.0 / scale - 1.0) / t30


def _reshaped(rir: Rir, h: np.ndarray, name: str, t30_guess: float, **meta) -> Rir:
    """``rir`` with the new response ``h`` (same direct path): T30 and DRR measured again
    (``t30_guess`` if no decay fits), ``meta["t30_from"]`` the original T30, plus ``meta``."""
    d, sr = rir.direct_index, rir.sample_rate
    t30, _ = decay_time(h[d:], sr)
    return dataclasses.replace(rir, audio=h, name=name, t30=t30 if math.isfinite(t30) else t30_guess,
                               drr=direct_to_reverberant(h, d, sr),
                               meta={**rir.meta, "t30_from": rir.t30, **meta})


def with_hf_decay(rir: Rir, exponent: float, corner_hz: float = 1000.0) -> Rir:
    """The RIR with its reverberation time falling above ``corner_hz`` as ``(f / corner_hz) ** -exponent``.

    Real rooms decay faster at high frequencies (air and wall absorption rise with frequency:
    the training halls of the recipe measure T30 at 6 kHz 0.40-0.68 times their T30 at 1 kHz),
    while pyroomacoustics' shoebox rooms with one frequency-independent absorption, no air
    absorption, decay as long at 6 kHz as at 1 kHz.  Each STFT bin (256-point Hann, hop 64) of
    the part after the direct path is multiplied by ``exp(-r(f) t)``, ``t`` the frame's time
    after the direct path and ``r(f)`` the extra rate that turns a decay of the RIR's T30 into
    one of ``T30 * min(1, (f / corner_hz) ** -exponent)`` (the per-frequency form of the decay
    augmentation of Bryan, ICASSP 2020; only shortening: lengthening would raise a measurement's
    noise floor into a tail that no longer decays).  The samples up to the end of the
    direct-path window are kept exactly, so the ``direct`` and ``dry`` targets do not change.
    """
    if exponent < 0:
        raise DereverbError(f"high-frequency decay exponent {exponent} must be >= 0")
    d, w, sr = rir.direct_index, _ms(rir.sample_rate, DIRECT_MS), rir.sample_rate
    if exponent == 0 or not math.isfinite(rir.t30) or rir.t30 <= 0:
        return rir
    n_fft, hop = 256, 64
    f, t, spec = signal.stft(rir.audio.astype(np.float64), sr, nperseg=n_fft, noverlap=n_fft - hop)
    ratio = np.minimum(1.0, (np.maximum(f, 1.0) / corner_hz) ** -exponent)
    rate = _extra_decay_rate(ratio, rir.t30)  # (F,)
    spec = spec * np.exp(-rate[:, None] * np.maximum(t - d / sr, 0.0)[None, :])
    h = signal.istft(spec, sr, nperseg=n_fft, noverlap=n_fft - hop)[1][: len(rir.audio)]
    h = np.pad(h, (0, len(rir.audio) - len(h))).astype(np.float32)
    h[: d + w + 1] = rir.audio[: d + w + 1]
    return _reshaped(rir, h, f"{rir.name}@hf{exponent:.2f}", rir.t30, hf_decay=exponent)


def convolve_part(x: np.ndarray, h: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``(x * h)[lo:hi]`` (``hi <= len(x)``) of the full linear convolution, float32 ``(hi - lo,)``;
    indices below 0 are zeros.  Only the input that reaches ``[lo, hi)`` is transformed, and the
    FFT is just long enough for its wrap-around to land before ``lo`` (an ``L``-tap RIR and an
    ``n``-sample crop after ``L - 1`` samples of context cost one FFT of ``n + L``, not ``n + 2L``)."""
    out = np.zeros(max(0, hi - lo), np.float32)
    a = max(lo, 0)
    if a >= hi:
        return out
    start = max(0, a - len(h) + 1)  # the first input sample that reaches output a
    seg, k = x[start:hi], a - start
    if len(h) == 1:  # the dry target: an exact delayed copy
        y = seg * np.float32(h[0])
    elif 8 * len(h) < len(seg):  # a short kernel (a direct-path target): overlap-add is 2x faster
        y = signal.oaconvolve(seg, h)[k : hi - start]
    else:
        size = sfft.next_fast_len(len(seg) + len(h) - 1 - k, real=True)  # >= len(seg): k < len(h)
        y = sfft.irfft(sfft.rfft(seg, size) * sfft.rfft(h, size), size)[k : hi - start]
    out[a - lo :] = y
    return out


def reverberate(dry: np.ndarray, rir: Rir, target: str = "direct", skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Convolve ``dry`` ``(S,)`` with the RIR: returns ``(reverberant, target)``, both ``(S - skip,)``.

    Both carry the delay of the direct path (``rir.direct_index`` samples), so they line up sample
    for sample; the reverberant tail past ``S`` is dropped, and so are the first ``skip`` samples
    (context that only feeds the reverberation of what follows).
    """
    x = np.asarray(dry, dtype=np.float32)
    n = len(x)
    kernel, offset = target_kernel(rir, target)
    rev = convolve_part(x, rir.audio, skip, n)
    tgt = convolve_part(x, kernel, skip - offset, n - offset)
    return rev, tgt
