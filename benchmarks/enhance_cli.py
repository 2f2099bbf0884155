"""`dereverb enhance` as a user runs it: wall time and peak memory of the whole command, with and
without `--wpe`, each run a fresh process, runs of the two interleaved.

Peak memory is the command process's own high-water mark (``VmHWM`` in ``/proc/self/status``,
read as it exits): interpreter, torch and the model included.  Not ``ru_maxrss`` from ``wait4``
or ``/usr/bin/time``: on Linux that starts from the parent's size at the fork, so it reports a
parent that holds the test signal (1 h: 777 MB where the command itself peaked at about 405).
Input: real speech x a real church RIR from ``examples/``, tiled to each length, 16 kHz 16-bit
WAV, written in 10-minute pieces.

    python benchmarks/enhance_cli.py [--lengths 10,600] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
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


def reverberant_speech(seconds: int) -> np.ndarray:
    """``(S,)`` float32 at 16 kHz, peak 0.5: the example clip in the example church, tiled."""
    speech, rate = sf.read(REPO / "examples" / "speech_1688-142285-0003.flac", dtype="float32")
    rir, rir_rate = sf.read(REPO / "examples" / "rir_st_margarets_church.wav", dtype="float32", always_2d=True)
    assert rate == RATE, "the example clip is 16 kHz"
    rir = scipy.signal.resample_poly(rir[:, 0], RATE, rir_rate)
    x = scipy.signal.fftconvolve(speech, rir)
    x = np.tile(x, int(np.ceil(seconds * RATE / len(x))))[: seconds * RATE]
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


# `dereverb ARGS...` in this interpreter, then its VmHWM (kB) as the last line of stderr.
COMMAND = """
import re, sys
from pathlib import Path
from dereverb.cli import main
try:
    code = main(sys.argv[1:])
finally:
    print(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1), file=sys.stderr)
sys.exit(code)
"""


def run(args: list[str]) -> tuple[float, float]:
    """``(wall seconds, peak RSS in MB)`` of ``dereverb ARGS`` in a fresh process."""
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", COMMAND, *args], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"dereverb {' '.join(args)} failed: {r.stderr[-500:]}")
    return wall, int(r.stderr.split()[-1]) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="10,600", help="input lengths in seconds, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    dereverb = ["enhance"]
    print(f"{os.cpu_count()} CPUs; median of {args.repeats} runs each, the two systems interleaved\n")
    print("| input | system | wall s | x real time | --wpe / default | peak RSS MB |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in (int(s) for s in args.lengths.split(",")):
            src = Path(tmp) / f"in_{seconds}s.wav"
            piece = reverberant_speech(min(seconds, 600))
            with sf.SoundFile(src, "w", RATE, 1, "PCM_16") as f:
                for start in range(0, seconds, 600):
                    f.write(piece[: (min(seconds, start + 600) - start) * RATE])
            del piece
            results: dict[str, list[tuple[float, float]]] = {"default": [], "--wpe": []}
            for _ in range(args.repeats):
                for system in results:
                    out = Path(tmp) / "out.wav"
                    results[system].append(run(dereverb + [str(src), "-o", str(out), "--overwrite"]
                                               + ([system] if system != "default" else [])))
                    out.unlink()
            walls = {k: statistics.median(w for w, _ in v) for k, v in results.items()}
            for system, runs in results.items():
                ratio = f"{walls[system] / walls['default']:.2f}" if system != "default" else ""
                print(f"| {seconds} s | {system} | {walls[system]:.1f} | {seconds / walls[system]:.0f} | "
                      f"{ratio} | {max(m for _, m in runs):.0f} |")
            src.unlink()


if __name__ == "__main__":
    main()
