"""`dereverb enhance --jobs N` on a corpus: hours of audio enhanced per hour of wall time for each
job count, and the speedup over one job.

The corpus: real speech x a real church RIR from ``examples/``, cut into files of random lengths
(2-20 s, seeded), 16 kHz 16-bit WAV.  Each run is the whole command in a fresh process (start-up,
model loading in every worker and the manifest included), into an empty output folder; the job
counts run in turns, and the table gives the median of the repeats.  Outputs of every job count
are compared with one job's (largest sample difference, in 16-bit steps).

    python benchmarks/enhance_jobs.py [--jobs 1,2] [--minutes 10] [--repeats 3] [-- extra enhance flags]
    python benchmarks/enhance_jobs.py --jobs 1,4,8,16      # a many-core machine
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
RATE = 16000


def corpus(folder: Path, minutes: float, seed: int = 0) -> float:
    """Write files of 2-20 s into ``folder`` until ``minutes`` of audio; returns the seconds written."""
    speech, rate = sf.read(REPO / "examples" / "speech_1688-142285-0003.flac", dtype="float32")
    rir, rir_rate = sf.read(REPO / "examples" / "rir_st_margarets_church.wav", dtype="float32", always_2d=True)
    assert rate == RATE, "the example clip is 16 kHz"
    x = scipy.signal.fftconvolve(speech, scipy.signal.resample_poly(rir[:, 0], RATE, rir_rate))
    x = np.tile(0.5 * x / np.abs(x).max(), 5).astype(np.float32)
    rng = np.random.default_rng(seed)
    total, i = 0.0, 0
    while total < minutes * 60:
        n = int(rng.uniform(2, 20) * RATE)
        start = int(rng.integers(0, len(x) - n))
        sf.write(folder / f"utt{i:04d}.wav", x[start : start + n], RATE, subtype="PCM_16")
        total, i = total + n / RATE, i + 1
    return total


def run(args: list[str]) -> float:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "dereverb", "enhance", *args], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"dereverb enhance {' '.join(args)} failed: {r.stderr[-800:]}")
    return time.perf_counter() - start


def largest_difference(a: Path, b: Path) -> int:
    """Largest difference between the files of two output folders, in 16-bit steps."""
    worst = 0
    for f in sorted(a.glob("*.wav")):
        x, y = sf.read(f, dtype="int16")[0], sf.read(b / f.name, dtype="int16")[0]
        worst = max(worst, int(np.abs(x.astype(np.int32) - y).max()))
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", default="1,2", help="job counts, comma-separated (default 1,2)")
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of audio in the corpus")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("extra", nargs="*", help="more `dereverb enhance` flags, after --")
    args = p.parse_args()
    counts = [int(j) for j in args.jobs.split(",")]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        seconds = corpus(src, args.minutes)
        files = len(list(src.glob("*.wav")))
        print(f"{platform.processor() or platform.machine()}, {cpus} CPUs; {files} files, {seconds / 60:.1f} min "
              f"of audio; median of {args.repeats} runs, job counts in turns\n")
        walls: dict[int, list[float]] = {j: [] for j in counts}
        for r in range(args.repeats):
            for j in counts if r % 2 == 0 else counts[::-1]:
                out = Path(tmp) / f"out{j}"
                shutil.rmtree(out, ignore_errors=True)
                walls[j].append(run([str(src), "-o", str(out), "--jobs", str(j), *args.extra]))
        one = statistics.median(walls[counts[0]])
        print(f"| --jobs | wall s (runs) | hours of audio per hour | speedup over --jobs {counts[0]} | outputs vs "
              f"--jobs {counts[0]} (16-bit steps) |\n|---|---|---|---|---|")
        for j in counts:
            wall = statistics.median(walls[j])
            diff = largest_difference(Path(tmp) / f"out{counts[0]}", Path(tmp) / f"out{j}")
            runs = " ".join(f"{w:.1f}" for w in walls[j])
            print(f"| {j} | {wall:.1f} ({runs}) | {seconds / wall:.0f} | {one / wall:.2f} | {diff} |")


if __name__ == "__main__":
    main()
