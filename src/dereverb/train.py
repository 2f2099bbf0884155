"""Training: one linear loop from a :class:`RunConfig` to a run folder; DDP under torchrun.

Run folder ``runs/<name>/``: ``config.yaml`` (resolved), ``last.safetensors`` and
``best.safetensors`` (model files, see :mod:`dereverb.checkpoint`), ``state.pt`` (resume state:
weights, optimisers, step, RNG), ``train.log``, ``tb/`` (TensorBoard scalars) and
``samples/step_NNNNNNN/`` (audio and spectrograms of a few validation items; the log, scalars and
samples are written by :mod:`dereverb.runlog`, the metrics come from :mod:`dereverb.validation`).

Reproducibility: the batch of step ``s`` is drawn from seeds derived from ``(train.seed, s)``
(:mod:`dereverb.batches`), whatever the number of DataLoader workers, and the RNG state is saved
with the weights, so a run that is killed and rerun ends with the same weights as one that never
stopped (on CPU).
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import itertools
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist

from . import checkpoint, losses
from .batches import step_loader
from .config import FeatureConfig, StftConfig, apply_overrides, from_dict, load_yaml, merge, require, to_dict
from .data import DataConfig, build_train_dataset, build_valid_set
from .errors import DereverbError
from .model import DereverbModel, ModelConfig, PatchDiscriminator, autocast, autocast_dtype, model_config
from .paired import PairedFolder
from .runlog import LoopTimer, RunLog, check_outside_data, check_run_dir, write_samples
from .validation import unprocessed, validate

# AdamW's settings and the gradient-norm clip of every run so far.
WEIGHT_DECAY = 1e-4
BETAS = (0.9, 0.999)
GRAD_CLIP = 5.0
VALID_SEED = 1234  # the fixed validation pairs' seed


@dataclasses.dataclass(frozen=True)
class GanConfig:
    """pix2pix variant (Ernst et al. 2018, sec. 3.2): PatchGAN on (reverberant, output) features;
    the generator's loss is the adversarial term plus ``l1_weight`` x the run's reconstruction
    loss (relative when ``train.relative_floor``)."""

    enabled: bool = False
    loss: str = "lsgan"
    l1_weight: float = 100.0
    lr: float = 2e-4
    base_channels: int = 64
    n_layers: int = 3
    norm: str = "batch"


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """Where training pairs come from: ``onthefly`` (the ``data`` section), ``paired`` folders
    (``clean_dir`` + ``reverb_dir``) or a feature ``store`` from ``dereverb prepare``.  Crops are
    ``data.segment_seconds`` long in every case."""

    REMOVED: ClassVar[dict[str, Any]] = {"align": True}  # see config.from_dict

    kind: str = "onthefly"
    clean_dir: str = ""
    reverb_dir: str = ""
    store: str = ""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping.  ``precision``: ``auto`` (bf16 + channels_last on AMX CPUs,
    fp32 + channels_last on other CPUs, bf16/fp16 AMP on CUDA), ``fp32`` (plain), ``bf16``.
    ``threads``: torch CPU threads (0: torch's default; 1 is faster for small models on busy shared
    cores).  The loss is the L1 distance of the network's features to the target's
    (:func:`losses.spectral_loss`); ``relative_floor`` > 0 weights each example's loss by
    ``1 / (relative_floor + its input's loss)`` (:func:`losses.relative_spectral_loss`).  The best
    checkpoint is the one with the highest validation SI-SDR.  CUDA is used when there is one.
    ``init``: a checkpoint (bundled name, file
    or run folder) whose weights start a new run (fine-tuning; the schedule starts at step 0); its
    STFT and network must equal this run's.  With the same compression its normaliser is kept (the
    frontend may differ); with another compression the normaliser is refitted on this run's stream
    and only the network's weights carry over (per-frequency normalisation keeps the inputs'
    scale comparable, so the network adapts instead of starting from random weights)."""

    REMOVED: ClassVar[dict[str, Any]] = {  # see config.from_dict
        "loss": "l1", "mrstft_weight": 0.0, "log_mag_weight": 0.0, "si_sdr_weight": 0.0, "weight_decay": 1e-4,
        "betas": [0.9, 0.999], "grad_clip": 5.0, "device": "auto", "valid_seed": 1234, "best_metric": "si_sdr"}

    name: str = "run"
    seed: int = 0
    init: str = ""
    steps: int = 20000
    batch_size: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    warmup_steps: int = 500
    relative_floor: float = 0.0
    ema_decay: float = 0.0
    gan: GanConfig = GanConfig()
    precision: str = "auto"
    threads: int = 0
    num_workers: int = 0
    norm_batches: int = 8
    checkpoint_every: int = 500
    valid_every: int = 500
    valid_count: int = 16
    samples: int = 2
    pesq: bool = True
    log_every: int = 50
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.precision in ("auto", "fp32", "bf16"), "train.precision must be auto, fp32 or bf16"),
            (self.relative_floor >= 0, "train.relative_floor must be >= 0"),
            (0 <= self.ema_decay < 1, "train.ema_decay must be in [0, 1)"),
            (min(self.steps, self.batch_size, self.checkpoint_every, self.valid_every, self.log_every) > 0,
             "train.steps/batch_size/checkpoint_every/valid_every/log_every must be > 0"),
            (self.valid_count >= 0 and self.norm_batches > 0, "train.valid_count >= 0, train.norm_batches > 0"),
        ]
        require(checks)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; ``valid`` falls back to ``data`` when it lists no speech."""

    stft: StftConfig = StftConfig()
    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    valid: DataConfig = DataConfig()
    source: SourceConfig = SourceConfig()
    train: TrainConfig = TrainConfig()


def load_config(path: str | Path | Sequence[str | Path] | None, overrides: Sequence[str] = ()) -> RunConfig:
    """A recipe YAML (or several: each later file an overlay on the earlier ones, as
    ``recipes/experiments/*.yaml`` on ``recipes/default.yaml``) plus ``key=value`` overrides;
    ``model.preset: NAME`` starts from a named model."""
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    data: dict[str, Any] = {}
    for p in paths:
        data = merge(data, load_yaml(p))
    data = apply_overrides(data, list(overrides))
    model = dict(data.get("model") or {})
    if "preset" in model:
        data["model"] = to_dict(model_config(str(model.pop("preset")), **model))
    return from_dict(RunConfig, data)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for ``step``: linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class WeightAverage:
    """An exponential moving average of a model's network weights (Polyak averaging; SGMSE+ trains
    with a decay of 0.999): after each optimiser step ``avg += (1 - d) * (w - avg)``
    with ``d = min(decay, (1 + n) / (10 + n))`` at the ``n``-th update, so a young average follows
    the weights closely.  Buffers (normaliser, batch-norm statistics) are copied, not averaged.
    ``model`` is the averaged copy (its weights never take a gradient).
    """

    def __init__(self, model: DereverbModel, decay: float, state: dict[str, Any] | None = None):
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.updates = 0
        if state is not None:
            self.model.load_state_dict(state["weights"])
            self.updates = int(state["updates"])

    @torch.no_grad()
    def update(self, model: DereverbModel) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for mine, theirs in zip(self.model.net.parameters(), model.net.parameters()):
            mine.lerp_(theirs.detach(), 1 - d)
        self.copy_buffers(model)

    @torch.no_grad()
    def copy_buffers(self, model: DereverbModel) -> None:
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.model.state_dict(), "updates": self.updates}


# --- set-up helpers ------------------------------------------------------------------------------


def _distributed() -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        # leaving the group joined at exit can abort the process ("terminate called without an
        # active exception" from gloo's threads): leave it cleanly, after any later train() call
        atexit.register(_leave_group)
    return (dist.get_rank() if world > 1 else 0), world, dev


def _leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _train_source(cfg: RunConfig, rank: int, world: int):
    """The training dataset (built before any other work so bad paths fail first)."""
    if cfg.source.kind == "onthefly":
        return build_train_dataset(cfg.data, cfg.stft, cfg.train.seed, rank, world)
    if cfg.source.kind == "paired":
        if not (cfg.source.clean_dir and cfg.source.reverb_dir):
            raise DereverbError("source.kind paired needs source.clean_dir and source.reverb_dir")
        return PairedFolder(cfg.source.clean_dir, cfg.source.reverb_dir, cfg.stft.sample_rate,
                            cfg.data.segment_seconds, cfg.train.seed)
    if cfg.source.kind == "store":
        return _feature_store(cfg)
    raise DereverbError(f"source.kind must be onthefly, paired or store, got {cfg.source.kind!r}")


def _feature_store(cfg: RunConfig):
    from .store import FeatureStore

    if not cfg.source.store:
        raise DereverbError("source.kind store needs source.store (a folder made by `dereverb prepare`)")
    frames = round(cfg.data.segment_seconds * cfg.stft.sample_rate / cfg.stft.hop_length)
    store = FeatureStore(cfg.source.store, frames=frames, seed=cfg.train.seed)
    if store.stft != cfg.stft:
        raise DereverbError(f"{cfg.source.store}: stored with a different STFT ({to_dict(store.stft)}); "
                            "set the recipe's stft section to match or prepare the store again")
    return store


def _valid_set(cfg: RunConfig, train_set) -> list[dict]:
    if cfg.train.valid_count == 0:
        return []
    if cfg.valid.speech:
        return build_valid_set(cfg.valid, cfg.stft, VALID_SEED, cfg.train.valid_count)
    if cfg.source.kind == "paired":  # not held out: the best checkpoint then only tracks the fit
        return [train_set[i] for i in range(min(len(train_set), cfg.train.valid_count))]
    if cfg.data.speech:
        return build_valid_set(cfg.data, cfg.stft, VALID_SEED, cfg.train.valid_count)
    return []  # a feature store alone has no waveforms to validate on


def _batches(dataset, cfg: TrainConfig, step: int, rank: int, world: int, inputs: StepInputs | None = None):
    """An endless iterator over the batches of steps ``step, step + 1, ...`` (:mod:`dereverb.batches`),
    each passed through ``inputs`` where it is made."""
    return iter(step_loader(dataset, cfg.batch_size, cfg.seed, step, cfg.num_workers, rank, world, inputs))


class StepInputs:
    """A batch -> what one training step needs: ``{"reverb_spec": (B, F_full, T)`` complex (after
    the frontend), ``"x"``, ``"y": (B, C, n_freq, T)`` normalised input and target features``}``.

    It runs where the batch is made, so with ``train.num_workers`` the STFT, the frontend and the
    normalisation happen in the DataLoader workers, beside the network's step instead of before
    it.  It holds a CPU copy of the model's signal processing as it is when the loop starts (the
    normaliser is fitted or restored by then and does not change during training).
    """

    def __init__(self, model: DereverbModel):
        self.model = copy.deepcopy(model).cpu().eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        reverb, clean = _pairs(batch, self.model, torch.device("cpu"))
        return {"reverb_spec": reverb, "x": self.model.encode(reverb), "y": self.model.encode(clean)}


def _precision(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, channels_last)``.  On the CPU ``auto`` and ``bf16`` use
    channels_last with or without bf16 (``benchmarks/train_step.py``, 2-core Xeon without AMX,
    fp32: 1.18x for ``small`` and ``paper``); ``fp32`` is the plain contiguous fallback."""
    if cfg.precision == "fp32":
        return None, False
    dtype = autocast_dtype(device) if cfg.precision == "auto" else torch.bfloat16
    return dtype, device.type == "cpu"


def _pairs(batch: dict, model: DereverbModel, device: torch.device):
    """A batch -> complex ``(B, F_full, T)`` reverberant and clean spectrograms.

    Waveform batches ``{"reverb","clean"}``; store batches ``{"reverb_spec","clean_spec"}``
    (complex) or ``{"reverb_mag","clean_mag"}`` (magnitudes, zero phase).
    The reverberant spectrogram has been through the model's frontend (WPE, when it has one).
    """
    if "reverb" in batch:
        reverb, clean = batch["reverb"].to(device).float(), batch["clean"].to(device).float()
        return model.frontend(model.stft(reverb)), model.stft(clean)
    if "reverb_spec" in batch:
        reverb, clean = batch["reverb_spec"].to(device), batch["clean_spec"].to(device)
        return model.frontend(reverb), clean
    if model.feature_config.frontend != "none":
        raise DereverbError("features.frontend needs complex spectra: this store holds magnitudes only")
    return tuple(batch[k].to(device).to(torch.complex64) for k in ("reverb_mag", "clean_mag"))


class Diverged(Exception):
    """The loss of a step was not finite (its update was not applied)."""

    def __init__(self, loss: float):
        super().__init__(f"loss {loss}")
        self.loss = loss


def optimise(model: DereverbModel, net: torch.nn.Module, opt, scaler, reverb: torch.Tensor, x: torch.Tensor,
             y: torch.Tensor, tc: TrainConfig, dtype: torch.dtype | None, world: int = 1,
             disc: tuple = (None, None)) -> tuple[float, float, dict[str, float]]:
    """One optimiser step on a batch: the network on ``x``, its output as features
    (:meth:`DereverbModel.output_features`, the mask applied to ``reverb``), the L1 (relative when
    ``train.relative_floor``) or the GAN's losses against ``y``, backward, clipping, AdamW.

    ``reverb``: complex ``(B, F_full, T)``; ``x``, ``y``: ``(B, C, n_freq, T)`` normalised
    features; ``net``: ``model.net`` or its DDP wrapper; ``disc``: ``(discriminator, its
    optimiser)`` or ``(None, None)``.  Returns ``(loss averaged over ranks, gradient norm, loss
    parts)``; raises :class:`Diverged` (before the update) on a non-finite loss.
    """
    device = x.device
    dnet, opt_d = disc
    with autocast(device, dtype):
        out = net(x)
    pred = model.output_features(out, reverb)  # float32, comparable with y
    if tc.relative_floor:
        parts = {"spec": losses.relative_spectral_loss(pred, y, x, tc.relative_floor)}
    else:
        parts = {"spec": losses.spectral_loss(pred, y)}
    if dnet is not None:
        with autocast(device, dtype):
            d_loss = losses.discriminator_loss(dnet(x, y), dnet(x, pred.detach()), tc.gan.loss)
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(d_loss).backward()
        scaler.step(opt_d)
        with autocast(device, dtype):
            fake_logits = dnet(x, pred)
        parts["spec"] = losses.generator_loss(fake_logits, parts["spec"], tc.gan.l1_weight, tc.gan.loss)
        parts["disc"] = d_loss.detach()
    loss = sum(v for k, v in parts.items() if k != "disc")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.net.parameters(), GRAD_CLIP)
    loss_value = _mean_over_ranks(loss.detach(), world)
    if not math.isfinite(loss_value):
        raise Diverged(loss_value)
    scaler.step(opt)
    scaler.update()
    return loss_value, float(grad_norm), {k: float(v.detach()) for k, v in parts.items()}


# --- the loop ------------------------------------------------------------------------------------


def train(cfg: RunConfig, run_dir: str | Path, timer: LoopTimer | None = None) -> tuple[DereverbModel, dict[str, float]]:
    """Train (or resume) the run in ``run_dir``; returns the model and its last validation metrics.

    ``timer`` receives the loop's time by section (``benchmarks/train_loop.py`` reads it); the log
    reports the shares at each validation either way."""
    threads = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        return _train(cfg, run_dir, timer or LoopTimer())
    finally:
        torch.set_num_threads(threads)


def _train(cfg: RunConfig, run_dir: str | Path, timer: LoopTimer) -> tuple[DereverbModel, dict[str, float]]:
    tc = cfg.train
    rank, world, device = _distributed()
    run_dir = Path(run_dir)
    check_run_dir(run_dir, {"stft": cfg.stft, "features": cfg.features, "model": cfg.model})
    train_set = _train_source(cfg, rank, world)
    check_outside_data(run_dir, [*cfg.data.speech, *cfg.data.rirs, *cfg.valid.speech, *cfg.valid.rirs,
                                 cfg.source.clean_dir, cfg.source.reverb_dir])
    valid = _valid_set(cfg, train_set) if rank == 0 else []
    log = RunLog(run_dir, to_dict(cfg), enabled=rank == 0, progress=tc.progress)

    torch.manual_seed(tc.seed)
    model = DereverbModel(cfg.stft, cfg.features, cfg.model).to(device)
    dtype, channels_last = _precision(tc, device)
    model.set_channels_last(channels_last)
    opt = torch.optim.AdamW(model.net.parameters(), lr=tc.lr, betas=BETAS, weight_decay=WEIGHT_DECAY,
                            fused=device.type in ("cpu", "cuda"))
    disc = opt_d = None
    if tc.gan.enabled:
        disc = PatchDiscriminator(cfg.model.out_channels, tc.gan.base_channels, tc.gan.n_layers, tc.gan.norm).to(device)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=tc.gan.lr, betas=(0.5, 0.999), weight_decay=0.0)
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)

    step, best = 0, None
    state_path = run_dir / "state.pt"
    resume = checkpoint.load_state(state_path) if state_path.is_file() else None
    if resume is not None:
        step, best = _restore(resume, model, opt, disc, opt_d)
        log.info(f"resumed from step {step}" + (" (already complete: raise train.steps to go on)" if step >= tc.steps else ""))
    elif tc.init and _init_from(model, tc.init):
        log.info(f"weights and normaliser from {tc.init}")
    else:
        if tc.init:
            log.info(f"network weights from {tc.init} (another compression: normaliser refitted)")
        first = [_pairs(b, model, device)[0] for b in itertools.islice(_batches(train_set, tc, 0, 0, 1), tc.norm_batches)]
        if not first:
            raise DereverbError(f"the training source holds fewer than train.batch_size={tc.batch_size} examples")
        specs = torch.cat(first)
        model.fit_normalizer(specs)  # reverberant statistics of the training stream
        if world > 1:  # every rank uses rank 0's statistics
            dist.broadcast(model.normalizer.mean, 0)
            dist.broadcast(model.normalizer.std, 0)
        if valid:
            rows = [unprocessed(model, item, device) for item in valid]
            base = {k: float(np.mean([r[k] for r in rows])) for k in ("si_sdr", "lsd")}
            log.info(f"unprocessed validation: si_sdr {base['si_sdr']:.2f} dB, lsd {base['lsd']:.2f} dB")

    ema = None
    if tc.ema_decay:
        saved = resume.get("ema") if resume is not None else None
        ema = WeightAverage(model, tc.ema_decay, saved)
        if saved is None and step:
            log.info(f"weight average started at step {step}")
    served = model if ema is None else ema.model  # what is validated and saved as best / last
    net = model.net if world == 1 else torch.nn.parallel.DistributedDataParallel(model.net)
    dnet = disc if disc is None or world == 1 else torch.nn.parallel.DistributedDataParallel(disc)
    model.train()
    batches = _batches(train_set, tc, step, rank, world, StepInputs(model))
    log.start(step, tc.steps)
    last_metrics: dict[str, float] = {}
    tick = time.perf_counter()
    timer.start()
    while step < tc.steps:
        with timer("data"):
            batch = next(batches)
        with timer("features"):
            reverb, x, y = (batch[k].to(device) for k in ("reverb_spec", "x", "y"))
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        with timer("model"):
            try:
                loss_value, grad_norm, parts = optimise(model, net, opt, scaler, reverb, x, y, tc, dtype, world,
                                                        disc=(dnet, opt_d))
            except Diverged as e:
                log.close()
                raise DereverbError(f"training diverged: loss is {e.loss} at step {step + 1}; the last good checkpoint "
                                    f"is kept in {run_dir} (lower train.lr or raise train.warmup_steps)") from None
        if ema is not None:
            with timer("average"):
                ema.update(model)
        step += 1

        done = step == tc.steps
        rate = tc.batch_size * world / max(1e-9, time.perf_counter() - tick)
        tick = time.perf_counter()
        log.step(step, loss_value, rate, lr_at(step - 1, tc), grad_norm, parts, tc.log_every)
        if rank == 0 and (step % tc.valid_every == 0 or done) and valid:
            with timer("valid"):
                last_metrics, outputs = validate(served, valid, device, tc.pesq)
                log.valid(step, last_metrics)
                log.info(timer.summary())
                write_samples(run_dir / "samples" / f"step_{step:07d}", valid[: tc.samples], outputs, served)
                if best is None or last_metrics["si_sdr"] > best:
                    best = last_metrics["si_sdr"]
                    checkpoint.save(run_dir / "best.safetensors", served, _meta(cfg, step, last_metrics))
        if rank == 0 and (step % tc.checkpoint_every == 0 or done):
            with timer("checkpoint"):
                checkpoint.save(run_dir / "last.safetensors", served, _meta(cfg, step, last_metrics))
                checkpoint.save_state(state_path, _state(model, opt, disc, opt_d, step, best, ema))  # last: a
                # kill between the two files resumes from the previous state, never a mismatched pair
        if world > 1 and (step % tc.valid_every == 0 or step % tc.checkpoint_every == 0 or done):
            dist.barrier()
    if world > 1:  # DDP syncs batch-norm statistics at each forward, not after the last one
        for buffer in model.net.buffers():
            dist.broadcast(buffer, 0)
        if ema is not None:
            ema.copy_buffers(model)
    log.close()
    model.eval()
    return served.eval(), last_metrics


def _init_from(model: DereverbModel, spec: str) -> bool:
    """Copy checkpoint ``spec``'s network weights into ``model`` (same STFT and architecture), and
    its normaliser too when both compress alike; returns whether the normaliser was copied."""
    src = checkpoint.load(checkpoint.resolve_model(spec))
    if (src.stft_config, src.model_config) != (model.stft_config, model.model_config):
        raise DereverbError(f"train.init {spec}: its stft/model sections differ from this run's")
    compression = ("compression", "floor_db", "power", "normalization")  # the frontend may differ
    if all(getattr(src.feature_config, k) == getattr(model.feature_config, k) for k in compression):
        model.load_state_dict(src.state_dict())
        return True
    model.net.load_state_dict(src.net.state_dict())
    return False


def _state(model, opt, disc, opt_d, step: int, best: float | None, ema: WeightAverage | None) -> dict[str, Any]:
    """Everything a resume needs (weights included, so it never pairs with another step's file)."""
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "best": best,
             "rng": torch.get_rng_state()}
    if ema is not None:
        state["ema"] = ema.state_dict()
    if disc is not None:
        state.update(disc=disc.state_dict(), opt_disc=opt_d.state_dict())
    return state


def _restore(state: dict[str, Any], model, opt, disc, opt_d) -> tuple[int, float | None]:
    """Load a :func:`_state` into the live objects; returns ``(step, best score)``."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if disc is not None and "disc" in state:
        disc.load_state_dict(state["disc"])
        opt_d.load_state_dict(state["opt_disc"])
    torch.set_rng_state(state["rng"])
    return int(state["step"]), state.get("best")


def _mean_over_ranks(value: torch.Tensor, world: int) -> float:
    if world > 1:
        value = value.float().clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


def _meta(cfg: RunConfig, step: int, metrics: dict[str, float]) -> dict[str, Any]:
    return {"step": step, "metrics": metrics, "train": to_dict(cfg.train), "data": to_dict(cfg.data)}
