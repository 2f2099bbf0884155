"""``dereverb info FILE...``: print what dereverb sees in audio files, or in a model file."""

from __future__ import annotations

import argparse

NAME = "info"
HELP = "show sample rate, channels, length and format of audio files, or what a model file holds"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", help="audio files or folders")
    p.add_argument("--model", action="append", default=[], metavar="NAME|PATH",
                   help="describe a model: bundled name, .safetensors file, run folder or exported .onnx file "
                        "(repeatable)")
    p.add_argument("--json", action="store_true", help="with --model: the model file's full JSON metadata")


def run(args: argparse.Namespace) -> int:
    import json
    import warnings

    from .. import audio, checkpoint, export
    from ..errors import DereverbError

    if not args.inputs and not args.model:
        raise DereverbError("nothing to show: give audio files or folders, or --model NAME|PATH")
    for spec in args.model:
        path = checkpoint.resolve_model(spec)
        exported = path.suffix == ".onnx"
        if args.json:
            print(json.dumps(export.load_onnx(path)[1].meta if exported else checkpoint.read_meta(path), indent=1))
        else:
            print(export.describe_onnx(path) if exported else checkpoint.describe(path), end="")
    for root in args.inputs:
        for path in audio.list_audio(root, audio.READ_SUFFIXES, warn_foreign=True):
            i = audio.info(path)
            print(
                f"{path}\t{i.sample_rate} Hz\t{i.channels} ch\t{i.duration:.2f} s\t{i.format}/{i.subtype}"
            )
            if i.truncated:
                warnings.warn(i.truncated, stacklevel=1)
    return 0
