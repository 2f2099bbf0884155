"""Training data: clean speech sources, on-the-fly reverberant/clean pairs, paired folders.

The default training input is made on the fly in DataLoader workers: a random crop of clean
speech, a random RIR (measured and/or from a simulated pool), FFT convolution, a random level.
Nothing is precomputed, every step sees a new pair, and the stream is reproducible from a seed
(distinct per DataLoader worker and per DDP rank).  Items are ``{"reverb": (S,), "clean": (S,)}``
float32 tensors at ``StftConfig.sample_rate``, aligned sample for sample (see
:func:`dereverb.rooms.reverberate`).  :class:`dereverb.paired.PairedFolder` serves a user's own ``clean/``
+ ``reverb/`` folders in the same format.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import audio, noise, rooms, simulate
from .config import StftConfig, require
from .convolver import PairConvolver
from .errors import DereverbError
from .rooms import Rir, warn_skipped

MANIFEST_SUFFIXES = (".csv", ".jsonl")
LEVEL_DB = (-35.0, -15.0)  # range of a pair's reverberant RMS, dBFS (the target gets the same gain)
MIN_RMS_DB = -50.0  # dry speech crops quieter than this (dBFS) are drawn again
NOISE_SLOPE_RANGE = (-6.0, 0.0)  # spectral slopes of generated noise, dB per octave


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What the on-the-fly pipeline draws from and how.

    ``speech``: folders (recursive), audio files or CSV/JSONL manifests of clean speech.
    ``rirs``: measured RIR files/folders; ``rir_pool``: a folder from ``dereverb rirs simulate``
    (made, or finished, with ``simulate_count`` RIRs if it holds fewer).  ``measured_prob``: chance of
    a measured RIR when both kinds exist.  ``target``: ``direct``, ``early`` or ``dry``.
    ``segment_seconds``: crop length (2.048 s = 256 frames at hop 128, 16 kHz); each pair gets a
    random level in :data:`LEVEL_DB`.  ``strict``: a bad speech, noise or RIR file is an error
    instead of a warning.  ``dry_prob``: chance of an
    anechoic pair (input = target), so the model learns to leave dry, close-talk speech alone
    instead of over-processing it.  ``drr_prob``: chance that a room RIR is rescaled
    (:func:`rooms.with_drr`) to a DRR drawn uniformly from ``drr_range`` dB, which teaches the
    near-field input that a simulated pool rarely holds.  ``speech_cache_mb``: decoded speech files
    each DataLoader worker keeps (least recently used out; 0 = seek and decode every crop, which
    costs about 40% of a pair).  ``rir_cache_mb``: RIR and target-kernel spectra each worker keeps
    (:class:`convolver.PairConvolver`; 0 = transform the RIR and the target kernel for every pair,
    about twice the cost).  ``noise_prob``: chance that noise is added to the reverberant input at
    an SNR drawn from ``snr_range`` dB (the target stays clean): crops of the ``noise`` files
    (folders, files or manifests, looped when short), or, without files, coloured Gaussian noise
    with a spectral slope drawn from :data:`NOISE_SLOPE_RANGE` (:mod:`dereverb.noise`).
    ``hf_decay_range``: each simulated RIR gets its reverberation time above 1 kHz shortened as
    ``(f / 1 kHz) ** -b``, ``b`` drawn once per RIR from this range (:func:`rooms.with_hf_decay`;
    real rooms decay faster at high frequencies, shoebox rooms with one absorption do not);
    ``(0, 0)`` leaves the pool as simulated.
    The train/held-out split is just which paths a recipe lists.
    """

    REMOVED: ClassVar[dict[str, Any]] = {  # see config.from_dict
        "level_db": [-35.0, -15.0], "min_rms_db": -50.0, "epoch_size": 0, "noise_slope_range": [-6.0, 0.0],
        "decay_scales": []}

    speech: tuple[str, ...] = ()
    rirs: tuple[str, ...] = ()
    rir_pool: str | None = None
    simulate_count: int = 0
    rir_channels: str = "first"
    measured_prob: float = 0.5
    target: str = "direct"
    segment_seconds: float = 2.048
    strict: bool = False
    dry_prob: float = 0.0
    drr_prob: float = 0.0
    drr_range: tuple[float, float] = (-5.0, 20.0)
    speech_cache_mb: int = 0
    rir_cache_mb: int = 0
    noise: tuple[str, ...] = ()
    noise_prob: float = 0.0
    snr_range: tuple[float, float] = (5.0, 30.0)
    hf_decay_range: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        checks = [
            (self.target in rooms.TARGETS, f"data.target must be one of {list(rooms.TARGETS)}"),
            (0.0 <= self.measured_prob <= 1.0, "data.measured_prob must be in [0, 1]"),
            (0.0 <= self.dry_prob <= 1.0, "data.dry_prob must be in [0, 1]"),
            (0.0 <= self.drr_prob <= 1.0, "data.drr_prob must be in [0, 1]"),
            (len(self.drr_range) == 2 and self.drr_range[0] <= self.drr_range[1],
             "data.drr_range must be [low, high] dB with low <= high"),
            (self.segment_seconds > 0, "data.segment_seconds must be > 0"),
            (self.rir_channels in ("first", "all"), "data.rir_channels must be 'first' or 'all'"),
            (self.simulate_count >= 0, "data.simulate_count must be >= 0"),
            (self.speech_cache_mb >= 0 and self.rir_cache_mb >= 0, "data.speech_cache_mb/rir_cache_mb must be >= 0"),
            (0.0 <= self.noise_prob <= 1.0, "data.noise_prob must be in [0, 1]"),
            (len(self.snr_range) == 2 and self.snr_range[0] <= self.snr_range[1],
             "data.snr_range must be [low, high] dB with low <= high"),
            (len(self.hf_decay_range) == 2 and 0.0 <= self.hf_decay_range[0] <= self.hf_decay_range[1],
             "data.hf_decay_range must be [low, high] with 0 <= low <= high"),
        ]
        require(checks)


# --- speech sources ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One clean speech file: its path, length in seconds (from the header or a manifest)."""

    path: str
    seconds: float
    speaker: str = ""


def _manifest_rows(path: Path) -> list[dict]:
    try:
        if path.suffix.lower() == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, ValueError, csv.Error) as e:
        raise DereverbError(f"{path}: not a readable manifest ({e})") from e


def _from_manifest(path: Path, bad: list[str]) -> list[Utterance]:
    """Rows ``path[, duration][, speaker]``; relative paths are relative to the manifest."""
    out = []
    for i, row in enumerate(_manifest_rows(path)):
        if not isinstance(row, dict) or not row.get("path"):
            raise DereverbError(f"{path}: row {i + 1} has no 'path' (columns: path, duration, speaker)")
        p = Path(row["path"])
        p = p if p.is_absolute() else path.parent / p
        try:
            seconds = float(row["duration"]) if row.get("duration") not in (None, "") else audio.info(p).duration
        except (DereverbError, ValueError) as e:
            bad.append(str(e) if isinstance(e, DereverbError) else f"{path}: row {i + 1}: bad duration")
            continue
        out.append(Utterance(str(p), seconds, str(row.get("speaker") or "")))
    return out


def scan_speech(paths: Sequence[str | Path], min_seconds: float = 0.0, strict: bool = False,
                what: str = "speech") -> list[Utterance]:
    """All speech in ``paths`` (folders recursively, audio files, ``.csv``/``.jsonl`` manifests).

    Durations come from file headers (or the manifest), nothing is decoded.  Unreadable files and
    files shorter than ``min_seconds`` are listed in one warning and skipped (``strict``: error).
    """
    utts, bad = [], []
    for root in paths:
        root = Path(root)
        if root.is_file() and root.suffix.lower() in MANIFEST_SUFFIXES:
            utts.extend(_from_manifest(root, bad))
            continue
        for f in audio.list_audio(root):
            try:
                utts.append(Utterance(str(f), audio.info(f).duration))
            except DereverbError as e:
                bad.append(str(e))
    short = [u for u in utts if u.seconds < min_seconds]
    bad += [f"{u.path}: too short ({u.seconds:.2f} s < {min_seconds:.2f} s)" for u in short]
    warn_skipped(bad, strict, f"{what} file(s)")
    utts = [u for u in utts if u.seconds >= min_seconds]
    if not utts:
        raise DereverbError(f"no usable {what} in {', '.join(map(str, paths))}")
    return utts


def _level(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(np.square(x, dtype=np.float64))) + 1e-20)


# --- on-the-fly pairs --------------------------------------------------------------------------


def pick_rir(measured: list[Rir], simulated: list[Rir], measured_prob: float, rng: np.random.Generator) -> Rir:
    """A random RIR: measured with probability ``measured_prob`` when both kinds exist."""
    use_measured = bool(measured) and (not simulated or rng.random() < measured_prob)
    pool = measured if use_measured else simulated
    return pool[int(rng.integers(len(pool)))]


def anechoic(sample_rate: int) -> Rir:
    """The identity RIR (a unit impulse): its pair has input equal to target."""
    return Rir(np.ones(1, np.float32), sample_rate, "anechoic", 0, 0.0, math.inf, {})


def set_level(reverb: np.ndarray, clean: np.ndarray, level_db: tuple[float, float],
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scale both signals by one gain: the reverberant RMS becomes a random level in
    ``level_db`` (dBFS), lowered if needed so neither peak exceeds 0.99."""
    gain = 10 ** ((rng.uniform(*level_db) - _level(reverb)) / 20)
    peak = max(np.abs(reverb).max(), np.abs(clean).max()) * gain
    gain *= min(1.0, 0.99 / max(peak, 1e-12))
    return reverb * np.float32(gain), clean * np.float32(gain)


class SpeechCache:
    """Whole decoded files (float32 at ``sample_rate``), least recently used dropped beyond
    ``budget_mb``; :meth:`segment` is :func:`audio.read_segment` served from memory."""

    def __init__(self, budget_mb: int, sample_rate: int):
        self.budget, self.sample_rate = budget_mb * 2**20, sample_rate
        self.files: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self.bytes = 0

    def segment(self, path: str, start: float, n: int) -> np.ndarray:
        x = self.files.get(path)
        if x is None:
            x = audio.read(path, self.sample_rate, channel=0)[0][0]
            self.files[path], self.bytes = x, self.bytes + x.nbytes
            while self.bytes > self.budget and len(self.files) > 1:
                self.bytes -= self.files.popitem(last=False)[1].nbytes
        self.files.move_to_end(path)
        i = min(len(x), int(round(start * self.sample_rate)))
        return np.pad(x[i : i + n], (0, max(0, n - (len(x) - i))))


class ReverbPairs(IterableDataset):
    """Endless stream of random reverberant/clean pairs.

    Each DataLoader worker of each DDP rank draws from its own generator
    ``default_rng([seed, epoch, rank * num_workers + worker])``, so streams differ across workers
    and ranks and repeat exactly for the same seed, epoch and worker count.  Call
    :meth:`set_epoch` each epoch (as with ``DistributedSampler``) for new data per epoch.
    """

    def __init__(self, utterances: list[Utterance], measured: list[Rir], simulated: list[Rir],
                 cfg: DataConfig, sample_rate: int, seed: int, rank: int = 0, world_size: int = 1,
                 noises: list[Utterance] | None = None):
        if not measured and not simulated:
            raise DereverbError("no RIRs: set data.rirs (measured) and/or data.rir_pool (simulated)")
        self.utterances, self.measured, self.simulated = utterances, measured, simulated
        self.cfg, self.sample_rate, self.seed = cfg, sample_rate, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.noises = noises or []
        self.length = int(round(cfg.segment_seconds * sample_rate))
        self.cache = SpeechCache(cfg.speech_cache_mb, sample_rate) if cfg.speech_cache_mb else None
        self.convolver = PairConvolver(cfg.target, cfg.rir_cache_mb) if cfg.rir_cache_mb else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _stream(self) -> tuple[int, int]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        return self.rank * workers + worker, self.world_size * workers

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        stream, streams = self._stream()
        rng = np.random.default_rng([self.seed, self.epoch, stream])
        while True:
            yield self.item(rng)

    def item(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One pair as a training item: ``{"reverb": (S,), "clean": (S,)}`` float32 tensors."""
        reverb, clean = self.example(rng)
        return {"reverb": torch.from_numpy(reverb), "clean": torch.from_numpy(clean)}

    def pick_rir(self, rng: np.random.Generator) -> tuple[Rir, float | None]:
        """A RIR and the DRR (dB) to give it, or ``None`` to keep its own."""
        if self.cfg.dry_prob > 0 and rng.random() < self.cfg.dry_prob:
            return anechoic(self.sample_rate), None
        rir = pick_rir(self.measured, self.simulated, self.cfg.measured_prob, rng)
        if self.cfg.drr_prob > 0 and rng.random() < self.cfg.drr_prob:
            return rir, float(rng.uniform(*self.cfg.drr_range))
        return rir, None

    def dry_crop(self, rng: np.random.Generator, context: int) -> tuple[np.ndarray, int]:
        """A crop of ``context + length`` samples whose last ``length`` are active speech;
        returns it and the context actually available (fewer at a file's start)."""
        n = self.length
        for _ in range(100):
            utt = self.utterances[int(rng.integers(len(self.utterances)))]
            start = float(rng.uniform(0.0, max(0.0, utt.seconds - n / self.sample_rate)))
            ctx = min(context, int(start * self.sample_rate))
            try:
                at = start - ctx / self.sample_rate
                x = (self.cache.segment(utt.path, at, ctx + n) if self.cache
                     else audio.read_segment(utt.path, at, ctx + n, self.sample_rate))
            except DereverbError:
                continue  # the file broke after the scan; draw another
            crop = x[ctx:]
            if np.isfinite(x).all() and _level(crop) >= MIN_RMS_DB and not rooms.is_clipped(crop):
                return x, ctx
        raise DereverbError(
            f"100 crops in a row were silent (< {MIN_RMS_DB} dBFS), clipped or unreadable: check data.speech"
        )

    def noise_crop(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` samples of a random noise file from a random place (looped if shorter), or
        generated coloured noise when ``data.noise`` lists no files."""
        if not self.noises:
            return noise.colored_noise(n, float(rng.uniform(*NOISE_SLOPE_RANGE)), rng)
        item = self.noises[int(rng.integers(len(self.noises)))]
        have = min(n, int(item.seconds * self.sample_rate))
        start = float(rng.uniform(0.0, max(0.0, item.seconds - have / self.sample_rate)))
        try:
            x = (self.cache.segment(item.path, start, have) if self.cache
                 else audio.read_segment(item.path, start, have, self.sample_rate))
        except DereverbError:
            return np.zeros(n, np.float32)  # broke after the scan: this pair stays noise-free
        return np.resize(x, n) if len(x) else np.zeros(n, np.float32)

    def example(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One pair ``(reverb, clean)``, each ``(length,)`` float32, finite, peak below 1."""
        rir, drr_db = self.pick_rir(rng)
        dry, ctx = self.dry_crop(rng, context=len(rir.audio) - 1)
        if self.convolver is not None:  # the crop, with reverb from the context before it
            reverb, clean = self.convolver(dry, rir, ctx, drr_db)
        else:
            rir = rir if drr_db is None else rooms.with_drr(rir, drr_db)
            reverb, clean = rooms.reverberate(dry, rir, self.cfg.target, skip=ctx)
        if self.cfg.noise_prob > 0 and rng.random() < self.cfg.noise_prob:
            reverb = noise.mix_at_snr(reverb, self.noise_crop(rng, len(reverb)), float(rng.uniform(*self.cfg.snr_range)))
        reverb, clean = set_level(reverb, clean, LEVEL_DB, rng)
        if not (np.isfinite(reverb).all() and np.isfinite(clean).all()):
            raise RuntimeError(f"non-finite pair from RIR {rir.name}")  # a bug, not bad input
        return reverb, clean


def load_rir_sets(cfg: DataConfig, sample_rate: int, seed: int = 0) -> tuple[list[Rir], list[Rir]]:
    """``(measured, simulated)`` RIRs named by ``cfg`` at ``sample_rate``."""
    measured = rooms.load_rirs(cfg.rirs, sample_rate, cfg.rir_channels, cfg.strict) if cfg.rirs else []
    simulated: list[Rir] = []
    if cfg.rir_pool:
        pool = Path(cfg.rir_pool)
        if simulate.pool_size(pool) < cfg.simulate_count:  # missing, or cut short by an interrupted first use
            simulate.simulate_pool(cfg.simulate_count, pool, seed, sample_rate)
        simulated = simulate.load_pool(pool, sample_rate, cfg.strict)
    if cfg.hf_decay_range[1] > 0:  # one exponent per RIR, the same in every worker and rank
        rng = np.random.default_rng([seed, 0x4846])
        simulated = [rooms.with_hf_decay(r, float(rng.uniform(*cfg.hf_decay_range))) for r in simulated]
    return measured, simulated


def _build(cfg: DataConfig, stft: StftConfig, seed: int, rank: int, world_size: int) -> ReverbPairs:
    utts = scan_speech(cfg.speech, cfg.segment_seconds / 2, cfg.strict)
    measured, simulated = load_rir_sets(cfg, stft.sample_rate, seed)
    noises = scan_speech(cfg.noise, 0.05, cfg.strict, what="noise") if cfg.noise and cfg.noise_prob > 0 else []
    return ReverbPairs(utts, measured, simulated, cfg, stft.sample_rate, seed, rank, world_size, noises)


def build_train_dataset(cfg: DataConfig, stft: StftConfig, seed: int, rank: int = 0,
                        world_size: int = 1) -> ReverbPairs:
    """The on-the-fly training stream: ``{"reverb", "clean"}`` float32 ``(S,)`` tensors,
    ``S = segment_seconds * stft.sample_rate``."""
    if not cfg.speech:
        raise DereverbError("data.speech is empty: list folders or manifests of clean speech")
    return _build(cfg, stft, seed, rank, world_size)


def build_valid_set(cfg: DataConfig, stft: StftConfig, seed: int, count: int) -> list[dict]:
    """``count`` fixed pairs (same for the same seed and config), in the training item format."""
    ds = _build(cfg, stft, seed, 0, 1)
    rng = np.random.default_rng([seed, 0x7A11D])
    pairs = [ds.example(rng) for _ in range(count)]
    return [{"reverb": torch.from_numpy(r), "clean": torch.from_numpy(c)} for r, c in pairs]
