"""WPE guided by a network's speech power (DNN-WPE) against WPE alone, per condition.

Single-channel WPE weights each frame by the inverse of its own running estimate of the speech
power; in the gaps between words that estimate shrinks towards zero and those frames dominate the
filter.  DNN-WPE (Kinoshita et al., Interspeech 2017; Heymann et al., ICASSP 2019) takes the power
from a network instead: here ``dereverb.wpe.wpe(..., psd=|model(y)|^2)``, one more filter estimate
after WPE's own iterations with the weights ``1 / max(psd, |x|^2)``.  The output is still a linear
filter of the input (no mask), so it keeps WPE's strength near the microphone.

For each file of a paired test set (``dereverb make-testset``) prints PESQ-WB / ESTOI / cepstral
distance per condition for WPE (3 iterations, the evaluation baseline's settings), WPE with a 4th
iteration (the same number of filter estimates as DNN-WPE), DNN-WPE with the model's power, and
DNN-WPE with the clean reference's power (an upper bound for any network), then DNN-WPE's paired
difference from 4-iteration WPE (mean +- 95% interval over files).

    python benchmarks/dnn_wpe.py TESTSET [--model default] [--files 10]
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

from dereverb import audio, checkpoint, metrics  # noqa: E402
from dereverb.enhance import resolve_model  # noqa: E402
from dereverb.model import DereverbModel  # noqa: E402
from dereverb.wpe import wpe  # noqa: E402

SYSTEMS = ("wpe", "wpe 4 it", "dnn-wpe", "dnn-wpe oracle")
TAPS, DELAY, ITERATIONS = 40, 3, 3


@torch.inference_mode()
def outputs(model: DereverbModel, reverb: np.ndarray, clean: np.ndarray) -> dict[str, np.ndarray]:
    """``reverb``, ``clean`` ``(S,)`` at the model's rate -> each system's output ``(S,)``."""
    x, c = torch.from_numpy(reverb)[None], torch.from_numpy(clean)[None]
    y = model.stft(x)  # (1, F_full, T)
    specs = {"wpe": wpe(y, TAPS, DELAY, ITERATIONS),
             "wpe 4 it": wpe(y, TAPS, DELAY, ITERATIONS + 1),
             "dnn-wpe": wpe(y, TAPS, DELAY, ITERATIONS, psd=model(y).abs().square()),
             "dnn-wpe oracle": wpe(y, TAPS, DELAY, ITERATIONS, psd=model.stft(c).abs().square())}
    return {k: model.stft.inverse(s, length=x.shape[-1])[0].numpy() for k, s in specs.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("testset", help="folder from dereverb make-testset (reverb/, clean/, conditions.csv)")
    p.add_argument("--model", default=None, help="bundled name, checkpoint or run folder (default: the bundled model)")
    p.add_argument("--files", type=int, default=10, help="files per condition")
    args = p.parse_args()
    torch.set_num_threads(2)
    model = checkpoint.load(resolve_model(args.model), device="cpu").eval()
    root = Path(args.testset)
    by_condition: dict[str, list[str]] = {}
    with open(root / "conditions.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_condition.setdefault(row["condition"], []).append(row["file"])
    print(f"{'condition':24s} " + " ".join(f"{s:>20s}" for s in SYSTEMS) + "   dnn-wpe - wpe 4 it: PESQ-WB, CD")
    diffs: list[tuple[float, float]] = []
    for condition, files in sorted(by_condition.items()):
        rows: dict[str, list[tuple[float, float, float]]] = {s: [] for s in SYSTEMS}
        for name in files[: args.files]:
            clean, sr = audio.read(root / "clean" / name)
            reverb, _ = audio.read(root / "reverb" / name)
            if sr != model.stft_config.sample_rate:
                raise SystemExit(f"{name}: {sr} Hz, the model runs at {model.stft_config.sample_rate} Hz")
            for s, out in outputs(model, reverb[0], clean[0]).items():
                rows[s].append((metrics.pesq(clean[0], out, sr), metrics.estoi(clean[0], out, sr),
                                metrics.cepstral_distance(clean[0], out, sr)))
        d = np.array([(a[0] - b[0], a[2] - b[2]) for a, b in zip(rows["dnn-wpe"], rows["wpe 4 it"])])
        diffs.extend(map(tuple, d))
        print(f"{condition[:24]:24s} " + " ".join(
            "{:>20s}".format("%.2f / %.3f / %.2f" % tuple(np.mean(v, axis=0))) for v in rows.values())
            + f"   {_interval(d[:, 0])}, {_interval(d[:, 1])}", flush=True)
    d = np.array(diffs)
    print(f"all {len(d)} files: dnn-wpe - wpe 4 it: PESQ-WB {_interval(d[:, 0])}, CD {_interval(d[:, 1])} dB")
    print("(PESQ-WB / ESTOI / cepstral distance in dB; WPE: dereverb.wpe, 40 taps, delay 3)")


def _interval(x: np.ndarray) -> str:
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return f"{x.mean():+.3f} +- {half:.3f}"


if __name__ == "__main__":
    main()
