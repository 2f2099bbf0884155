"""How much does bounding the magnitude mask cost? The oracle ceiling per condition.

For each file of a paired test set (``dereverb make-testset``), the ideal mask |clean| / |reverb|
(the model's STFT, 512/128 Hann) is clipped at a bound and applied to the reverberant STFT
(reverberant phase), which is the best any mask model with that bound can do (``output: mask``
models are bounded at 1).  Prints mean PESQ-WB and cepstral distance per condition for the bounds
1, 1.5, 2 and unbounded, with the unprocessed input, so a bound's cost can be weighed against what
a model reaches.

    python benchmarks/mask_ceiling.py TESTSET [--files 5]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

import argparse  # noqa: E402
import csv  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dereverb import audio, metrics  # noqa: E402
from dereverb.config import StftConfig  # noqa: E402
from dereverb.spectral import Stft  # noqa: E402

BOUNDS = (1.0, 1.5, 2.0, float("inf"))


def scores(clean: np.ndarray, reverb: np.ndarray, stft: Stft, sr: int) -> dict[str, tuple[float, float]]:
    """``{system: (PESQ-WB, CD)}`` for the unprocessed input and each clipped oracle mask."""
    x = stft(torch.from_numpy(reverb))
    ideal = stft(torch.from_numpy(clean)).abs() / x.abs().clamp_min(1e-8)
    out = {"unprocessed": reverb}
    for bound in BOUNDS:
        out[f"mask<={bound:g}"] = stft.inverse(x * ideal.clamp(max=bound), length=len(reverb)).numpy()
    return {k: (metrics.pesq(clean, y, sr), metrics.cepstral_distance(clean, y, sr)) for k, y in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("testset", help="folder from dereverb make-testset (reverb/, clean/, conditions.csv)")
    p.add_argument("--files", type=int, default=5, help="files per condition")
    args = p.parse_args()
    root = Path(args.testset)
    by_condition: dict[str, list[str]] = {}
    with open(root / "conditions.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_condition.setdefault(row["condition"], []).append(row["file"])
    stft = Stft(StftConfig())
    total: dict[str, list[tuple[float, float]]] = {}
    print("condition        " + "  ".join(f"{k:>18s}" for k in ["unprocessed"] + [f"mask<={b:g}" for b in BOUNDS]))
    for condition, files in sorted(by_condition.items()):
        rows: dict[str, list[tuple[float, float]]] = {}
        for name in files[: args.files]:
            clean, sr = audio.read(root / "clean" / name)
            reverb, _ = audio.read(root / "reverb" / name)
            for k, v in scores(clean[0], reverb[0], stft, sr).items():
                rows.setdefault(k, []).append(v)
                total.setdefault(k, []).append(v)
        print(f"{condition:16s} " + "  ".join(f"{np.mean([a for a, _ in v]):.2f} / CD {np.mean([b for _, b in v]):.2f}"
                                              for v in rows.values()), flush=True)
    print(f"{'all':16s} " + "  ".join(f"{np.mean([a for a, _ in v]):.2f} / CD {np.mean([b for _, b in v]):.2f}"
                                       for v in total.values()))
    print("(PESQ-WB / cepstral distance in dB; the clipped ideal mask is the ceiling of a mask model with that bound)")


if __name__ == "__main__":
    main()
