"""All audio file I/O: reading (whole files or a seeked segment), resampling, channel handling,
atomic writing, block streaming.

Arrays are float32 ``(channels, samples)`` in [-1, 1] full scale throughout dereverb.  Every write
goes to a temporary file in the destination folder and is renamed into place, so a crash or a full
disk never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import DereverbError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (read without decoding the samples)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def _check_input_path(path: Path) -> None:
    if not path.exists():
        raise DereverbError(f"{path}: no such file")
    if path.is_dir():
        raise DereverbError(f"{path}: is a folder, expected an audio file")
    if not os.access(path, os.R_OK):
        raise DereverbError(f"{path}: permission denied (cannot read)")


def info(path: str | Path) -> AudioInfo:
    """Read the header of ``path``; unreadable or empty files raise :class:`DereverbError`."""
    path = Path(path)
    _check_input_path(path)
    try:
        i = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise DereverbError(f"{path}: not a readable audio file ({_short(e)})") from e
    if i.frames <= 0:
        raise DereverbError(f"{path}: contains no audio samples")
    return AudioInfo(path, int(i.samplerate), int(i.channels), int(i.frames), i.format, i.subtype)


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[-1] if str(e).strip() else e.__class__.__name__


def read(
    path: str | Path,
    sample_rate: int | None = None,
    channel: int | None = None,
    allow_nonfinite: bool = False,
) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``(channels, samples)``.

    Args:
        sample_rate: resample to this rate (Hz) with soxr; ``None`` keeps the file's rate.
        channel: keep only this channel (result is ``(1, samples)``).
        allow_nonfinite: if False, NaN/Inf samples are an error naming the file.

    Returns:
        ``(audio, rate)`` with ``audio`` of shape ``(C, S)``.
    """
    path = Path(path)
    meta = info(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (S, C)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise DereverbError(f"{path}: cannot decode audio ({_short(e)})") from e
    audio = np.ascontiguousarray(data.T)  # (C, S)
    if audio.shape[1] == 0:
        raise DereverbError(f"{path}: contains no audio samples")
    if channel is not None:
        if not 0 <= channel < meta.channels:
            raise DereverbError(f"{path}: has {meta.channels} channel(s), no channel {channel}")
        audio = audio[channel : channel + 1]
    if not allow_nonfinite and not np.isfinite(audio).all():
        raise DereverbError(f"{path}: contains NaN or infinite samples")
    if sample_rate is not None and sample_rate != rate:
        audio = resample(audio, rate, sample_rate)
        rate = sample_rate
    return audio, int(rate)


def read_segment(path: str | Path, start: float, n: int, sample_rate: int) -> np.ndarray:
    """``n`` samples at ``sample_rate`` Hz from ``start`` s of a file (channel 0): float32 ``(n,)``,
    zero padded past the file's end.

    Seeks instead of decoding the whole file (a training crop costs the crop, not the file);
    resamples only the piece that is read.  NaN or infinite samples in the piece raise
    :class:`DereverbError`.
    """
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            f.seek(min(f.frames, int(round(start * rate))))
            need = math.ceil(n * rate / sample_rate) + (16 if rate != sample_rate else 0)
            x = f.read(need, dtype="float32", always_2d=True)[:, 0]
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise DereverbError(f"{path}: cannot decode audio ({e})") from e
    if not np.isfinite(x).all():
        raise DereverbError(f"{path}: contains NaN or infinite samples")
    if rate != sample_rate and len(x):
        x = resample(x, rate, sample_rate)
    return np.pad(x[:n], (0, max(0, n - len(x))))


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample ``(C, S)`` or ``(S,)`` float audio from ``rate_in`` to ``rate_out`` Hz (soxr HQ).

    The output has ``round(S * rate_out / rate_in)`` samples.
    """
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32)
    y = soxr.resample(np.ascontiguousarray(x.T), rate_in, rate_out, quality="HQ")  # (S', C)
    return np.ascontiguousarray(y.T, dtype=np.float32)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average channels: ``(C, S) -> (1, S)``."""
    return audio.mean(axis=0, keepdims=True)


def format_for(path: str | Path) -> str:
    """libsndfile format name for a path's suffix (WAV, FLAC, OGG)."""
    suffix = Path(path).suffix.lower()
    if suffix not in AUDIO_SUFFIXES:
        raise DereverbError(
            f"{path}: unsupported output format {suffix or '(none)'!r}; use .wav, .flac or .ogg"
        )
    return suffix[1:].upper()


def compatible_subtype(path: str | Path, subtype: str | None) -> str:
    """``subtype`` if the format of ``path`` can store it, else that format's default."""
    fmt = format_for(path)
    if subtype and sf.check_format(fmt, subtype):
        return subtype
    return sf.default_subtype(fmt)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise DereverbError(f"{folder}: output folder does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise DereverbError(f"{folder}: cannot write here ({e.strerror})") from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp_path, path)
    except OSError as e:  # a full disk, a quota, an I/O error: name the file being written
        tmp_path.unlink(missing_ok=True)
        raise DereverbError(f"{path}: write failed ({e.strerror or _short(e)})") from e
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write(
    path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str | None = None
) -> None:
    """Write ``(C, S)`` or ``(S,)`` float audio atomically.

    ``subtype`` (e.g. ``"PCM_24"``, ``"FLOAT"``) defaults to the format's default; one the format
    cannot hold falls back to that default.  Integer subtypes clip at full scale, so callers that
    care (``enhance``) rescale first.
    """
    x = np.asarray(audio, dtype=np.float32)
    x = x[None] if x.ndim == 1 else x
    fmt = format_for(path)
    sub = compatible_subtype(path, subtype)
    with atomic_path(path) as tmp:
        try:
            sf.write(str(tmp), np.ascontiguousarray(x.T), sample_rate, subtype=sub, format=fmt)
        except OSError as e:
            raise DereverbError(f"{path}: write failed ({e.strerror or _short(e)})") from e
        except (sf.LibsndfileError, RuntimeError) as e:
            raise DereverbError(f"{path}: write failed ({_short(e)})") from e


def blocks(path: str | Path, block_frames: int, overlap: int = 0) -> Iterator[np.ndarray]:
    """Stream a file as float32 ``(C, n)`` blocks of ``block_frames`` samples.

    Consecutive blocks share ``overlap`` samples; the last block may be shorter.  Memory stays
    bounded by one block whatever the file's length.
    """
    path = Path(path)
    info(path)
    try:
        for block in sf.blocks(
            str(path), blocksize=block_frames, overlap=overlap, dtype="float32", always_2d=True
        ):
            yield np.ascontiguousarray(block.T)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise DereverbError(f"{path}: cannot decode audio ({_short(e)})") from e


class BlockWriter:
    """Write a file block by block, atomically: the final name appears only after :meth:`close`.

    Use as a context manager; an exception inside the ``with`` removes the temporary file::

        with BlockWriter(dst, rate, channels=2, subtype="PCM_16") as w:
            for block in blocks_of_shape_C_n:
                w.write(block)
    """

    def __init__(self, path: str | Path, sample_rate: int, channels: int, subtype: str | None = None):
        self.path = Path(path)
        self._fmt = format_for(self.path)
        self._subtype = compatible_subtype(self.path, subtype)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        try:
            self._file = sf.SoundFile(
                str(self._tmp), "w", sample_rate, channels, self._subtype, format=self._fmt
            )
        except BaseException as e:
            self._ctx.__exit__(type(e), e, e.__traceback__)
            raise

    def write(self, block: np.ndarray) -> None:
        """Append a ``(C, n)`` float block."""
        try:
            self._file.write(np.ascontiguousarray(np.asarray(block, dtype=np.float32).T))
        except OSError as e:
            raise DereverbError(f"{self.path}: write failed ({e.strerror or _short(e)})") from e
        except (sf.LibsndfileError, RuntimeError) as e:  # libsndfile's own report of a failed write
            raise DereverbError(f"{self.path}: write failed ({_short(e)})") from e

    def __enter__(self) -> "BlockWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._file.close()
        except Exception as e:  # a close that fails (full disk) must not rename
            exc_type, exc, tb = type(e), e, e.__traceback__
            self._ctx.__exit__(exc_type, exc, tb)
            raise DereverbError(f"{self.path}: write failed ({_short(e)})") from e
        self._ctx.__exit__(exc_type, exc, tb)


def list_audio(root: str | Path, suffixes: tuple[str, ...] = AUDIO_SUFFIXES) -> list[Path]:
    """All audio files under ``root`` (recursive, sorted, symlink loops ignored).

    A single file is returned as a one-element list.
    """
    root = Path(root)
    if not root.exists():
        raise DereverbError(f"{root}: no such file or folder")
    if root.is_file():
        return [root]
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # symlink loop: this folder was already walked
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(suffixes))
    return found
