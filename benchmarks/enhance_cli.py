"""`dereverb enhance` as a user runs it: wall time and peak memory of the whole command, with and
without `--wpe`, each run a fresh process, runs of the two interleaved.

Peak memory is the command's maximum resident set size as the kernel reports it to its parent
(``wait4``'s ``ru_maxrss``, what ``/usr/bin/time -v`` prints): interpreter, torch and the model
included.  This process imports neither torch nor dereverb, so its own size (which a child's
``ru_maxrss`` cannot fall below) stays small.  Input: real speech x a real church RIR from
``examples/``, tiled to each length, 16 kHz 16-bit WAV.

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


def run(args: list[str]) -> tuple[float, float]:
    """``(wall seconds, peak RSS in MB)`` of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(args)} failed: {proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="10,600", help="input lengths in seconds, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    dereverb = [sys.executable, "-m", "dereverb", "enhance"]
    print(f"{os.cpu_count()} CPUs; median of {args.repeats} runs each, the two systems interleaved\n")
    print("| input | system | wall s | x real time | --wpe / default | peak RSS MB |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in (int(s) for s in args.lengths.split(",")):
            src = Path(tmp) / f"in_{seconds}s.wav"
            sf.write(src, reverberant_speech(seconds), RATE, subtype="PCM_16")
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
