"""Throughput of the on-the-fly training pipeline against what training consumes.

Prints examples per second of :func:`dereverb.data.build_train_dataset` (2.048 s pairs from
../shared/data/speech/train, the six training RIRs (all channels) and the simulated pool if
present, with recipes/default.yaml's mix of measured, anechoic and DRR-rescaled rooms and its
speech and RIR-spectrum caches) through a DataLoader with 0 and 2 workers, and the examples per
second one training step of the default model ("small" U-Net, batch 8, the trainer's precision)
consumes, measured in the same run.  Issue 3 asks for the pipeline to deliver at least 10x the
second number.

    python benchmarks/data_pipeline.py [--pool /work/cache/rirpool] [--rir-cache-mb 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dereverb.config import FeatureConfig, StftConfig
from dereverb.data import DataConfig, build_train_dataset
from dereverb.model import DereverbModel, autocast, autocast_dtype, model_config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN_RIRS = ("openair__genesis6_live_room_pmc", "openair__toob_Genesis_6_Studio_Live_Room", "openair__qv_large_church",
              "openair__qv_medium_chamber", "openair__qv_medium_hall", "freesound__peter1955_colmar_basement_clap")


def pipeline_rate(ds, workers: int, examples: int, warmup: int, batch: int = 8) -> float:
    """Examples per second after ``warmup`` examples per process (worker start-up and cold caches,
    which a long training run amortises, not counted)."""
    it = iter(DataLoader(ds, batch_size=batch, num_workers=workers))
    for _ in range(1 + warmup * max(1, workers) // batch):
        next(it)
    start = time.perf_counter()
    for _ in range(max(1, examples // batch)):
        item = next(it)
        assert torch.isfinite(item["reverb"]).all() and torch.isfinite(item["clean"]).all()
    return max(1, examples // batch) * batch / (time.perf_counter() - start)


def train_rate(batch: int, seconds: float, steps: int) -> float:
    """Examples per second of forward + L1 magnitude loss + backward + AdamW (the default model),
    from the median of ``steps`` timed steps."""
    stft = StftConfig()
    model = DereverbModel(stft, FeatureConfig(), model_config("small"))
    dtype = autocast_dtype("cpu")
    model.set_channels_last(dtype is not None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    reverb = torch.randn(batch, int(seconds * stft.sample_rate), generator=g) * 0.05
    clean = torch.randn(batch, reverb.shape[1], generator=g) * 0.05

    def step() -> None:
        spec, target = model.stft(reverb), model.stft(clean)
        with autocast("cpu", dtype):
            out = model.net(model.encode(spec))
        loss = (model.output_features(out, spec) - model.encode(target)).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", default="/work/cache/rirpool", help="simulated RIR pool (skipped if absent)")
    p.add_argument("--examples", type=int, default=400, help="examples timed per worker count")
    p.add_argument("--steps", type=int, default=9, help="timed training steps (their median counts)")
    p.add_argument("--cache-mb", type=int, default=512, help="data.speech_cache_mb per worker (the recipe's)")
    p.add_argument("--rir-cache-mb", type=int, default=512, help="data.rir_cache_mb per worker (the recipe's)")
    p.add_argument("--warmup", type=int, default=1600, help="examples each process draws before timing (fills its caches)")
    args = p.parse_args()
    if not (SHARED / "speech" / "train").is_dir():
        sys.exit(f"needs {SHARED} (the development data)")
    pool = args.pool if (Path(args.pool) / "index.tsv").is_file() else None
    cfg = DataConfig(speech=(str(SHARED / "speech" / "train"),),
                     rirs=tuple(str(SHARED / "rir" / f"{n}.wav") for n in TRAIN_RIRS), rir_pool=pool,
                     speech_cache_mb=args.cache_mb, rir_cache_mb=args.rir_cache_mb,
                     rir_channels="all", measured_prob=0.35, dry_prob=0.2, drr_prob=0.5)  # recipes/default.yaml's mix
    ds = build_train_dataset(cfg, StftConfig(), seed=0)
    print(f"{len(ds.utterances)} utterances, {len(ds.measured)} measured + {len(ds.simulated)} simulated RIRs, "
          f"{cfg.segment_seconds} s examples, speech cache {cfg.speech_cache_mb} MB and RIR-spectrum cache "
          f"{cfg.rir_cache_mb} MB per worker")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the main process as one DataLoader worker would run
    rates = {w: pipeline_rate(ds, w, args.examples, args.warmup) for w in (0, 2)}
    torch.set_num_threads(threads)
    consumed = train_rate(8, cfg.segment_seconds, args.steps)
    for w, r in rates.items():
        print(f"on-the-fly pipeline, {w} workers: {r:7.1f} examples/s")
    print(f"one training step of the default model (small, batch 8): {consumed:7.1f} examples/s")
    best = max(rates.values())
    print(f"pipeline / training = {best / consumed:.1f}x ({'meets' if best >= 10 * consumed else 'misses'} the 10x target)")


if __name__ == "__main__":
    main()
