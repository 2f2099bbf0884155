"""``dereverb compare``: is one system better than another? Paired per-file differences between
two ``dereverb evaluate`` folders scored on the same test set."""

from __future__ import annotations

import argparse

NAME = "compare"
HELP = "paired per-file differences between two evaluate folders (e.g. a fine-tune against the bundled model)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("new", metavar="NEW_REPORT", help="evaluate folder of the system to judge")
    p.add_argument("old", metavar="OLD_REPORT", help="evaluate folder of the system to judge it against")
    p.add_argument("--system", default=None, metavar="NAME",
                   help="system of NEW_REPORT (default: its model row), e.g. wpe or wpe+dereverb")
    p.add_argument("--against", default=None, metavar="NAME",
                   help="system of OLD_REPORT (default: its model row)")
    p.add_argument("--metrics", default="", help="comma-separated subset (default: all scored in both)")
    p.add_argument("-o", "--output", "--out", default=None, metavar="FILE.md", help="also write the table here")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..audio import atomic_path
    from ..report import compare_reports

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    table = compare_reports(args.new, args.old, args.system, args.against, metrics)
    print(table, end="")
    if args.output:
        with atomic_path(Path(args.output)) as tmp:
            tmp.write_text(table)
    return 0
