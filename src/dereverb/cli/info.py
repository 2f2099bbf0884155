"""``dereverb info FILE...``: print what dereverb sees in audio files."""

from __future__ import annotations

import argparse

NAME = "info"
HELP = "show sample rate, channels, length and format of audio files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="audio files or folders")


def run(args: argparse.Namespace) -> int:
    from .. import audio

    for root in args.inputs:
        for path in audio.list_audio(root):
            i = audio.info(path)
            print(
                f"{path}\t{i.sample_rate} Hz\t{i.channels} ch\t{i.duration:.2f} s\t{i.format}/{i.subtype}"
            )
    return 0
