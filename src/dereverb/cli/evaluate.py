"""``dereverb evaluate``: score systems on reverberant files; CSV, markdown and an HTML report."""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "score the baselines, a model and other systems' outputs; write CSV, markdown and report.html"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reverb", required=True, metavar="DIR", help="reverberant input files")
    p.add_argument("--clean", metavar="DIR", help="clean references (same relative names); "
                   "without it only non-intrusive metrics (SRMR, DNSMOS, T60/DRR estimates)")
    p.add_argument("--model", metavar="NAME|PATH", help="also enhance with this model (bundled name, "
                   ".safetensors file, run folder or .onnx)")
    p.add_argument("--system", action="append", default=[], metavar="LABEL=DIR",
                   help="precomputed outputs of another system (repeatable)")
    p.add_argument("--baselines", default="unprocessed,wpe,oracle-magnitude",
                   help="comma-separated subset of unprocessed,wpe,oracle-magnitude ('' for none)")
    p.add_argument("--metrics", default="", help="comma-separated subset of metrics (default: all that apply)")
    p.add_argument("--rate", type=int, default=16000, help="scoring sample rate in Hz (default 16000)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes for the metrics (default 2)")
    p.add_argument("--examples", type=int, default=3, help="files shown with spectrograms and audio")
    p.add_argument("--wpe-taps", type=int, default=40,
                   help="the WPE baseline's prediction filter length in frames (default 40)")
    p.add_argument("--wpe-delay", type=int, default=3, help="the WPE baseline's prediction delay in frames (default 3)")
    p.add_argument("--wpe-iterations", type=int, default=3, help="the WPE baseline's iterations (default 3)")
    p.add_argument("--seed", type=int, default=0, help="picks the example files (default 0)")
    p.add_argument("--shifts", type=int, default=None, metavar="N",
                   help="network passes per segment for --model (default: enhance's default)")
    p.add_argument("-o", "--output", "--out", required=True, metavar="REPORT_DIR", help="output folder")


def _systems(specs: list[str]) -> dict[str, str]:
    from ..errors import DereverbError

    out: dict[str, str] = {}
    for spec in specs:
        label, sep, folder = spec.partition("=")
        if not sep or not label or not folder:
            raise DereverbError(f"--system {spec}: expected LABEL=DIR")
        if label in out:
            raise DereverbError(f"--system {label}: given twice")
        out[label] = folder
    return out


def _split(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def run(args: argparse.Namespace) -> int:
    from ..wpe import WpeConfig
    from ..evaluate import EvalConfig, evaluate

    cfg = EvalConfig(baselines=_split(args.baselines), metrics=_split(args.metrics), sample_rate=args.rate,
                     workers=args.workers, examples=args.examples, seed=args.seed,
                     wpe=WpeConfig(taps=args.wpe_taps, delay=args.wpe_delay, iterations=args.wpe_iterations),
                     shifts=args.shifts)
    result = evaluate(args.reverb, args.output, clean_dir=args.clean, systems=_systems(args.system),
                      model=args.model, cfg=cfg)
    print((result.out_dir / "summary.md").read_text(), end="")
    if result.notes:
        print(f"{len(result.notes)} note(s), see {result.out_dir / 'notes.txt'}; first: {result.notes[0]}")
    print(f"wrote {result.out_dir / 'per_file.csv'}, {result.out_dir / 'report.html'}")
    return 0
