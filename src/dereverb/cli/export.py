"""``dereverb export --format onnx -o model.onnx [--model NAME|PATH]``: export the network core."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a model's network to ONNX (the STFT stays outside; run it with enhance --model x.onnx)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="onnx", choices=("onnx",), help="export format")
    p.add_argument("-o", "--output", "--out", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="bundled model name, .safetensors checkpoint or run folder (default: bundled)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (17 or newer)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import checkpoint, export
    from ..errors import DereverbError

    source = checkpoint.resolve_model(args.model)
    if source.suffix == ".onnx":
        raise DereverbError(f"{source}: already an ONNX model; --model takes a checkpoint or run folder")
    if Path(args.output).resolve() == source.resolve():
        raise DereverbError(f"{args.output}: is the model file itself; choose another output name")
    path = export.export_onnx(checkpoint.load(source), args.output, opset=args.opset)
    print(f"wrote {path} (opset {args.opset}, inputs: features (batch, channels, freq, frames))")
    return 0
