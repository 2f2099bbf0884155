"""Real-time cost of a causal model (random weights): the network step per hop, the whole engine
per block size, and the latency.

Prints the configuration and its latency, the network step on one frame (median and 95th
percentile over many steps, and as a share of the hop's duration: the real-time budget is the
hop), then for each block size the real-time factor of :meth:`StreamingDereverberator.process`
(processing time / audio time, STFT, features and overlap-add included) and the worst block's time
as a share of that block's duration.  One thread by default, as a live stream runs.  Usage::

    python benchmarks/streaming.py                              # the realtime configuration
    python benchmarks/streaming.py --set max_channels=128 --onnx
    python benchmarks/streaming.py --blocks 128 160 --seconds 30
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import yaml

from dereverb import audio
from dereverb.config import FeatureConfig, StftConfig
from dereverb.causal import StreamingUNet
from dereverb.model import DereverbModel, count_parameters, latency_samples, model_config
from dereverb.streaming import StreamingDereverberator


def step_times(step, model: DereverbModel, steps: int) -> np.ndarray:
    """Seconds of each of ``steps`` network steps on one frame (after 50 warm-up steps)."""
    frame = torch.randn(1, model.model_config.in_channels, model.stft_config.n_freq, 1)
    state = step.initial_state(1)
    times = []
    with torch.inference_mode():
        for i in range(50 + steps):
            start = time.perf_counter()
            _, *state = step(frame, *state)
            times.append(time.perf_counter() - start)
    return np.array(times[50:])


def engine_run(engine: StreamingDereverberator, x: np.ndarray, block: int) -> tuple[float, float]:
    """``(total seconds, worst block's seconds)`` of streaming ``x`` in blocks of ``block`` samples."""
    engine.reset()
    worst, start = 0.0, time.perf_counter()
    for i in range(0, len(x), block):
        t = time.perf_counter()
        engine.process(x[i : i + block])
        worst = max(worst, time.perf_counter() - t)
    return time.perf_counter() - start, worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="realtime", help="named model configuration")
    p.add_argument("--set", action="append", default=[], help="ModelConfig override, e.g. max_channels=128")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as dereverb stream)")
    p.add_argument("--steps", type=int, default=2000, help="network steps timed")
    p.add_argument("--blocks", type=int, nargs="+", default=[1, 64, 128, 160, 512, 1024, 4096])
    p.add_argument("--seconds", type=float, default=10.0,
                   help="audio streamed per block size (1-sample blocks: a fifth of it)")
    p.add_argument("--onnx", action="store_true", help="also time the exported step in onnxruntime (1 thread)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    stft = StftConfig()
    torch.manual_seed(0)
    model = DereverbModel(stft, FeatureConfig(compression="power"),
                          model_config(args.config, output="mask", **overrides)).eval()
    cfg, hop_ms = model.model_config, 1000 * stft.hop_length / stft.sample_rate
    lat = latency_samples(stft, cfg)
    print(f"{args.config} {overrides or ''}: {count_parameters(model.net):,} parameters, past context "
          f"{cfg.context_frames} frames; STFT {stft.n_fft}/{stft.hop_length} at {stft.sample_rate} Hz, "
          f"lookahead {cfg.lookahead}; latency {lat} samples = {1000 * lat / stft.sample_rate:.2f} ms; "
          f"{torch.get_num_threads()} thread(s)")

    steps = {"torch": StreamingUNet(model.net, stft.n_freq).eval()}
    if args.onnx:
        from dereverb import export

        steps["onnxruntime"] = export.OnnxStep(export.to_streaming_onnx_bytes(model), threads=1)
    for name, step in steps.items():
        t = step_times(step, model, args.steps) * 1000
        print(f"network step per hop ({name}): median {np.median(t):.3f} ms, p95 {np.percentile(t, 95):.3f} ms "
              f"= {100 * np.median(t) / hop_ms:.1f}% / {100 * np.percentile(t, 95) / hop_ms:.1f}% of the "
              f"{hop_ms:g} ms hop")

    speech, rate = audio.read("examples/speech_1688-142285-0003.flac")
    engine = StreamingDereverberator(model)
    print("block  samples_ms  real_time_factor  worst_block_share")
    for block in args.blocks:
        seconds = args.seconds / 5 if block == 1 else args.seconds
        x = np.resize(speech[0] * 0.8, int(seconds * rate)).astype(np.float32)
        total, worst = engine_run(engine, x, block)
        print(f"{block:5d}  {1000 * block / rate:10.3f}  {total / seconds:16.3f}  {worst / (block / rate):17.2f}")


if __name__ == "__main__":
    main()
