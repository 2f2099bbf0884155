"""``dereverb make-testset``: build a paired reverberant/clean test set for ``dereverb evaluate``."""

from __future__ import annotations

import argparse

NAME = "make-testset"
HELP = "build a paired test set (reverb/, clean/, conditions.csv) from speech and RIRs or simulated rooms"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speech", required=True, metavar="DIR", help="clean speech files (folder, recursive)")
    p.add_argument("--rirs", required=True, metavar="DIR|simulate",
                   help="measured RIRs (each file a condition) or 'simulate' (REVERB-like rooms)")
    p.add_argument("--t60", default="0.25,0.5,0.7", help="simulated T60s in s (default 0.25,0.5,0.7)")
    p.add_argument("--distances", default="near=0.5,far=2.0",
                   help="simulated source distances NAME=METRES (default near=0.5,far=2.0)")
    p.add_argument("--per-condition", type=int, default=0, help="utterances per condition (0: all)")
    p.add_argument("--max-seconds", type=float, default=0.0, help="crop longer utterances (0: keep)")
    p.add_argument("--rate", type=int, default=16000, help="sample rate in Hz (default 16000)")
    p.add_argument("--target", default="direct", choices=("direct", "early", "dry"),
                   help="clean target: direct path (default), direct + 50 ms, or the dry signal")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the utterances, rooms and positions drawn (default 0): same seed, same test set")
    p.add_argument("-o", "--output", "--out", required=True, metavar="DIR", help="output folder")


def _distances(text: str) -> tuple[tuple[str, float], ...]:
    from ..errors import DereverbError

    out = []
    for part in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out.append((name, float(value)))
        except ValueError:
            sep = ""
        if not sep or not name:
            raise DereverbError(f"--distances {part}: expected NAME=METRES, e.g. near=0.5")
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    from ..errors import DereverbError
    from ..testset import TestsetConfig, make_testset

    try:
        t60s = tuple(float(t) for t in args.t60.split(",") if t.strip())
    except ValueError as e:
        raise DereverbError(f"--t60 {args.t60}: expected seconds separated by commas") from e
    cfg = TestsetConfig(t60s=t60s, distances=_distances(args.distances), per_condition=args.per_condition,
                        max_seconds=args.max_seconds, sample_rate=args.rate, target=args.target, seed=args.seed)
    rows = make_testset(args.speech, args.rirs, args.output, cfg)
    conditions = sorted({r["condition"] for r in rows})
    print(f"wrote {len(rows)} pairs in {len(conditions)} conditions to {args.output} "
          f"({', '.join(conditions)})")
    return 0
