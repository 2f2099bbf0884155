"""The user's own paired folders: ``clean/`` and ``reverb/`` trees with matching relative names.

:class:`PairedFolder` matches the pairs, checks lengths and rates, detects a misaligned pair by
GCC-PHAT (:func:`estimate_lag`) and reports every problem in one warning (or one error with
``strict``), then serves ``{"reverb": (S,), "clean": (S,)}`` float32 items, realigned, in the
on-the-fly stream's format (:mod:`dereverb.data`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from . import audio
from .errors import DereverbError


def _relative_keys(root: Path) -> dict[str, Path]:
    """Audio files under ``root`` keyed by relative path without suffix (``a/b`` for a/b.wav)."""
    if root.is_file():
        raise DereverbError(f"{root}: is a file; paired clean/reverb sources are folders")
    files = audio.list_audio(root)
    return {str(f.relative_to(root).with_suffix("")): f for f in files}


def estimate_lag(reverb: np.ndarray, clean: np.ndarray, max_lag: int) -> int:
    """Samples by which ``reverb`` lags ``clean`` (both ``(S,)``), within +-``max_lag``.

    GCC-PHAT (Knapp & Carter 1976): the whitened cross-spectrum turns the room into sharp peaks,
    one per arrival; the direct path is the earliest peak within 6 dB of the largest (a strong
    early reflection can beat it on plain cross-correlation, never on arrival time).
    """
    from scipy.fft import irfft, next_fast_len, rfft

    n = next_fast_len(len(reverb) + len(clean))
    cross = rfft(reverb, n) * np.conj(rfft(clean, n))
    r = irfft(cross / (np.abs(cross) + 1e-9 * np.abs(cross).max() + 1e-30), n)
    r = np.abs(np.r_[r[n - max_lag :], r[: max_lag + 1]])  # lags -max_lag .. +max_lag
    first = int(np.argmax(r >= 0.5 * r.max()))
    return first + int(np.argmax(r[first : first + 16])) - max_lag


class PairedFolder(torch.utils.data.Dataset):
    """A user's ``clean/`` and ``reverb/`` folders as aligned pairs.

    Files pair up by relative path without suffix (``clean/a/x.flac`` with ``reverb/a/x.wav``),
    both are read at ``sample_rate`` (channel 0).  On construction every pair is checked: files
    without a partner, differing sample rates or lengths (more than 1 % or 0.1 s), and reverberant
    files that lag or lead their clean partner by more than ``tolerance_ms`` (cross-correlation
    over the first 30 s) are reported in one warning (``strict``: an error).  The clean file is
    shifted by the found lag so the network never has to learn a delay.

    Items: ``{"reverb", "clean"}`` float32 ``(S,)``: whole files, or random crops of
    ``segment_seconds`` (zero padded) drawn from ``default_rng([seed, epoch, index])``.
    """

    def __init__(self, clean_dir: str | Path, reverb_dir: str | Path, sample_rate: int,
                 segment_seconds: float | None = None, seed: int = 0, tolerance_ms: float = 1.0,
                 max_lag_ms: float = 250.0, strict: bool = False):
        self.sample_rate, self.seed, self.epoch = sample_rate, seed, 0
        self.length = None if segment_seconds is None else int(round(segment_seconds * sample_rate))
        clean, reverb = _relative_keys(Path(clean_dir)), _relative_keys(Path(reverb_dir))
        problems = [f"{clean[k]}: no partner in {reverb_dir}" for k in sorted(set(clean) - set(reverb))]
        problems += [f"{reverb[k]}: no partner in {clean_dir}" for k in sorted(set(reverb) - set(clean))]
        self.pairs: list[tuple[Path, Path, int]] = []
        for key in sorted(set(clean) & set(reverb)):
            lag, notes = self._check(clean[key], reverb[key], tolerance_ms, max_lag_ms)
            problems += notes
            self.pairs.append((clean[key], reverb[key], lag))
        if problems and strict:
            raise DereverbError(f"{len(problems)} problem(s) in paired folders: " + "; ".join(problems))
        if problems:
            warnings.warn(f"paired folders, {len(problems)} problem(s) (clean shifted to match): " + "; ".join(problems),
                          stacklevel=2)
        if not self.pairs:
            raise DereverbError(f"no matching file names in {clean_dir} and {reverb_dir}")

    def _check(self, clean: Path, reverb: Path, tolerance_ms: float, max_lag_ms: float) -> tuple[int, list[str]]:
        ci, ri = audio.info(clean), audio.info(reverb)
        notes = []
        if ci.sample_rate != ri.sample_rate:
            notes.append(f"{reverb}: {ri.sample_rate} Hz but clean is {ci.sample_rate} Hz (both resampled)")
        if abs(ci.duration - ri.duration) > max(0.1, 0.01 * ci.duration):
            notes.append(f"{reverb}: {ri.duration:.2f} s but clean is {ci.duration:.2f} s (cut to the shorter)")
        n = int(30 * self.sample_rate)
        c = audio.read(clean, self.sample_rate, channel=0)[0][0, :n]
        r = audio.read(reverb, self.sample_rate, channel=0)[0][0, :n]
        lag = estimate_lag(r, c, int(max_lag_ms * 1e-3 * self.sample_rate))
        if abs(lag) > tolerance_ms * 1e-3 * self.sample_rate:
            notes.append(f"{reverb}: {'lags' if lag > 0 else 'leads'} clean by {abs(lag) / self.sample_rate * 1e3:.1f} ms")
        return lag, notes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clean_path, reverb_path, lag = self.pairs[index]
        clean = audio.read(clean_path, self.sample_rate, channel=0)[0][0]
        reverb = audio.read(reverb_path, self.sample_rate, channel=0)[0][0]
        clean = np.pad(clean, (lag, 0))[: len(clean) + lag] if lag >= 0 else clean[-lag:]
        n = min(len(clean), len(reverb))
        clean, reverb = clean[:n], reverb[:n]
        if self.length is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            start = int(rng.integers(0, max(1, n - self.length + 1)))
            pad = (0, max(0, self.length - n))
            clean = np.pad(clean[start : start + self.length], pad)
            reverb = np.pad(reverb[start : start + self.length], pad)
        return {"reverb": torch.from_numpy(np.ascontiguousarray(reverb)),
                "clean": torch.from_numpy(np.ascontiguousarray(clean))}
