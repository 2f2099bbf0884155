"""Training throughput of the U-Net configurations: examples per second for one optimiser step.

Prints one line per (configuration, precision): fp32 (contiguous NCHW), fp32 channels_last (CPU)
and the fast path (channels_last + bf16 autocast on AMX CPUs, AMP on CUDA).  An example is one
``(1, 256, T)`` spectrogram patch.  Usage::

    python benchmarks/train_step.py                       # small and paper on the CPU
    python benchmarks/train_step.py --device cuda --batch 16
    python benchmarks/train_step.py --configs small --set depth=7 --set max_channels=96
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml

from dereverb.model import UNet, autocast, autocast_dtype, count_parameters, cpu_has_amx, model_config


def step_rate(net: UNet, batch: int, frames: int, steps: int, device: torch.device, dtype) -> float:
    """Examples per second of forward + L1 loss + backward + AdamW step (after 2 warm-up steps)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, net.cfg.in_channels, 256, frames, generator=g).to(device)
    y = torch.randn(batch, net.cfg.out_channels, 256, frames, generator=g).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda" and dtype == torch.float16)

    def one_step() -> None:
        with autocast(device, dtype):
            loss = (net(x).float() - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(2):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["small", "paper"])
    p.add_argument("--set", action="append", default=[], help="ModelConfig override, e.g. depth=7")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=256, help="frames per patch (paper: 256)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    print(f"device={device} threads={torch.get_num_threads()} amx={cpu_has_amx()} "
          f"batch={args.batch} patch=256x{args.frames}")
    cpu = device.type == "cpu"
    modes = [(False, False)] + ([(True, False)] if cpu else []) + [(cpu, True)]  # (channels_last, fast)
    for name in args.configs:
        cfg = model_config(name, **overrides)
        for channels_last, fast in modes:
            dtype = autocast_dtype(device, fast)
            if fast and dtype is None:
                print(f"{name:6s} fast path unavailable here (no AMX / CUDA)")
                continue
            torch.manual_seed(0)
            net = UNet(cfg).to(device).train()
            if channels_last:
                net.to(memory_format=torch.channels_last)
                net.channels_last = True
            label = f"{'channels_last+' if channels_last else ''}{str(dtype).split('.')[-1] if dtype else 'fp32'}"
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rate = step_rate(net, args.batch, args.frames, args.steps, device, dtype)
            mem = f" peak_mem={torch.cuda.max_memory_allocated(device) / 2**30:.2f}GiB" if device.type == "cuda" else ""
            print(f"{name:6s} params={count_parameters(net) / 1e6:6.2f}M {label:22s} {rate:8.2f} examples/s{mem}")


if __name__ == "__main__":
    main()
