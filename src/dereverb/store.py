"""The precomputed feature store (``dereverb prepare``): reverberant/clean spectrogram pairs as
float16 dB log-magnitude (and optionally phase), never images.

Format, chosen by measurement (``benchmarks/storage.py --backends``, docs/storage.md: 615 s of
LibriSpeech through the training RIRs, 16 kHz, 257 bins x 125 frames/s, reverb + clean; raw
float16 random 2 s crops from one process, warm page cache, a busy 2-core machine (load 7); "x FLAC" is
against the same reverberant and clean audio as 16-bit FLAC, 33.3 kB/s)::

    layout                                 kB/s audio   x FLAC   crops/s
    .npy memmap, raw float16                  128.5       3.86    11 045
    HDF5 contiguous                           128.5       3.86     5 950
    HDF5 chunks of 64 frames, no filter       128.7       3.87     3 029
    HDF5 gzip-1 + shuffle                      94.1       2.83       325
    HDF5 lzf + shuffle                        107.9       3.24       249
    zarr 2 blosc-zstd-3 + shuffle (1)         102.8         -        830
    memmap shard, blosc-lz4hc-9 blocks         99.4       2.99     2 835   <- chosen
    memmap shard, raw blocks (codec "none")   128.6       3.86    10 344
    (1) an earlier run on other pairs; zarr is not a dependency

float16 dB mantissas are noise-like, so no lossless codec gets far below 100 kB/s, and raw
arrays cost almost 4x the FLAC.  Among codecs that compress, LZ4-HC with byte shuffle decodes
4-5x faster than zstd and 10x faster than gzip (0.06 ms per 64-frame block), and HDF5 and zarr add
per-call and per-chunk overhead (zarr 2 also writes one file per chunk: millions for a real
corpus).  So a shard here is one file read through ``numpy.memmap``: blocks of ``block_frames``
frames, each an independent Blosc frame, then a footer of block offsets and an item table.  A
2 s crop decodes only its 5 blocks; a shard is one file to checksum and rename; DataLoader workers
each map the files lazily after the fork.  ``codec="none"`` stores raw blocks (memmap speed).

Layout per block: ``(frames, C, F)`` float16, ``C = 2`` (reverb dB, clean dB) or 4 (+ reverb
phase, clean phase in radians) for complex stores; ``F = n_fft // 2 + 1``.  ``store.json``
holds the StftConfig, the dB floor, per-shard sha256/size/statistics and sources, and the
normalisation statistics of the stored reverberant dB features; it says ``"complete": true`` only
when every shard is written and verified.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import audio, rooms, spectral
from .config import StftConfig, from_dict, to_dict
from .data import DataConfig, PairedFolder, load_rir_sets, pick_rir, read_segment, scan_speech, set_level
from .errors import DereverbError

FORMAT = 1
MAGIC = b"DRVSHRD1"
TRAILER = struct.Struct("<QQ8s")  # offsets position, json position, magic
META = "store.json"
CODECS = ("lz4hc", "none")


@functools.lru_cache(maxsize=1)
def _blosc():
    try:
        import numcodecs
        from numcodecs import blosc
    except ImportError as e:
        raise DereverbError("the feature store needs numcodecs: pip install 'dereverb[store]'") from e
    blosc.use_threads = False  # no blosc thread pool: DataLoader workers fork
    return numcodecs.Blosc(cname="lz4hc", clevel=9, shuffle=numcodecs.Blosc.SHUFFLE)


def encode_block(block: np.ndarray, codec: str) -> bytes:
    """``(frames, C, F)`` float16 -> bytes."""
    data = np.ascontiguousarray(block, dtype=np.float16)
    return data.tobytes() if codec == "none" else bytes(_blosc().encode(data))


def decode_block(buf, codec: str, channels: int, bins: int) -> np.ndarray:
    """Inverse of :func:`encode_block`: ``(frames, C, F)`` float16."""
    raw = buf if codec == "none" else _blosc().decode(buf)
    return np.frombuffer(raw, dtype=np.float16).reshape(-1, channels, bins)


# --- writing one shard -------------------------------------------------------------------------


class ShardWriter:
    """Write items into one shard file atomically; the final name appears only after
    :meth:`close` has re-read the file, checked its sha256 and decoded every block."""

    def __init__(self, path: Path, channels: int, bins: int, block_frames: int, codec: str):
        self.path, self.channels, self.bins = path, channels, bins
        self.block_frames, self.codec = block_frames, codec
        self._ctx = audio.atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self._file = open(self._tmp, "wb")
        self._sha = hashlib.sha256()
        self.offsets, self.items = [0], []
        self._open = True

    def _write(self, buf: bytes) -> None:
        self._file.write(buf)
        self._sha.update(buf)

    def add(self, name: str, feats: np.ndarray) -> None:
        """Append an item ``(T, C, F)`` float16."""
        self.items.append({"name": name, "frames": int(feats.shape[0]), "block": len(self.offsets) - 1})
        for s in range(0, feats.shape[0], self.block_frames):
            buf = encode_block(feats[s : s + self.block_frames], self.codec)
            self._write(buf)
            self.offsets.append(self.offsets[-1] + len(buf))

    def close(self) -> str:
        """Finish, verify and rename; returns the file's sha256."""
        try:
            table = json.dumps({"channels": self.channels, "bins": self.bins, "codec": self.codec,
                                "block_frames": self.block_frames, "items": self.items}).encode()
            offsets_pos = self.offsets[-1]
            self._write(np.asarray(self.offsets, dtype="<i8").tobytes())
            self._write(table)
            self._write(TRAILER.pack(offsets_pos, offsets_pos + 8 * len(self.offsets), MAGIC))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            digest = self._sha.hexdigest()
            if sha256_file(self._tmp) != digest or len(Shard(self._tmp).check()) != len(self.items):
                raise DereverbError(f"{self.path}: shard failed verification after writing (disk?)")
        except BaseException as e:
            self.abort(e)
            raise
        self._open = False
        self._ctx.__exit__(None, None, None)
        return digest

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the temporary file (once; a no-op after :meth:`close`)."""
        if not self._open:
            return
        self._open = False
        try:
            self._file.close()
        except OSError:  # flushing fails again on a full disk; the file is dropped anyway
            pass
        exc = exc or RuntimeError("shard aborted")
        try:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException as again:  # the context re-raises what it was given
            if again is not exc:
                raise


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- reading one shard -------------------------------------------------------------------------


class Shard:
    """Random access to one shard file through a read-only memory map."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.map = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise DereverbError(f"{self.path}: cannot open shard ({e})") from e
        if len(self.map) < TRAILER.size:
            raise DereverbError(f"{self.path}: not a dereverb shard (too short); rerun `dereverb prepare`")
        off_pos, json_pos, magic = TRAILER.unpack(bytes(self.map[-TRAILER.size :]))
        if magic != MAGIC or not off_pos <= json_pos <= len(self.map) - TRAILER.size:
            raise DereverbError(f"{self.path}: not a dereverb shard (bad footer); rerun `dereverb prepare`")
        self.offsets = np.frombuffer(self.map[off_pos:json_pos], dtype="<i8")
        table = json.loads(bytes(self.map[json_pos : len(self.map) - TRAILER.size]))
        self.items, self.codec = table["items"], table["codec"]
        self.channels, self.bins, self.block_frames = table["channels"], table["bins"], table["block_frames"]

    def read(self, item: int, start: int, frames: int) -> np.ndarray:
        """Frames ``[start, start + frames)`` of an item: ``(frames, C, F)`` float16 (fewer at its end)."""
        it = self.items[item]
        stop = min(start + frames, it["frames"])
        if start >= stop:
            return np.zeros((0, self.channels, self.bins), np.float16)
        b0, b1 = start // self.block_frames, (stop - 1) // self.block_frames
        blocks = [self._block(it["block"] + b) for b in range(b0, b1 + 1)]
        whole = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        first = start - b0 * self.block_frames
        return whole[first : first + stop - start]

    def _block(self, b: int) -> np.ndarray:
        return decode_block(self.map[self.offsets[b] : self.offsets[b + 1]], self.codec, self.channels, self.bins)

    def check(self) -> list[int]:
        """Decode every block; returns each item's frame count (raises if one is inconsistent)."""
        counts = []
        for it in self.items:
            got = sum(len(self._block(it["block"] + b)) for b in range(-(-it["frames"] // self.block_frames)))
            if got != it["frames"]:
                raise DereverbError(f"{self.path}: item {it['name']} has {got} frames, expected {it['frames']}")
            counts.append(got)
        return counts


# --- the store as a dataset --------------------------------------------------------------------


def read_meta(path: str | Path) -> dict[str, Any]:
    """``store.json`` of a store folder."""
    meta_path = Path(path) / META
    if not meta_path.is_file():
        raise DereverbError(f"{path}: not a feature store (no {META}); create one with `dereverb prepare`")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise DereverbError(f"{meta_path}: corrupt ({e}); rerun `dereverb prepare`") from e
    if meta.get("format") != FORMAT:
        raise DereverbError(f"{meta_path}: store format {meta.get('format')} is not {FORMAT}; rerun `dereverb prepare`")
    return meta


class FeatureStore(torch.utils.data.Dataset):
    """Random crops from a store made by :func:`prepare`.

    Item ``i`` is a crop of ``frames`` frames (``None``: the whole item) from stored item ``i``,
    starting where ``default_rng([seed, epoch, i])`` says, padded with the dB floor if short.
    Yields ``{"reverb_mag", "clean_mag"}`` float32 ``(F, T)`` linear magnitudes, or for complex
    stores ``{"reverb_spec", "clean_spec"}`` complex64 ``(F, T)``; ``output="db"`` yields
    ``{"reverb_db", "clean_db"}``: the stored float16 dB, 3x cheaper to serve (no conversion on
    the CPU; ``spectral.db_to_magnitude`` on the device).  Shard files are mapped lazily in each
    process, so the dataset is safe to use with several DataLoader workers.
    """

    def __init__(self, path: str | Path, frames: int | None = 256, seed: int = 0,
                 output: str = "mag", verify: bool = False):
        self.path, self.frames, self.seed, self.epoch = Path(path), frames, seed, 0
        if output not in ("mag", "db"):
            raise DereverbError(f"store output must be 'mag' or 'db', got {output!r}")
        self.output = output
        self.meta = read_meta(self.path)
        if not self.meta.get("complete"):
            raise DereverbError(f"{self.path}: store is incomplete; rerun `dereverb prepare` to finish it")
        self.stft = from_dict(StftConfig, self.meta["stft"])
        self.is_complex = bool(self.meta["complex"])
        self.floor_db = float(self.meta["floor_db"])
        self.index: list[tuple[int, int, int]] = []  # (shard, item in shard, frames)
        for k, entry in enumerate(self.meta["shards"]):
            shard_path = self.path / entry["file"]
            if not shard_path.is_file() or shard_path.stat().st_size != entry["bytes"]:
                raise DereverbError(f"{shard_path}: missing or wrong size; rerun `dereverb prepare`")
            self.index += [(k, j, it["frames"]) for j, it in enumerate(Shard(shard_path).items)]
        self._shards: dict[int, Shard] = {}
        self._pid = os.getpid()
        if verify:
            self.verify()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_shards": {}}

    def _shard(self, k: int) -> Shard:
        if os.getpid() != self._pid:  # a forked worker: map files anew
            self._shards, self._pid = {}, os.getpid()
        if k not in self._shards:
            self._shards[k] = Shard(self.path / self.meta["shards"][k]["file"])
        return self._shards[k]

    def verify(self) -> None:
        """Recompute every shard's sha256 against ``store.json``."""
        for entry in self.meta["shards"]:
            if sha256_file(self.path / entry["file"]) != entry["sha256"]:
                raise DereverbError(f"{self.path / entry['file']}: checksum mismatch; delete it and rerun `dereverb prepare`")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def name(self, i: int) -> str:
        """The stored name of item ``i``."""
        k, j, _ = self.index[i]
        return self._shard(k).items[j]["name"]

    def read(self, i: int, start: int = 0, frames: int | None = None) -> np.ndarray:
        """Stored features of item ``i``: ``(C, F, T)`` float16 (dB, then phases), floor padded."""
        k, j, total = self.index[i]
        n = total - start if frames is None else frames
        x = self._shard(k).read(j, start, n)  # (T', C, F)
        if len(x) < n:
            pad = np.zeros((n - len(x), *x.shape[1:]), np.float16)
            pad[:, :2] = self.floor_db
            x = np.concatenate([x, pad])
        return x.transpose(1, 2, 0)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        total = self.index[i][2]
        start = 0
        if self.frames is not None and total > self.frames:
            start = int(np.random.default_rng([self.seed, self.epoch, i]).integers(0, total - self.frames + 1))
        x = self.read(i, start, self.frames)  # (C, F, T) float16
        if self.output == "db":  # as stored; convert where it is cheap (on the accelerator)
            db = torch.from_numpy(np.ascontiguousarray(x[:2]))
            return {"reverb_db": db[0], "clean_db": db[1]}
        x = x.astype(np.float32)
        # numpy, not torch: torch's intra-op threads stall in busy DataLoader processes
        mag = np.exp(x[:2] * np.float32(np.log(10.0) / 20.0))  # dB -> |X|
        if self.is_complex:
            spec = torch.from_numpy((mag * np.exp(1j * x[2:4])).astype(np.complex64))
            return {"reverb_spec": spec[0], "clean_spec": spec[1]}
        return {"reverb_mag": torch.from_numpy(mag[0]), "clean_mag": torch.from_numpy(mag[1])}

    def normalizer(self, mode: str = "per_freq", n_freq: int | None = None) -> spectral.Normalizer:
        """A :class:`spectral.Normalizer` for dB features with the statistics fitted at prepare
        time on the stored reverberant features (first ``n_freq`` bins, default
        ``stft.n_freq``)."""
        n = n_freq or self.stft.n_freq
        norm = spectral.Normalizer(n, mode)
        stats = self.meta["stats"]
        if mode == "per_freq":
            norm.mean.copy_(torch.tensor(stats["mean"][:n]).reshape(n, 1))
            norm.std.copy_(torch.tensor(stats["std"][:n]).reshape(n, 1).clamp_min(1e-5))
        elif mode == "global":
            norm.mean.fill_(stats["global_mean"])
            norm.std.fill_(max(stats["global_std"], 1e-5))
        return norm


def combine_stats(parts: list[dict]) -> dict[str, Any]:
    """Mean/std per bin and overall from per-shard ``count``/``sum``/``sumsq`` (float64)."""
    parts = [p for p in parts if p["count"]]  # a shard whose items were all skipped adds nothing
    count = sum(p["count"] for p in parts)
    s = np.sum([p["sum"] for p in parts], axis=0)
    ss = np.sum([p["sumsq"] for p in parts], axis=0)
    mean = s / count
    std = np.sqrt(np.maximum(ss / count - mean**2, 0.0))
    gmean = s.sum() / (count * len(s))
    gstd = float(np.sqrt(max(ss.sum() / (count * len(s)) - gmean**2, 0.0)))
    return {"frames": int(count), "mean": mean.tolist(), "std": std.tolist(),
            "global_mean": float(gmean), "global_std": gstd}


def feature_stats(db: np.ndarray) -> dict[str, Any]:
    """Sufficient statistics of reverberant dB features ``(T, F)`` for :func:`combine_stats`."""
    x = db.astype(np.float64)
    return {"count": int(x.shape[0]), "sum": x.sum(0).tolist(), "sumsq": (x**2).sum(0).tolist()}


# --- dereverb prepare --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """What ``dereverb prepare`` stores.

    Either ``data`` (speech + RIRs, as for on-the-fly training; each utterance, split into pieces
    of at most ``max_seconds``, is reverberated ``copies`` times with random RIRs and levels) or
    ``clean_dir`` + ``reverb_dir`` (a user's paired folders, aligned as in
    :class:`dereverb.data.PairedFolder`).  ``store_complex`` adds the phases.
    """

    data: DataConfig = DataConfig()
    clean_dir: str | None = None
    reverb_dir: str | None = None
    copies: int = 1
    max_seconds: float = 30.0
    items_per_shard: int = 256
    block_frames: int = 64
    store_complex: bool = False
    codec: str = "lz4hc"
    floor_db: float = -100.0

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise DereverbError(f"store.codec must be one of {list(CODECS)}")
        if (self.clean_dir is None) != (self.reverb_dir is None):
            raise DereverbError("give both clean_dir and reverb_dir, or neither")
        if min(self.copies, self.items_per_shard, self.block_frames) < 1 or self.max_seconds <= 0:
            raise DereverbError("store: copies, items_per_shard, block_frames and max_seconds must be positive")


def _jobs(cfg: StoreConfig, sample_rate: int) -> tuple[list[dict], PairedFolder | None]:
    """Every item to store, in a fixed order (shard k holds jobs k*n .. (k+1)*n - 1)."""
    if cfg.clean_dir:
        pairs = PairedFolder(cfg.clean_dir, cfg.reverb_dir, sample_rate, strict=cfg.data.strict)
        return [{"name": c.relative_to(cfg.clean_dir).with_suffix("").as_posix(), "clean": str(c),
                 "reverb": str(r), "lag": lag} for c, r, lag in pairs.pairs], pairs
    if not cfg.data.speech:
        raise DereverbError("prepare: give speech (with RIRs) or clean_dir + reverb_dir")
    jobs = []
    for u in sorted(scan_speech(cfg.data.speech, 0.25, cfg.data.strict), key=lambda u: u.path):
        for start in np.arange(0.0, u.seconds - 0.25, cfg.max_seconds):
            seconds = float(min(cfg.max_seconds, u.seconds - start))
            jobs += [{"name": f"{Path(u.path).stem}@{start:.0f}s#{c}", "clean": u.path,
                      "start": float(start), "seconds": seconds, "copy": c} for c in range(cfg.copies)]
    return jobs, None


def _pair(job: dict, i: int, index: int, cfg: StoreConfig, rirs, pairs, sample_rate: int, seed: int):
    """``(reverb, clean)`` ``(S,)`` for job ``i``; adds the RIR and level used to ``job``."""
    if pairs is not None:
        item = pairs[index]
        return item["reverb"].numpy(), item["clean"].numpy()
    rng = np.random.default_rng([seed, i])
    dry = read_segment(job["clean"], job["start"], int(job["seconds"] * sample_rate), sample_rate)
    rir = pick_rir(*rirs, cfg.data.measured_prob, rng)
    reverb, clean = set_level(*rooms.reverberate(dry, rir, cfg.data.target), cfg.data.level_db, rng)
    job["rir"] = rir.name
    return reverb, clean


def _features(reverb: np.ndarray, clean: np.ndarray, stft: spectral.Stft, cfg: StoreConfig) -> np.ndarray:
    """``(T, C, F)`` float16: dB of reverb and clean (+ their phases for complex stores)."""
    spec = stft(torch.from_numpy(np.stack([reverb, clean]).astype(np.float32)))  # (2, F, T)
    chans = [spectral.magnitude_to_db(spec.abs(), cfg.floor_db)]
    if cfg.store_complex:
        chans.append(spec.angle())
    return torch.cat(chans).permute(2, 0, 1).numpy().astype(np.float16)


def _write_meta(out: Path, meta: dict) -> None:
    with audio.atomic_path(out / META) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))


def prepare(cfg: StoreConfig, stft_cfg: StftConfig, out_dir: str | Path, seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Build (or resume) a feature store in ``out_dir``; returns its ``store.json`` contents.

    Items are assigned to shards in a fixed order, each item's randomness comes from
    ``default_rng([seed, item])``, so a rerun after a crash skips the verified shards and
    rebuilds the rest identically.  A shard gets its final name only once written and verified;
    ``store.json`` lists it afterwards and says ``complete`` at the end.  A rerun with other
    settings or other source files is refused.  ``progress(done, total)`` counts shards.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sr = stft_cfg.sample_rate
    jobs, pairs = _jobs(cfg, sr)
    fingerprint = hashlib.sha256(json.dumps([to_dict(cfg), to_dict(stft_cfg), seed, jobs]).encode()).hexdigest()
    n_shards = -(-len(jobs) // cfg.items_per_shard)
    meta = read_meta(out) if (out / META).is_file() else None
    if meta and meta.get("fingerprint") != fingerprint:
        raise DereverbError(f"{out}: store made with other settings or sources; use a new folder")
    meta = meta or {"format": FORMAT, "complete": False, "fingerprint": fingerprint, "stft": to_dict(stft_cfg),
                    "floor_db": cfg.floor_db, "complex": cfg.store_complex, "seed": seed,
                    "config": to_dict(cfg), "shards": [None] * n_shards}
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    rirs = rooms_for(cfg, sr, seed) if pairs is None else None
    stft = spectral.Stft(stft_cfg)
    for k in range(n_shards):
        name = f"shard-{k:05d}.dvs"
        entry = meta["shards"][k]
        if not (entry and (out / name).is_file() and sha256_file(out / name) == entry["sha256"]):
            meta["shards"][k] = _build_shard(out / name, range(k * cfg.items_per_shard, min(len(jobs), (k + 1) * cfg.items_per_shard)),
                                             jobs, cfg, rirs, pairs, stft, seed)
            _write_meta(out, meta)
        if progress:
            progress(k + 1, n_shards)
    if not sum(e["items"] for e in meta["shards"]):
        raise DereverbError(f"{out}: every item was skipped (see the warnings); nothing to store")
    meta["stats"] = combine_stats([e["stats"] for e in meta["shards"]])
    meta["complete"] = True
    _write_meta(out, meta)
    return meta


def rooms_for(cfg: StoreConfig, sample_rate: int, seed: int) -> tuple[list, list]:
    measured, simulated = load_rir_sets(cfg.data, sample_rate, seed)
    if not measured and not simulated:
        raise DereverbError("prepare: no RIRs; give measured RIRs and/or a simulated pool")
    return measured, simulated


def _build_shard(path: Path, items: range, jobs: list[dict], cfg: StoreConfig, rirs, pairs,
                 stft: spectral.Stft, seed: int) -> dict[str, Any]:
    channels = 4 if cfg.store_complex else 2
    writer = ShardWriter(path, channels, stft.cfg.n_fft // 2 + 1, cfg.block_frames, cfg.codec)
    stats, sources = [], []
    try:
        for i in items:
            job = dict(jobs[i])
            try:
                reverb, clean = _pair(job, i, i, cfg, rirs, pairs, stft.cfg.sample_rate, seed)
            except DereverbError as e:  # found only when decoding (NaN samples, a broken file)
                if cfg.data.strict:
                    raise
                warnings.warn(f"{e}; item {job['name']} skipped", stacklevel=2)
                continue
            feats = _features(reverb, clean, stft, cfg)
            writer.add(job["name"], feats)
            stats.append(feature_stats(feats[:, 0]))
            sources.append(job)
        digest = writer.close()
    except BaseException as e:
        writer.abort(e)
        raise
    summary = {k: np.sum([s[k] for s in stats], axis=0).tolist() for k in ("count", "sum", "sumsq")}
    return {"file": path.name, "sha256": digest, "bytes": path.stat().st_size, "items": len(sources),
            "frames": summary["count"], "stats": summary, "sources": sources}
