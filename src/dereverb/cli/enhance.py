"""``dereverb enhance INPUT... -o OUT``: dereverberate files, folders and whole corpora."""

from __future__ import annotations

import argparse
import os
import sys

NAME = "enhance"
HELP = "remove reverberation from audio files and folders (recursive; output mirrors the tree)"
# Exit codes: 0 every file done; 2 an error (a bad input or option, or the first failed file
# without --keep-going); 3 the run finished but some files failed (--keep-going); 130 interrupted.
# Not 1, which is Python's code for a crash with a traceback.
SOME_FAILED = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders")
    p.add_argument("-o", "--output", "--out", required=True, metavar="OUT",
                   help="output folder (or, for one input file, an output file name)")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="bundled model name, .safetensors checkpoint, run folder or .onnx file (default: bundled)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the network runs (default auto: a CUDA GPU when there is one, else the CPU)")
    p.add_argument("--phase", default=None, choices=("reverberant", "griffinlim", "model"),
                   help="phase of the output: reverberant (the default) or griffinlim for models that predict a "
                        "magnitude, as the bundled one does; model only for models that predict phase "
                        "(model.output complex)"),
    p.add_argument("--strength", type=float, default=1.0,
                   help="0..1: 1 removes all the reverberation it can, lower keeps some room sound")
    p.add_argument("--suffix", default="", help="added to each output file's stem, e.g. _dry")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    p.add_argument("--output-rate", default="input", choices=("input", "model"),
                   help="write at the input's sample rate (default) or the model's")
    p.add_argument("--mono", action="store_true", help="mix channels down to one before enhancing")
    p.add_argument("--wpe", action="store_true",
                   help="run single-channel WPE (40 taps) before the model: a cascade that is "
                        "better on average and on close-microphone input; about 4x slower on long files")
    p.add_argument("--shifts", type=int, default=None, metavar="N",
                   help="network passes at frame offsets, averaged: more is slightly better and "
                        "N times the network's cost (default 2; 1 is the fastest)")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx"),
                   help="run the network with torch or onnxruntime")
    p.epilog = (f"exit codes: 0 every file done; 2 an error (a bad input or option, or without --keep-going the "
                f"first file that fails); {SOME_FAILED} finished, some files failed (--keep-going); 130 interrupted")
    g = p.add_argument_group("corpora", "many files, cores, machines and GPUs (README: Corpora)")
    g.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="worker processes on this machine, torch's threads split between them (default 1)")
    g.add_argument("--shard", default=None, metavar="K/N",
                   help="enhance part K (0-based) of N of the sorted file list; default: from SLURM_ARRAY_TASK_ID, "
                        "torchrun's RANK/WORLD_SIZE or a Kubernetes JOB_COMPLETION_INDEX with DEREVERB_SHARDS=N")
    g.add_argument("--keep-going", action="store_true",
                   help=f"record a file that fails in the manifest and go on; exit code {SOME_FAILED} if any failed")
    g.add_argument("--manifest", default=None, metavar="PATH",
                   help="the JSON-lines record of each file, which reruns read to skip done files "
                        "(default: dereverb-manifest.jsonl in the output folder, one per shard; none for -o FILE)")
    g.add_argument("--batch-size", type=int, default=0, metavar="N",
                   help="files in flight per worker, their network segments run in one batch "
                        "(default 8 on CUDA, 1 on the CPU)")
    g.add_argument("--autocast", action="store_true",
                   help="the network in reduced precision (bf16/fp16 on CUDA, bf16 on the CPU; the STFT stays "
                        "float32); changes outputs by more than rounding")


def run(args: argparse.Namespace) -> int:
    from ..corpus import CorpusConfig, Shard, enhance_corpus, shard_from_env
    from ..enhance import DEFAULT_SHIFTS
    from ..workers import Engine
    from ..wpe import WpeConfig

    shard = Shard.parse(args.shard) if args.shard else shard_from_env(os.environ)
    if shard is not None and shard.source != "--shard":
        print(f"dereverb: shard {shard} (from {shard.source})", file=sys.stderr)
    engine = Engine(args.model, device=args.device, phase=args.phase, strength=args.strength, backend=args.backend,
                    wpe=WpeConfig() if args.wpe else None,
                    shifts=DEFAULT_SHIFTS if args.shifts is None else args.shifts, autocast=args.autocast,
                    gpu=int(os.environ.get("LOCAL_RANK", 0)) * args.jobs)
    cfg = CorpusConfig(suffix=args.suffix, overwrite=args.overwrite, output_rate=args.output_rate, mono=args.mono,
                       jobs=args.jobs, batch_size=args.batch_size, shard=shard, keep_going=args.keep_going,
                       manifest=args.manifest)
    s = enhance_corpus(engine, args.inputs, args.output, cfg)
    if s.skipped:
        print(f"skipped {s.skipped} existing output(s); --overwrite redoes them")
    print(f"{s.files} files, {s.audio_seconds / 3600:.3f} h of audio ({s.audio_seconds:.1f} s), {s.failed} failed, "
          f"real-time factor {s.real_time_factor:.3f}")
    if s.failed:
        where = f"; the manifest has their errors: {s.manifest}" if s.manifest else ""
        print(f"dereverb: {s.failed} file(s) failed{where}", file=sys.stderr)
    return SOME_FAILED if s.failed else 0
