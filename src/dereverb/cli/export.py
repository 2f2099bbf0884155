"""``dereverb export --format onnx -o model.onnx [--model NAME|PATH] [--streaming]``: export the network
core (whole spectrograms), or a causal model's one-frame streaming step with its state."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a model's network to ONNX (the STFT stays outside; run it with enhance --model x.onnx)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="onnx", choices=("onnx",), help="export format")
    p.add_argument("-o", "--output", "--out", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="bundled model name, .safetensors checkpoint or run folder (default: bundled)")
    p.add_argument("--streaming", action="store_true",
                   help="a causal model's one-frame step, its state as explicit inputs/outputs "
                        "(what dereverb stream --backend onnx runs)")
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
    model = checkpoint.load(source)
    if args.streaming:
        path = export.export_streaming_onnx(model, args.output, opset=args.opset)
        print(f"wrote {path} (opset {args.opset}, inputs: frame (batch, channels, freq, 1) and "
              "state_0.. (zeros at the start); outputs: output and next_state_0..)")
    else:
        path = export.export_onnx(model, args.output, opset=args.opset)
        print(f"wrote {path} (opset {args.opset}, inputs: features (batch, channels, freq, frames))")
    return 0
