"""Cost of every metric, and the accuracy of the blind T60/DRR estimates on simulated rooms.

Prints:
- seconds per file (median of ``--repeats``) of each metric and baseline on the bundled 5 s
  LibriSpeech clip convolved with the bundled church RIR (16 kHz, one process, one thread pool);
- with ``--rooms N`` (default 30; 0 skips): N pyroomacoustics rooms (T60 0.2-1.2 s, 0.5-3 m),
  each convolved with a different utterance (shared/data dev speech when present, else the
  bundled clip), and the mean absolute error / bias / correlation of ``estimate_t60`` against the
  RIR's measured T30 and of ``estimate_drr`` against its measured DRR.

BLAS/OpenMP run single-threaded, as in ``evaluate``'s worker processes (set the variables
yourself to measure something else).

    python benchmarks/metrics.py [--repeats 3] [--rooms 30]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.signal as ss  # noqa: E402

from dereverb import audio, baselines, metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEV_SPEECH = REPO.parent / "shared" / "data" / "speech" / "dev" / "librispeech"
SR = 16000


def _signals() -> tuple[np.ndarray, np.ndarray]:
    clean = audio.read(REPO / "examples" / "speech_1688-142285-0003.flac", SR)[0][0].astype(np.float64)
    h = audio.read(REPO / "examples" / "rir_st_margarets_church.wav", SR, channel=0)[0][0]
    d = int(np.argmax(np.abs(h)))
    rev = ss.fftconvolve(clean, h)[d : d + clean.size]
    return clean, rev * 0.5 / np.abs(rev).max()


def _time(fn, repeats: int) -> float:
    fn()  # warm-up: imports, ONNX session
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(repeats: int) -> None:
    clean, rev = _signals()
    jobs = {
        "pesq (wb)": lambda: metrics.pesq(clean, rev, SR),
        "stoi": lambda: metrics.stoi(clean, rev, SR),
        "estoi": lambda: metrics.estoi(clean, rev, SR),
        "si_sdr": lambda: metrics.si_sdr(clean, rev),
        "cepstral_distance": lambda: metrics.cepstral_distance(clean, rev, SR),
        "llr": lambda: metrics.llr(clean, rev, SR),
        "fwsegsnr": lambda: metrics.fwsegsnr(clean, rev, SR),
        "srmr": lambda: metrics.srmr(rev, SR),
        "dnsmos": lambda: metrics.dnsmos(rev, SR),
        "estimate_t60": lambda: metrics.estimate_t60(rev, SR),
        "estimate_drr": lambda: metrics.estimate_drr(rev, SR),
        "baseline wpe (taps 40)": lambda: baselines.wpe(rev),
        "baseline oracle-magnitude": lambda: baselines.oracle_magnitude(rev, clean),
    }
    print(f"seconds per file ({clean.size / SR:.2f} s of 16 kHz speech, median of {repeats}):")
    for name, fn in jobs.items():
        print(f"  {name:28s} {_time(fn, repeats):7.3f}")


def _speech(n: int) -> list[np.ndarray]:
    files = sorted(DEV_SPEECH.glob("*.flac")) if DEV_SPEECH.is_dir() else []
    if not files:
        return [_signals()[0]]
    return [audio.read(f, SR)[0][0].astype(np.float64) for f in files[:: max(1, len(files) // n)][:n]]


def accuracy(n_rooms: int, seed: int = 0) -> None:
    from dereverb import simulate

    rng = np.random.default_rng(seed)
    speech = _speech(n_rooms)
    rows = []
    for i in range(n_rooms):
        rir = simulate.simulate_rir(float(rng.uniform(0.2, 1.2)), float(rng.uniform(0.5, 3.0)), SR, rng)
        dry = speech[i % len(speech)]
        y = ss.oaconvolve(dry, rir.audio)[: dry.size]
        rows.append((rir.t30, metrics.estimate_t60(y, SR), rir.drr, metrics.estimate_drr(y, SR)))
    r = np.array(rows)
    for name, true, est, unit in (("T60", r[:, 0], r[:, 1], "s"), ("DRR", r[:, 2], r[:, 3], "dB")):
        err = est - true
        print(f"  {name}: MAE {np.abs(err).mean():.3f} {unit}, bias {err.mean():+.3f} {unit}, "
              f"correlation {np.corrcoef(true, est)[0, 1]:.2f}, true range {true.min():.2f}..{true.max():.2f} {unit}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rooms", type=int, default=30)
    args = p.parse_args()
    speed(args.repeats)
    if args.rooms > 0:
        print(f"blind estimates on {args.rooms} simulated rooms (seed 0):")
        accuracy(args.rooms)


if __name__ == "__main__":
    main()
