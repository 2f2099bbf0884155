"""Single-channel WPE speed: nara_wpe (the evaluation baseline) against dereverb.wpe (the batched
torch WPE that a model's ``features.frontend: wpe`` runs), on the same 10 s reverberant STFT.

Prints the real-time factor (seconds per second of audio, median of repeats) of each at 40 taps,
delay 3, and 2 and 3 iterations, with complex64 and complex128 statistics for the torch one, and
the relative difference of each output from nara_wpe's.

    python benchmarks/wpe.py [--seconds 10] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.signal
import torch

from dereverb import baselines
from dereverb.wpe import wpe
from spectral import median_seconds  # benchmarks/spectral.py (this folder is on sys.path)


def reverberant(seconds: float, rate: int = 16000) -> np.ndarray:
    """Speech-like noise (a syllable-rate envelope) in an exponentially decaying 0.6 s room."""
    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    dry = rng.standard_normal(n) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)) ** 2
    h = rng.standard_normal(int(0.8 * rate)) * np.exp(-6.9 * np.arange(int(0.8 * rate)) / (0.6 * rate))
    h[0] = 4.0
    return scipy.signal.fftconvolve(dry, h)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from nara_wpe.wpe import wpe as nara_wpe

    spec = baselines._stft(reverberant(args.seconds), 512, 128)  # (F, T) complex128
    print(f"{args.seconds:g} s at 16 kHz, STFT 512/128, 40 taps, delay 3, {args.threads} threads")
    for iterations in (2, 3):
        ref = nara_wpe(spec[:, None, :], taps=40, delay=3, iterations=iterations, statistics_mode="full")[:, 0, :]
        t = median_seconds(lambda: nara_wpe(spec[:, None, :], taps=40, delay=3, iterations=iterations,
                                         statistics_mode="full"), args.repeats)
        print(f"  {iterations} iterations  nara_wpe (float64 numpy)   RTF {t / args.seconds:.4f}")
        for dtype in (torch.complex128, torch.complex64):
            x = torch.from_numpy(spec).to(dtype)
            t = median_seconds(lambda: wpe(x, 40, 3, iterations), args.repeats)
            diff = np.linalg.norm(wpe(x, 40, 3, iterations).numpy() - ref) / np.linalg.norm(ref)
            print(f"  {iterations} iterations  dereverb.wpe {str(dtype)[6:]:<10}  RTF {t / args.seconds:.4f}"
                  f"  (rel. diff from nara_wpe {diff:.1e})")


if __name__ == "__main__":
    main()
