"""``dereverb enhance INPUT... -o OUT``: dereverberate files and folders."""

from __future__ import annotations

import argparse
import sys

NAME = "enhance"
HELP = "remove reverberation from audio files and folders (recursive; output mirrors the tree)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders")
    p.add_argument("-o", "--output", "--out", required=True, metavar="OUT",
                   help="output folder (or, for one input file, an output file name)")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="bundled model name, .safetensors checkpoint, run folder or .onnx file (default: bundled)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the network runs (default auto: a CUDA GPU when there is one, else the CPU)")
    p.add_argument("--phase", default=None, choices=("reverberant", "griffinlim", "model"),
                   help="phase of the output: reverberant (the default) or griffinlim for models that predict a "
                        "magnitude, as the bundled one does; model only for models that predict phase "
                        "(model.output complex)"),
    p.add_argument("--strength", type=float, default=1.0,
                   help="0..1: 1 removes all the reverberation it can, lower keeps some room sound")
    p.add_argument("--suffix", default="", help="added to each output file's stem, e.g. _dry")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    p.add_argument("--output-rate", default="input", choices=("input", "model"),
                   help="write at the input's sample rate (default) or the model's")
    p.add_argument("--mono", action="store_true", help="mix channels down to one before enhancing")
    p.add_argument("--wpe", action="store_true",
                   help="run single-channel WPE (40 taps) before the model: a cascade that is "
                        "better on average and on close-microphone input; about 4x slower on long files")
    p.add_argument("--shifts", type=int, default=None, metavar="N",
                   help="network passes at frame offsets, averaged: more is slightly better and "
                        "N times the network's cost (default 2; 1 is the fastest)")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx"),
                   help="run the network with torch or onnxruntime")


def run(args: argparse.Namespace) -> int:
    import warnings

    from tqdm import tqdm

    from ..wpe import WpeConfig
    from ..enhance import DEFAULT_SHIFTS, Dereverberator

    d = Dereverberator.from_pretrained(args.model, device=args.device, phase=args.phase,
                                       strength=args.strength, backend=args.backend,
                                       wpe=WpeConfig() if args.wpe else None,
                                       shifts=DEFAULT_SHIFTS if args.shifts is None else args.shifts)
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *a, **k: tqdm.write(f"dereverb: warning: {message}", file=sys.stderr)
        summary = d.enhance_paths(args.inputs, args.output, suffix=args.suffix, overwrite=args.overwrite,
                                  output_rate=args.output_rate, mono=args.mono)
    if summary.skipped:
        print(f"skipped {summary.skipped} existing output(s); --overwrite redoes them")
    print(f"{summary.files} files, {summary.audio_seconds:.1f} s of audio, "
          f"real-time factor {summary.real_time_factor:.3f}")
    return 0
