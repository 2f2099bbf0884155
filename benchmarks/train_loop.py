"""The training loop's speed against its model step's: examples/s of `dereverb train` on a recipe
and of the same optimiser step on one fixed batch, measured interleaved in one run.

The model step is :func:`dereverb.train.optimise` (forward, the mask and compression, the recipe's
loss, backward, clipping, AdamW) at the trainer's precision and memory format, on the features of
one batch of the recipe's own data.  Every ``--every`` steps the loop pauses (in no section of its
timer) while the model step is timed, so a machine whose speed drifts (shared cores) drifts in
both; each piece's loop rate (data, features, model, weight average, logging) is divided by the
mean of the model step rates at its two ends.  Validation and checkpoints are timed apart and
added back at the recipe's intervals.  Where the time went: :class:`dereverb.runlog.LoopTimer`.
Usage::

    python benchmarks/train_loop.py                                      # recipes/default.yaml
    python benchmarks/train_loop.py --set train.num_workers=0
    python benchmarks/train_loop.py --config recipes/default.yaml --config recipes/experiments/capacity-wide.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time

import torch

from dereverb.batches import step_loader
from dereverb.errors import DereverbError
from dereverb.model import DereverbModel
from dereverb.runlog import LoopTimer
from dereverb.train import StepInputs, _precision, _train_source, load_config, optimise, train

STEP_SECTIONS = ("data", "features", "model", "average", "other")


def model_step_seconds(cfg, batch: dict, steps: int) -> float:
    """Median seconds of :func:`optimise` on ``batch`` (waveforms), after 2 untimed warm-up steps."""
    torch.manual_seed(0)
    model = DereverbModel(cfg.stft, cfg.features, cfg.model)
    dtype, channels_last = _precision(cfg.train, torch.device("cpu"))
    model.set_channels_last(channels_last)
    model.fit_normalizer(model.stft(batch["reverb"]))
    inputs = StepInputs(model)(batch)
    opt = torch.optim.AdamW(model.net.parameters(), lr=1e-4, fused=True)
    scaler = torch.amp.GradScaler(enabled=False)
    model.train()
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        optimise(model, model.net, opt, scaler, inputs["reverb_spec"], inputs["x"], inputs["y"], cfg.train, dtype)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


class InterleavedTimer(LoopTimer):
    """A :class:`LoopTimer` that stops the loop every ``every`` steps (before it waits for data) to
    time the model step alone; the pause is counted in no section."""

    def __init__(self, every: int, measure):
        super().__init__()
        self.every, self.measure, self.steps = every, measure, 0
        self.marks: list[tuple[dict[str, float], float]] = []  # (seconds so far, model step s)

    @contextlib.contextmanager
    def __call__(self, section: str):
        if section == "data":
            if self.steps % self.every == 0:
                self.marks.append((dict(self.seconds), self.measure()))
                self.mark = time.perf_counter()
            self.steps += 1
        with super().__call__(section):
            yield


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", help="recipe (repeat for overlays; default recipes/default.yaml)")
    p.add_argument("--steps", type=int, default=400, help="loop steps timed")
    p.add_argument("--every", type=int, default=50, help="loop steps between two timings of the model step")
    p.add_argument("--model-steps", type=int, default=6, help="model steps per timing (median)")
    p.add_argument("--set", action="append", default=[], help="recipe override KEY=VALUE")
    args = p.parse_args()
    configs = args.config or ["recipes/default.yaml"]
    cfg = load_config(configs, [f"train.steps={args.steps + 1}", "train.progress=false", *args.set])
    bs, tc = cfg.train.batch_size, cfg.train
    try:  # the recipe's data (../shared/data for recipes/default.yaml) must be there
        batch = next(iter(step_loader(_train_source(cfg, 0, 1), bs, tc.seed, 0, 0)))
    except DereverbError as e:
        sys.exit(f"{'+'.join(configs)}: {e}")
    timer = InterleavedTimer(args.every, lambda: model_step_seconds(cfg, batch, args.model_steps))
    with tempfile.TemporaryDirectory() as run_dir:
        train(cfg, run_dir, timer)  # the extra step closes the last piece
    ratios, loop_rates = [], []
    for (before, m0), (after, m1) in zip(timer.marks, timer.marks[1:]):
        loop_s = sum(after[s] - before[s] for s in STEP_SECTIONS)
        loop_rates.append(bs * args.every / loop_s)
        ratios.append(loop_rates[-1] / (bs / ((m0 + m1) / 2)))
    total = timer.seconds
    step_s = sum(total[s] for s in STEP_SECTIONS) / (args.steps + 1)
    valid_s = total["valid"] / max(1, args.steps // tc.valid_every + 1)
    ckpt_s = total["checkpoint"] / max(1, args.steps // tc.checkpoint_every + 1)
    with_io = step_s / (step_s + valid_s / tc.valid_every + ckpt_s / tc.checkpoint_every)
    model_rates = [bs / m for _, m in timer.marks]
    print(f"config={'+'.join(configs)} overrides={args.set} threads={torch.get_num_threads()} "
          f"workers={tc.num_workers} batch={bs} precision={_precision(tc, torch.device('cpu'))}")
    print(f"model step {statistics.median(model_rates):6.2f} examples/s (median of {len(model_rates)} timings, "
          f"{min(model_rates):.2f}-{max(model_rates):.2f}); loop {statistics.median(loop_rates):6.2f} examples/s")
    print(f"loop / model step, per {args.every} steps: median {statistics.median(ratios):.3f} "
          f"({min(ratios):.3f}-{max(ratios):.3f}); with validation every {tc.valid_every} "
          f"({valid_s:.1f} s) and checkpoints every {tc.checkpoint_every} ({ckpt_s:.2f} s): "
          f"{statistics.median(ratios) * with_io:.3f}")
    steps_total = sum(total[s] for s in STEP_SECTIONS)
    print("loop time per step: " + ", ".join(f"{s} {100 * total[s] / steps_total:.1f}%" for s in STEP_SECTIONS))


if __name__ == "__main__":
    main()
