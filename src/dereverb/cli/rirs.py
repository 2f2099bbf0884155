"""``dereverb rirs simulate|analyze``: build a pool of simulated RIRs, or measure RIR files."""

from __future__ import annotations

import argparse

NAME = "rirs"
HELP = "simulate a pool of room impulse responses, or print T30/DRR of RIR files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="rirs_command", metavar="ACTION", required=True)
    text = "simulate shoebox RIRs (pyroomacoustics) into a reusable pool folder; a rerun resumes"
    sim = sub.add_parser("simulate", help=text, description=text)
    sim.add_argument("--count", type=int, required=True, help="number of RIRs in the pool")
    sim.add_argument("-o", "--output", "--out", required=True, help="pool folder (created; a rerun resumes)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the rooms drawn (default 0): same seed, same pool")
    sim.add_argument("--sample-rate", type=int, default=16000, help="Hz (default 16000)")
    sim.add_argument("--t60", type=float, nargs=2, default=(0.2, 2.0), metavar=("MIN", "MAX"),
                     help="T60 range in s (default 0.2 2.0)")
    sim.add_argument("--distance", type=float, nargs=2, default=(0.5, 4.0), metavar=("MIN", "MAX"),
                     help="source-microphone distance range in m (default 0.5 4.0)")
    text = "print direct-path delay, length, T30 and DRR of RIR files"
    ana = sub.add_parser("analyze", help=text, description=text)
    ana.add_argument("inputs", nargs="+", help="RIR files or folders")
    ana.add_argument("--sample-rate", type=int, default=16000, help="analyse at this rate (Hz)")
    ana.add_argument("--channels", choices=("first", "all"), default="first",
                     help="of a multichannel RIR file: the first channel (default) or each channel as an RIR")
    ana.add_argument("--strict", action="store_true", help="fail on a bad file instead of skipping it")
    ana.add_argument("--bands", action="store_true",
                     help="also T30 per octave band, 250 Hz to 6 kHz (real rooms decay faster at high frequencies)")


def run(args: argparse.Namespace) -> int:
    return _simulate(args) if args.rirs_command == "simulate" else _analyze(args)


def _simulate(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from .. import simulate
    from ..errors import DereverbError

    if args.count < 1:
        raise DereverbError("--count must be at least 1")
    sampler = simulate.RoomSampler(t60=tuple(args.t60), distance=tuple(args.distance))
    with tqdm(total=args.count, unit="rir") as bar:
        rows = simulate.simulate_pool(args.count, args.output, args.seed, args.sample_rate, sampler,
                                      progress=lambda done, _: bar.update(done - bar.n))
    t30 = np.array([float(r["t30"]) for r in rows])
    drr = np.array([float(r["drr"]) for r in rows])
    print(f"{args.output}: {len(rows)} RIRs at {args.sample_rate} Hz; measured T30 "
          f"{t30.min():.2f}-{t30.max():.2f} s (median {np.median(t30):.2f}), DRR "
          f"{drr.min():.1f}..{drr.max():.1f} dB (median {np.median(drr):.1f})")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .. import rooms

    rirs = rooms.load_rirs(args.inputs, args.sample_rate, args.channels, strict=args.strict)
    bands = "".join(f"\tT30_{fc / 1000:g}k" for fc in rooms.OCTAVE_BANDS) if args.bands else ""
    print("name\tdirect_ms\tlength_s\tT30_s\tfit\tDRR_dB" + bands)
    for r in rirs:
        ms = 1000 * r.meta.get("direct_in_file", r.direct_index) / r.sample_rate
        row = f"{r.name}\t{ms:.1f}\t{r.duration:.2f}\t{r.t30:.2f}\t{r.meta['decay_fit']}\t{r.drr:.1f}"
        if args.bands:
            row += "".join(f"\t{t:.2f}" for t in rooms.band_decay_times(r))
        print(row)
    return 0
