"""``dereverb info FILE...``: print what dereverb sees in audio files, or in a model file."""

from __future__ import annotations

import argparse

NAME = "info"
HELP = "show sample rate, channels, length and format of audio files, or what a model file holds"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", help="audio files or folders")
    p.add_argument("--model", action="append", default=[], metavar="NAME|PATH",
                   help="describe a model: bundled name, .safetensors file or run folder (repeatable)")
    p.add_argument("--json", action="store_true", help="with --model: the model file's full JSON metadata")


def run(args: argparse.Namespace) -> int:
    import json

    from .. import audio, checkpoint
    from ..errors import DereverbError

    if not args.inputs and not args.model:
        raise DereverbError("nothing to show: give audio files or folders, or --model NAME|PATH")
    for spec in args.model:
        path = checkpoint.resolve_model(spec)
        print(json.dumps(checkpoint.read_meta(path), indent=1) if args.json
              else checkpoint.describe(path), end="\n" if args.json else "")
    for root in args.inputs:
        for path in audio.list_audio(root):
            i = audio.info(path)
            print(
                f"{path}\t{i.sample_rate} Hz\t{i.channels} ch\t{i.duration:.2f} s\t{i.format}/{i.subtype}"
            )
    return 0
