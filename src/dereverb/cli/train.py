"""``dereverb train --config recipes/NAME.yaml [--config OVERLAY.yaml ...] [--set key=value ...] [--run-dir DIR]``."""

from __future__ import annotations

import argparse

NAME = "train"
HELP = "train a dereverberation model from a recipe (rerun the same command to resume)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, action="append",
                   help="recipe YAML, e.g. recipes/smoke.yaml; repeat to lay overlays on it, e.g. "
                        "--config recipes/default.yaml --config recipes/experiments/wide.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--run-dir", default=None, help="run folder (default: runs/<train.name>)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import train

    cfg = train.load_config(args.config, args.set)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.train.name
    _, metrics = train.train(cfg, run_dir)
    if metrics:
        print("final validation: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    print(f"model: {run_dir / 'best.safetensors'}")
    return 0
