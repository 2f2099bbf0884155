"""Are a mask model's corrections right where it makes few? PESQ against the mask's exponent.

For each file of a paired test set (``dereverb make-testset``), a ``output: mask`` model's mask
``m`` is applied as ``m ** w`` (the reverberant phase) for ``w`` from 0 (the input, after the
model's frontend) to 1 (the model as shipped), and the network's own suppression is measured:
``r = 10 log10(sum |m X|^2 / sum |X|^2)`` dB over the segment.  Prints mean PESQ-WB and cepstral
distance per condition for each ``w``, with ``r``.  Where PESQ falls as ``w`` grows, the model's
corrections do more harm than good (the near-field trap: a model that finds little to remove
mostly removes the wrong things); where it rises to ``w = 1``, the model is under-, not
over-processing.  ``--wpe`` runs the model behind single-channel WPE (``enhance --wpe``).

    python benchmarks/mask_strength.py TESTSET [--model default] [--wpe] [--files 5]
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

from dereverb import audio, checkpoint, metrics, spectral  # noqa: E402
from dereverb.wpe import WpeConfig  # noqa: E402
from dereverb.enhance import Dereverberator  # noqa: E402
from dereverb.model import DereverbModel  # noqa: E402

EXPONENTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@torch.inference_mode()
def scores(model: DereverbModel, clean: np.ndarray, reverb: np.ndarray, sr: int) -> tuple[float, dict]:
    """``(r_db, {w: (PESQ-WB, CD)})`` for one file: the network's suppression and each exponent."""
    x = torch.from_numpy(reverb)[None]
    spec = model.frontend(model.stft(x))  # (1, F_full, T)
    mask = model.activate(model.net(model.encode(spec)))[:, 0]  # (1, n_freq, T)
    kept, dropped = spectral.trim_freq(spec, model.stft_config.n_freq)
    r_db = 10 * np.log10(float((mask * kept.abs()).square().sum() / kept.abs().square().sum().clamp_min(1e-20)))
    out = {}
    for w in EXPONENTS:
        est = spectral.restore_freq(spectral.with_phase(mask ** w * kept.abs(), kept), model.stft_config.n_fft, dropped)
        y = model.stft.inverse(est, length=x.shape[-1])[0].numpy()
        out[w] = (metrics.pesq(clean, y, sr), metrics.cepstral_distance(clean, y, sr))
    return r_db, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("testset", help="folder from dereverb make-testset (reverb/, clean/, conditions.csv)")
    p.add_argument("--model", default=None, help="bundled name, checkpoint or run folder (default: the bundled model)")
    p.add_argument("--wpe", action="store_true", help="WPE (40 taps) before the network, as enhance --wpe")
    p.add_argument("--files", type=int, default=5, help="files per condition")
    args = p.parse_args()
    torch.set_num_threads(2)
    model = checkpoint.load(checkpoint.resolve_model(args.model), device="cpu").eval()
    if model.model_config.output != "mask":
        raise SystemExit(f"{args.model}: output {model.model_config.output!r}, not a mask model")
    if args.wpe:  # the model with WPE as its frontend, as enhance --wpe builds it
        model = Dereverberator(model, device="cpu", wpe=WpeConfig()).model
    root = Path(args.testset)
    by_condition: dict[str, list[str]] = {}
    with open(root / "conditions.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_condition.setdefault(row["condition"], []).append(row["file"])
    print(f"{'condition':24s} {'r (dB)':>7s}  " + "  ".join(f"{'w=' + format(w, 'g'):>14s}" for w in EXPONENTS))
    for condition, files in sorted(by_condition.items()):
        rs, rows = [], {w: [] for w in EXPONENTS}
        for name in files[: args.files]:
            clean, sr = audio.read(root / "clean" / name)
            reverb, _ = audio.read(root / "reverb" / name)
            r_db, out = scores(model, clean[0], reverb[0], sr)
            rs.append(r_db)
            for w, v in out.items():
                rows[w].append(v)
        print(f"{condition[:24]:24s} {np.mean(rs):7.2f}  " + "  ".join(
            f"{np.mean([a for a, _ in v]):.2f} / CD {np.mean([b for _, b in v]):.2f}" for v in rows.values()), flush=True)
    print("(PESQ-WB / cepstral distance in dB for the mask ** w; w=0 is the input after the frontend, w=1 the model;"
          " r: the network's own energy suppression)")


if __name__ == "__main__":
    main()
