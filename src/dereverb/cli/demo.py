"""``dereverb demo -o DIR``: dereverberate the bundled examples, print metrics, write WAVs and PNGs."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "dereverberate the bundled examples and compare with unprocessed and WPE"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", "--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--model", default=None, help="model file or run folder (default: the bundled model)")


def run(args: argparse.Namespace) -> int:
    from .. import demo
    from ..enhance import Dereverberator

    demo.check_examples()
    d = Dereverberator.from_pretrained(args.model)
    demo.run(args.output, d)
    print(f"outputs in {args.output}/ (WAVs and *_spectrograms.png)")
    return 0
