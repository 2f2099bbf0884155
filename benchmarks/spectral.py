"""Seconds of compute per second of audio for STFT+iSTFT and Griffin-Lim (32 iterations).

Run: ``.venv/bin/python benchmarks/spectral.py``.  Prints medians over repeats, measured side by
side in one run (this machine is noisy: compare ratios, not absolute numbers across runs).
"""

from __future__ import annotations

import statistics
import time

import torch

from dereverb import spectral
from dereverb.config import StftConfig


def median_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    cfg = StftConfig()
    stft = spectral.Stft(cfg)
    seconds = 10.0
    x = torch.randn(1, int(seconds * cfg.sample_rate))
    mag = stft(x).abs()
    with torch.inference_mode():
        rt = median_seconds(lambda: stft.inverse(stft(x), x.shape[-1]))
        gl = median_seconds(lambda: spectral.griffin_lim(mag, stft, x.shape[-1], n_iter=32, momentum=0.0), 3)
        fgl = median_seconds(lambda: spectral.griffin_lim(mag, stft, x.shape[-1], n_iter=32), 3)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {seconds:.0f} s of audio")
    print(f"stft+istft            {rt / seconds:.5f} s per s of audio")
    print(f"griffin-lim (32)      {gl / seconds:.5f} s per s of audio")
    print(f"fast griffin-lim (32) {fgl / seconds:.5f} s per s of audio")


if __name__ == "__main__":
    main()
