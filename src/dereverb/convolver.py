"""Reverberant/target pairs for a training stream, with each RIR's spectra cached.

:func:`rooms.reverberate` (plus :func:`rooms.with_drr`) is the reference: per pair it transforms
the dry crop, the RIR and, by overlap-add, the target kernel.  A stream draws the same few hundred
RIRs again and again, so :class:`PairConvolver` keeps each RIR's spectrum and its target kernel's
(placed at its own offset inside the RIR's length, so both outputs cover the same samples), and a
pair costs one forward FFT of the crop and two inverse FFTs.  A DRR change is linear in the
kernel, ``with_drr(h) = g h + (1 - g) h_w`` with ``h_w`` the direct-path window, so it needs no
new transform of the crop: for the ``direct`` target ``h_w`` *is* the target kernel.
"""

from __future__ import annotations

import collections

import numpy as np
from scipy import fft as sfft

from . import rooms
from .rooms import Rir


class PairConvolver:
    """``reverberate(dry, with_drr(rir, drr_db), target, skip)`` from cached spectra.

    ``budget_mb``: complex64 spectra kept (least recently used out); about 0.2-0.5 MB per RIR
    and kernel at 16 kHz with 2 s crops.  Crops must be laid out as
    :meth:`ReverbPairs.dry_crop` does: ``skip`` samples of context (at most ``len(rir) - 1``)
    before the part that is returned, so every pair of one RIR and crop length has the same FFT
    size.  Results match the reference to float32 rounding (tests/test_convolver.py).
    """

    def __init__(self, target: str = "direct", budget_mb: int = 256):
        if target not in rooms.TARGETS:
            raise ValueError(f"unknown target {target!r}")
        self.target, self.budget = target, budget_mb * 2**20
        # values hold the RIR's array too, so an id in a key is never reused while cached
        self.cache: collections.OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()
        self.bytes = 0

    def __call__(self, dry: np.ndarray, rir: Rir, skip: int, drr_db: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(reverberant, target)``, each ``(len(dry) - skip,)`` float32."""
        x = np.asarray(dry, dtype=np.float32)
        taps = len(rir.audio)
        if taps == 1 or not 0 <= skip < taps:  # the identity RIR, or a crop laid out otherwise
            if drr_db is not None:
                rir = rooms.with_drr(rir, drr_db)
            return rooms.reverberate(x, rir, self.target, skip)
        n = len(x) - skip
        size = sfft.next_fast_len(n + taps - 1, real=True)  # wrap-around lands in the context
        spec = sfft.rfft(x, size)
        rev = sfft.irfft(spec * self._spectrum(rir, "rir", size), size)[skip : skip + n]
        tgt = sfft.irfft(spec * self._spectrum(rir, self.target, size), size)[skip : skip + n]
        if drr_db is not None:
            now = self._drr(rir)
            if now <= 200:  # with_drr leaves a tail-less RIR alone
                g = np.float32(10.0 ** ((now - drr_db) / 20.0))
                window = tgt if self.target == "direct" else (
                    sfft.irfft(spec * self._spectrum(rir, "direct", size), size)[skip : skip + n])
                rev = g * rev + (1 - g) * window
                if self.target == "early":  # its reflections are part of the rescaled tail
                    tgt = g * tgt + (1 - g) * window
        return rev.astype(np.float32, copy=False), tgt.astype(np.float32, copy=False)

    def _drr(self, rir: Rir) -> float:
        """The RIR's DRR as :func:`rooms.with_drr` measures it (cached with the spectra)."""
        return float(self._cached(rir, ("drr",), lambda: np.array(
            rooms.direct_to_reverberant(rir.audio, rir.direct_index, rir.sample_rate))))

    def _spectrum(self, rir: Rir, part: str, size: int) -> np.ndarray:
        """rfft of the RIR (``part="rir"``) or of a target's kernel at its place in it."""

        def compute() -> np.ndarray:
            if part == "rir":
                h = rir.audio
            else:
                kernel, offset = rooms.target_kernel(rir, part)
                h = np.zeros(max(len(rir.audio), offset + len(kernel)), np.float32)
                h[offset : offset + len(kernel)] = kernel
            return sfft.rfft(h.astype(np.float32, copy=False), size).astype(np.complex64, copy=False)

        return self._cached(rir, (part, size), compute)

    def _cached(self, rir: Rir, what: tuple, compute) -> np.ndarray:
        key = (id(rir.audio), *what)
        hit = self.cache.get(key)
        if hit is not None:
            self.cache.move_to_end(key)
            return hit[1]
        value = compute()
        self.cache[key] = (rir.audio, value)
        self.bytes += value.nbytes
        while self.bytes > self.budget and len(self.cache) > 1:
            self.bytes -= self.cache.popitem(last=False)[1][1].nbytes
        return value
