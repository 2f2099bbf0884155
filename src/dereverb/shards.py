"""Shard files of the feature store (:mod:`dereverb.store`): dB values as 16-bit codes, compressed
in blocks, read through a memory map.

A shard holds items ``(C, F, T)`` as ``uint16`` codes cut into blocks of ``block_frames`` frames;
each block is an independent Blosc frame (or raw bytes for codec ``"none"``), followed by a footer
of block offsets, a JSON item table and a trailer.  A random crop decodes only the blocks it
touches.  What a code means is the store's business (``store.json``): with a dB step ``quant_db``
the dB channels hold ``round((dB - floor_db) / quant_db)``; with ``quant_db = 0`` (lossless, and
every format-1 store) and for the phase channels they hold the bits of a float16.  Serving a crop
is a decode and one pass of contiguous float32 arithmetic (:func:`codes_to_magnitude`).

Blocks are stored frequency-major, ``(C, F, frames)``, the layout crops are served in (copying a
time-major block into a ``(C, F, T)`` crop transposes it, which cost more than decoding).  Format-1
shards hold time-major ``(frames, C, F)`` float16 blocks; they are read and transposed per block.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

from . import audio
from .errors import DereverbError

MAGIC = b"DRVSHRD1"
TRAILER = struct.Struct("<QQ8s")  # offsets position, json position, magic
CODECS = ("zstd", "lz4hc", "none")
CODES = 1 << 16  # uint16
TOP_DB = 80.0  # the codes must reach this (a full-scale 8192-point frame peaks near 72 dB)


# --- dB <-> codes ------------------------------------------------------------------------------


def check_quant(quant_db: float, floor_db: float) -> None:
    """Raise unless ``quant_db`` is 0 (float16) or a step whose 65 536 codes span ``floor_db`` to
    at least :data:`TOP_DB`."""
    if quant_db < 0 or (quant_db > 0 and floor_db + (CODES - 1) * quant_db < TOP_DB):
        least = (TOP_DB - floor_db) / (CODES - 1)
        raise DereverbError(f"store.quant_db must be 0 (lossless float16) or at least {least:.4f} dB "
                            f"(65536 codes from the {floor_db:g} dB floor up to {TOP_DB:g} dB), got {quant_db}")


def quantize(db: np.ndarray, quant_db: float, floor_db: float) -> np.ndarray:
    """dB values (any shape) -> ``uint16`` codes of the same shape.

    ``quant_db > 0``: ``round((db - floor_db) / quant_db)``, clipped to the code range (error at
    most ``quant_db / 2``); ``quant_db == 0``: the float16 bit patterns.
    """
    if quant_db == 0:
        return float16_codes(db)
    codes = np.rint((np.asarray(db, np.float64) - floor_db) / quant_db)
    return np.clip(codes, 0, CODES - 1).astype(np.uint16)


def float16_codes(x: np.ndarray) -> np.ndarray:
    """Values (e.g. phases in radians) -> the ``uint16`` bit patterns of their float16 rounding."""
    return np.asarray(x).astype(np.float16).view(np.uint16)


def dequantize(codes: np.ndarray, quant_db: float, floor_db: float, scale: float = 1.0) -> np.ndarray:
    """Inverse of :func:`quantize` times ``scale``: codes (any shape) -> float32 ``scale * dB``.

    Contiguous float32 arithmetic: converting, scaling and ``exp`` of a 2 s crop pair took 110 us,
    a gather from a 65 536-entry magnitude table 170-410 us (measured side by side, busy machine).
    """
    if quant_db == 0:
        out = codes.view(np.float16).astype(np.float32)
        out *= np.float32(scale)
    else:
        out = codes.astype(np.float32)
        out *= np.float32(quant_db * scale)
        out += np.float32(floor_db * scale)
    return out


def codes_to_magnitude(codes: np.ndarray, quant_db: float, floor_db: float) -> np.ndarray:
    """dB codes (any shape) -> float32 linear magnitudes ``10 ** (dB / 20)``."""
    out = dequantize(codes, quant_db, floor_db, np.log(10.0) / 20.0)
    return np.exp(out, out=out)


# --- blocks ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _blosc():
    try:
        from numcodecs import blosc
    except ImportError as e:
        raise DereverbError("the feature store needs numcodecs: pip install 'dereverb[store]'") from e
    blosc.use_threads = False  # no blosc thread pool: DataLoader workers fork
    return blosc


def encode_block(block: np.ndarray, codec: str) -> bytes:
    """``(C, F, frames)`` uint16 codes -> bytes: Blosc level 9 with byte shuffle, or raw."""
    data = np.ascontiguousarray(block, dtype=np.uint16)
    if codec == "none":
        return data.tobytes()
    return bytes(_blosc().compress(data, codec.encode(), 9, _blosc().SHUFFLE))


def decode_block(buf: np.ndarray, codec: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`encode_block`: bytes (a ``uint8`` view) -> ``uint16`` codes of ``shape``."""
    nbytes = 2 * int(np.prod(shape))
    raw = buf
    if codec != "none":
        # Blosc1 header: bytes 4-8 hold the decompressed size (little-endian uint32)
        if len(buf) < 16 or int.from_bytes(bytes(buf[4:8]), "little") != nbytes:
            raise DereverbError(f"a shard block does not hold {shape} codes; rerun `dereverb prepare`")
        raw = np.empty(nbytes, np.uint8)
        _blosc().decompress(buf, raw)  # straight into the array, no intermediate bytes object
    if len(raw) != nbytes:
        raise DereverbError(f"a shard block holds {len(raw)} bytes, not {shape} codes; rerun `dereverb prepare`")
    return np.frombuffer(raw, dtype=np.uint16).reshape(shape)


# --- writing -----------------------------------------------------------------------------------


class ShardWriter:
    """Write items into one shard file atomically; the final name appears only after
    :meth:`close` has re-read the file, checked its sha256 and decoded every block."""

    def __init__(self, path: Path, channels: int, bins: int, block_frames: int, codec: str):
        if codec not in CODECS:
            raise DereverbError(f"shard codec must be one of {list(CODECS)}, got {codec!r}")
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

    def add(self, name: str, codes: np.ndarray) -> None:
        """Append an item: ``(C, F, T)`` uint16 codes."""
        if codes.dtype != np.uint16 or codes.shape[:2] != (self.channels, self.bins):
            raise ValueError(f"shard item must be uint16 ({self.channels}, {self.bins}, T), "
                             f"got {codes.dtype} {codes.shape}")
        self.items.append({"name": name, "frames": int(codes.shape[2]), "block": len(self.offsets) - 1})
        for s in range(0, codes.shape[2], self.block_frames):
            buf = encode_block(codes[:, :, s : s + self.block_frames], self.codec)
            self._write(buf)
            self.offsets.append(self.offsets[-1] + len(buf))

    def close(self) -> str:
        """Finish, verify and rename; returns the file's sha256."""
        try:
            table = json.dumps({"channels": self.channels, "bins": self.bins, "codec": self.codec, "layout": "cft",
                                "block_frames": self.block_frames, "items": self.items}).encode()
            offsets_pos = self.offsets[-1]
            self._write(np.asarray(self.offsets, dtype="<i8").tobytes())
            self._write(table)
            self._write(TRAILER.pack(offsets_pos, offsets_pos + 8 * len(self.offsets), MAGIC))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            digest = self._sha.hexdigest()
            if audio.sha256_file(self._tmp) != digest or len(Shard(self._tmp).check()) != len(self.items):
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


# --- reading -----------------------------------------------------------------------------------


class Shard:
    """Random access to one shard file through a read-only memory map."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:  # a plain ndarray view: slicing a np.memmap builds a memmap object per slice
            self.map = np.memmap(self.path, dtype=np.uint8, mode="r").view(np.ndarray)
        except (OSError, ValueError) as e:
            raise DereverbError(f"{self.path}: cannot open shard ({e})") from e
        if len(self.map) < TRAILER.size:
            raise DereverbError(f"{self.path}: not a dereverb shard (too short); rerun `dereverb prepare`")
        off_pos, json_pos, magic = TRAILER.unpack(bytes(self.map[-TRAILER.size :]))
        if magic != MAGIC or not off_pos <= json_pos <= len(self.map) - TRAILER.size:
            raise DereverbError(f"{self.path}: not a dereverb shard (bad footer); rerun `dereverb prepare`")
        self.offsets = np.frombuffer(self.map[off_pos:json_pos], dtype="<i8").tolist()
        table = json.loads(bytes(self.map[json_pos : len(self.map) - TRAILER.size]))
        self.items, self.codec = table["items"], table["codec"]
        self.channels, self.bins, self.block_frames = table["channels"], table["bins"], table["block_frames"]
        self.time_major = table.get("layout", "tcf") == "tcf"  # format-1 shards

    def read(self, item: int, start: int, frames: int) -> np.ndarray:
        """Frames ``[start, start + frames)`` of an item: ``(C, F, n)`` uint16 codes, ``n <= frames``
        (fewer at its end)."""
        it, bf = self.items[item], self.block_frames
        stop = min(start + frames, it["frames"])
        out = np.empty((self.channels, self.bins, max(stop - start, 0)), np.uint16)
        for b in range(start // bf, -(-stop // bf)):
            lo = b * bf
            block = self._block(it["block"] + b, min(bf, it["frames"] - lo))  # (C, F, frames)
            a, z = max(start, lo), min(stop, lo + bf)
            out[:, :, a - start : z - start] = block[:, :, a - lo : z - lo]
        return out

    def _block(self, b: int, frames: int) -> np.ndarray:
        """Block ``b`` of ``frames`` frames: ``(C, F, frames)`` uint16."""
        buf = self.map[self.offsets[b] : self.offsets[b + 1]]
        if self.time_major:
            return decode_block(buf, self.codec, (frames, self.channels, self.bins)).transpose(1, 2, 0)
        return decode_block(buf, self.codec, (self.channels, self.bins, frames))

    def check(self) -> list[int]:
        """Decode every block; returns each item's frame count (raises if one is inconsistent)."""
        for it in self.items:
            for b in range(-(-it["frames"] // self.block_frames)):
                self._block(it["block"] + b, min(self.block_frames, it["frames"] - b * self.block_frames))
        return [it["frames"] for it in self.items]
