"""Every live microphone of the bundled real room recording: unprocessed, WPE and models.

``examples/xmas_room_recording_8ch.wav`` is a loudspeaker playing ``xmas_dry_source.wav`` in a
real room with a broadband noise masker (8 microphones, two of them dead).  ``make demo`` scores
the one microphone closest to the source; this scores each live one (six positions of the same
room and noise: a check on real noisy far-field input that a single file cannot give), at 16 kHz
against the dry source aligned by cross-correlation, with the demo's metrics.  A microphone is
live when its correlation with the source is at least half the best one's.  Prints the mean over
microphones per system and, for each model after the first, its paired difference from the first
per microphone.

    python benchmarks/real_room.py [--models default other.safetensors ...] [--wpe] [--shifts 1 2 ...]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

import argparse  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dereverb import audio, baselines, demo  # noqa: E402
from dereverb.wpe import WpeConfig  # noqa: E402
from dereverb.enhance import DEFAULT_SHIFTS, Dereverberator  # noqa: E402

RATE = demo.RATE


def live_mics(mics: np.ndarray, dry: np.ndarray) -> list[int]:
    """Channels of ``mics (C, S)`` whose normalised correlation with ``dry (S,)`` is at least half
    the best channel's."""
    corr = demo.correlations(dry, mics, RATE // 2)
    return [c for c, v in enumerate(corr) if v >= 0.5 * max(corr)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["default"], help="bundled names, checkpoints or run folders")
    p.add_argument("--wpe", action="store_true", help="also each model behind WPE (enhance --wpe)")
    p.add_argument("--shifts", nargs="+", type=int, default=[DEFAULT_SHIFTS],
                   help="network passes (enhance --shifts); several values: one row per model and value")
    args = p.parse_args()
    torch.set_num_threads(2)
    path, dry = demo.room_case()
    mics, _ = audio.read(path, sample_rate=RATE)
    dry = audio.resample(dry, audio.info(path).sample_rate, RATE)
    live = live_mics(mics, dry)
    systems: dict[str, Callable[[np.ndarray], np.ndarray]] = {"unprocessed": lambda x: x, "wpe": baselines.wpe}
    for spec in args.models:
        name = Path(spec).stem if spec.endswith(".safetensors") else Path(spec).name
        kinds = [(name, None)] + ([(f"wpe+{name}", WpeConfig())] if args.wpe else [])
        for label, wpe in kinds:
            for k in args.shifts:
                d = Dereverberator.from_pretrained(spec, device="cpu", wpe=wpe, shifts=k)
                systems[label + (f" x{k}" if len(args.shifts) > 1 else "")] = lambda x, d=d: d(x, RATE)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    for c in live:
        ref = demo.align(dry, mics[c], max_lag=RATE // 2)
        for name, run in systems.items():
            rows[name].append(demo.score(run(mics[c]), ref, RATE))
    keys = demo.COLUMNS
    print(f"real room recording, live microphones {live}: mean over {len(live)} (16 kHz)")
    print("system".ljust(24) + "".join(k[:10].rjust(11) for k in keys))
    for name, rs in rows.items():
        print(name[:24].ljust(24) + "".join(f"{np.mean([r[k] for r in rs]):11.3f}" for k in keys))
    models = [n for n in systems if n not in ("unprocessed", "wpe")]
    for name in models[1:]:
        print(f"\n{name} - {models[0]}, per microphone {live}:")
        for k in keys:
            d = [a[k] - b[k] for a, b in zip(rows[name], rows[models[0]])]
            print(f"  {k:18s} mean {np.mean(d):+8.3f}   " + " ".join(f"{v:+.3f}" for v in d))
    print("\nbetter: pesq, estoi, fwsegsnr, si_sdr, srmr higher; cepstral_distance, llr lower")


if __name__ == "__main__":
    main()
