"""``dereverb prepare``: precompute a feature store of reverberant/clean spectrogram pairs."""

from __future__ import annotations

import argparse

NAME = "prepare"
HELP = "precompute dB spectrogram pairs (quantised, compressed) into a feature store (resumable)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", "--out", required=True, help="store folder (created; a rerun resumes)")
    src = p.add_argument_group("source: speech + RIRs")
    src.add_argument("--speech", nargs="+", default=[], help="clean speech folders, files or CSV/JSONL manifests")
    src.add_argument("--rirs", nargs="+", default=[], help="measured RIR files or folders")
    src.add_argument("--rir-pool", help="folder of simulated RIRs (dereverb rirs simulate)")
    src.add_argument("--copies", type=int, default=1, help="reverberant versions per utterance (default 1)")
    src.add_argument("--target", choices=("direct", "early", "dry"), help="training target (default direct)")
    pair = p.add_argument_group("source: your own pairs")
    pair.add_argument("--clean", help="folder of clean files")
    pair.add_argument("--reverb", help="folder of reverberant files with the same relative names")
    p.add_argument("--config", help="YAML file whose 'data' section is a DataConfig (flags override it)")
    p.add_argument("--complex", action="store_true", help="also store the phases")
    p.add_argument("--quant-db", type=float, default=0.1,
                   help="step of the stored dB values (default 0.1: error <= 0.05 dB, 55.6 dB fidelity SNR); "
                        "0 = float16, lossless, about 1.3x bigger")
    p.add_argument("--codec", choices=("lz4hc", "zstd", "none"), default="lz4hc",
                   help="block compression (default lz4hc; zstd: about 9%% smaller, half the speed; none: raw)")
    p.add_argument("--items-per-shard", type=int, default=256,
                   help="items per shard file (default 256): smaller shards, finer resume after a crash")
    p.add_argument("--sample-rate", type=int, default=16000, help="Hz (STFT: 512-point Hann, hop 128)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of each item's random draws (default 0): same seed, same store")
    p.add_argument("--strict", action="store_true", help="fail on a bad input file instead of skipping it")


def build_config(args: argparse.Namespace):
    """Flags (over the optional YAML ``data`` section) -> ``(StoreConfig, StftConfig)``."""
    from ..config import StftConfig, from_dict, load_yaml
    from ..data import DataConfig
    from ..errors import DereverbError
    from ..store import StoreConfig

    data = dict(load_yaml(args.config).get("data", {})) if args.config else {}
    flags = {"speech": tuple(args.speech), "rirs": tuple(args.rirs), "rir_pool": args.rir_pool,
             "target": args.target, "strict": args.strict}
    data.update({k: v for k, v in flags.items() if v})
    if bool(args.clean) != bool(args.reverb):
        raise DereverbError("--clean and --reverb go together")
    if not args.clean and not data.get("speech"):
        raise DereverbError("give --speech (with --rirs and/or --rir-pool) or --clean and --reverb")
    cfg = StoreConfig(data=from_dict(DataConfig, data, "data."), clean_dir=args.clean, reverb_dir=args.reverb,
                      copies=args.copies, items_per_shard=args.items_per_shard,
                      store_complex=args.complex, codec=args.codec, quant_db=args.quant_db)
    return cfg, StftConfig(sample_rate=args.sample_rate)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .. import store

    cfg, stft = build_config(args)
    with tqdm(unit="shard") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        meta = store.prepare(cfg, stft, args.output, args.seed, progress)
    items = sum(s["items"] for s in meta["shards"])
    frames = meta["stats"]["frames"]
    size = sum(s["bytes"] for s in meta["shards"])
    seconds = frames * stft.hop_length / stft.sample_rate
    print(f"{args.output}: {items} items in {len(meta['shards'])} shard(s), {seconds / 3600:.2f} h, "
          f"{size / 1e6:.1f} MB ({size / max(seconds, 1e-9) / 1e3:.1f} kB per second of audio)")
    return 0
