"""``dereverb stream``: real-time dereverberation from stdin to stdout, or microphone to speaker.

    arecord -f S16_LE -r 16000 -c 1 | dereverb stream | aplay -f S16_LE -r 16000 -c 1
    ffmpeg -i in.mp3 -f s16le -ar 16000 -ac 1 - | dereverb stream --align | ffmpeg -f s16le -ar 16000 -ac 1 -i - out.wav
    dereverb stream --live
"""

from __future__ import annotations

import argparse
import os
import sys

NAME = "stream"
HELP = "real-time dereverberation with a causal model: raw PCM or WAV from stdin to stdout, or --live"
FORMATS = ("s16le", "s32le", "f32le")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="realtime", metavar="NAME|PATH",
                   help="a causal model: bundled name, .safetensors checkpoint, run folder or streaming .onnx "
                        "export (default: the bundled realtime model)")
    p.add_argument("--rate", type=int, default=None, metavar="HZ",
                   help="sample rate of raw input (default: the model's, 16000); other rates are refused: "
                        "resample first")
    p.add_argument("--channels", type=int, default=None, metavar="N", help="channels of raw input (default 1)")
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="sample format of raw input, as ffmpeg names it (default s16le); a WAV input is "
                        "recognised by its RIFF header")
    p.add_argument("--output-format", default=None, choices=(*FORMATS, "wav"),
                   help="output sample format, or wav (a WAV header, the input's samples); default: as the input")
    p.add_argument("--align", action="store_true",
                   help="drop the first latency's worth of output so it lines up with the input (for files; a "
                        "live pipe keeps it)")
    p.add_argument("--strength", type=float, default=1.0,
                   help="0..1: 1 removes all the reverberation it can, lower keeps some room sound")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx"),
                   help="run the network step with torch or onnxruntime")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads for the network (default 1: one frame's work is too small to share)")
    live = p.add_argument_group("live mode (pip install 'dereverb[live]')")
    live.add_argument("--live", action="store_true",
                      help="microphone to speaker through PortAudio instead of stdin to stdout")
    live.add_argument("--input-device", default=None, metavar="ID|NAME",
                      help="PortAudio input device (default: the system's)")
    live.add_argument("--output-device", default=None, metavar="ID|NAME",
                      help="PortAudio output device (default: the system's)")
    live.add_argument("--block", type=int, default=None, metavar="SAMPLES",
                      help="samples per audio callback (default one hop, the lowest latency)")
    live.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..streaming import StreamingDereverberator, check_live, run_live, run_pipe

    if args.live:
        check_live()
    torch.set_num_threads(max(1, args.threads))
    engine = StreamingDereverberator.from_pretrained(args.model, strength=args.strength, backend=args.backend)
    latency = f"latency {engine.latency_samples} samples ({1000 * engine.latency_samples / engine.sample_rate:.1f} ms)"
    if args.live:
        print(f"dereverb stream: live at {engine.sample_rate} Hz, {latency} + the sound card's; Ctrl-C stops",
              file=sys.stderr)
        run_live(engine, args.channels or 1, args.block, _device(args.input_device), _device(args.output_device),
                 args.seconds)
        return 0
    try:
        run_pipe(engine, sys.stdin.buffer, sys.stdout.buffer, args.rate, args.channels, args.format,
                 args.output_format, args.align)
    except BrokenPipeError:  # the reader went away (aplay stopped): the end of the stream, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail again
    return 0


def _device(spec: str | None) -> str | int | None:
    """A PortAudio device index given as digits, else the name (part) as given."""
    return int(spec) if spec is not None and spec.isdigit() else spec
