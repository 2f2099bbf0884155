"""The run folder of a training run: the checks before a run writes there, and what it writes.

``config.yaml`` (the resolved :class:`~dereverb.train.RunConfig`, given as a dict), ``train.log`` (every
``log_every`` steps and each validation), ``tb/`` (TensorBoard scalars, when tensorboard is
installed) and ``samples/step_NNNNNNN/`` (audio and dB spectrograms of a few validation items).
Model files and the resume state are written by :mod:`dereverb.train` through
:mod:`dereverb.checkpoint`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from . import audio
from .audio import atomic_path
from .config import RemovedKeyError, from_dict, to_dict
from .errors import DereverbError

if TYPE_CHECKING:
    from .model import DereverbModel


def check_outside_data(run_dir: Path, inputs: Iterable[str]) -> None:
    """Refuse a run folder inside one of the data folders ``inputs`` (paths; empty ones are
    ignored): its audio samples would become training data."""
    for folder in (Path(p) for p in inputs if p):
        if folder.is_dir() and run_dir.resolve().is_relative_to(folder.resolve()):
            raise DereverbError(f"{run_dir}: the run folder is inside the data folder {folder}, where its "
                                "audio samples would become training data; use another --run-dir")


def check_run_dir(run_dir: Path, sections: dict[str, Any]) -> None:
    """Refuse to resume a run whose model, STFT or features differ from this run's ``sections``
    (``{"stft": StftConfig, "features": FeatureConfig, "model": ModelConfig}``).

    The saved sections are read with today's defaults, so a field added since the run started
    (at its default), or removed since (at its old default), does not count as a difference.
    """
    old = run_dir / "config.yaml"
    if not (old.is_file() and (run_dir / "state.pt").is_file()):
        return
    saved = yaml.safe_load(old.read_text()) or {}
    for key, ours in sections.items():
        try:
            theirs = to_dict(from_dict(type(ours), saved.get(key), where=f"{key}."))
        except RemovedKeyError as e:
            raise DereverbError(f"{run_dir}: cannot resume this run: {e}") from e
        except DereverbError:  # a key this version does not know, or a bad value
            theirs = saved.get(key)
        if theirs != to_dict(ours):
            raise DereverbError(f"{run_dir}: this run was started with a different {key} configuration; "
                                "use another --run-dir or the original recipe")


class LoopTimer:
    """Wall-clock seconds of the training loop by section: ``data`` (waiting for the next batch),
    ``features`` (moving it to the device; its STFT and normalisation run where it is made),
    ``model`` (forward, loss, backward, optimiser step), ``average`` (the weight average),
    ``valid``, ``checkpoint`` and ``other`` (everything between sections: logging, the
    learning-rate schedule).

    ``with timer("model"): ...`` adds to a section; :meth:`start` begins counting (set-up is not
    the loop).
    """

    SECTIONS = ("data", "features", "model", "average", "valid", "checkpoint", "other")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.SECTIONS, 0.0)
        self.mark = time.perf_counter()

    def start(self) -> None:
        self.mark = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, section: str):
        begin = time.perf_counter()
        self.seconds["other"] += begin - self.mark
        try:
            yield
        finally:
            self.mark = time.perf_counter()
            self.seconds[section] += self.mark - begin

    def shares(self) -> dict[str, float]:
        """Each section's fraction of the time counted so far."""
        total = sum(self.seconds.values()) or 1.0
        return {k: v / total for k, v in self.seconds.items()}

    def summary(self) -> str:
        return "loop time: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in self.shares().items())


class RunLog:
    """Console (tqdm), ``train.log``, TensorBoard and ``config.yaml`` of a run; silent off rank 0."""

    def __init__(self, run_dir: Path, config: dict[str, Any], enabled: bool, progress: bool):
        self.enabled, self.show_bar, self.bar, self.tb = enabled, progress and enabled, None, None
        if not enabled:
            return
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DereverbError(f"{run_dir}: cannot create the run folder ({e.strerror})") from e
        for stale in run_dir.rglob(".*.tmp"):  # temp files of a run killed mid-write
            stale.unlink(missing_ok=True)
        with atomic_path(run_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        self.file = open(run_dir / "train.log", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"))
        except ImportError:
            self.info("tensorboard is not installed: no TensorBoard scalars (pip install dereverb[train])")

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        self.file.write(line + "\n")
        self.file.flush()
        (self.bar.write if self.bar is not None else print)(message, file=sys.stderr)

    def start(self, step: int, total: int) -> None:
        if self.show_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True)

    def step(self, step: int, loss: float, rate: float, lr: float, grad_norm: float,
             parts: dict[str, float], every: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", ex_s=f"{rate:.1f}", refresh=False)
            self.bar.update(1)
        if not self.enabled or step % every:
            return
        self.file.write(f"step {step} loss {loss:.5f} lr {lr:.3e} grad_norm {grad_norm:.3f} examples/s {rate:.2f} "
                        + " ".join(f"{k} {v:.5f}" for k, v in parts.items()) + "\n")
        self.file.flush()
        if self.tb is not None:
            for name, value in {"loss": loss, "lr": lr, "grad_norm": grad_norm, "examples_per_s": rate,
                                **{f"loss_{k}": v for k, v in parts.items()}}.items():
                self.tb.add_scalar(f"train/{name}", value, step)

    def valid(self, step: int, metrics: dict[str, float]) -> None:
        self.info(f"step {step} validation: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        if self.tb is not None:
            for name, value in metrics.items():
                self.tb.add_scalar(f"valid/{name}", value, step)
            self.tb.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def write_samples(folder: Path, items: list[dict], outputs: list[torch.Tensor], model: DereverbModel) -> None:
    """``NN_{reverb,enhanced,clean}.wav`` and ``NN.png`` (three dB spectrograms) per item."""
    if not items:
        return
    folder.mkdir(parents=True, exist_ok=True)
    sr = model.stft_config.sample_rate
    for i, (item, est) in enumerate(zip(items, outputs)):
        waves = {"reverb": item["reverb"], "enhanced": est, "clean": item["clean"]}
        for name, wave in waves.items():
            audio.write(folder / f"{i:02d}_{name}.wav", wave.cpu().numpy(), sr, subtype="FLOAT")
        _spectrogram_png(folder / f"{i:02d}.png", waves, model)


def _spectrogram_png(path: Path, waves: dict[str, torch.Tensor], model: DereverbModel) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(waves), figsize=(4 * len(waves), 3), sharey=True)
    for ax, (name, wave) in zip(axes, waves.items()):
        with torch.no_grad():
            mag = model.stft(wave.to(model.stft.window.device)[None])[0].abs().cpu()  # (F, T)
        ax.imshow(20 * torch.log10(mag.clamp_min(1e-5)).numpy(), origin="lower", aspect="auto", vmin=-100, vmax=0)
        ax.set_title(name)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
