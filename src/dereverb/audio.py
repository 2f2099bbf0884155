"""All audio file I/O: reading (whole files or a seeked segment), resampling, channel handling,
atomic writing, block streaming.

Arrays are float32 ``(channels, samples)`` in [-1, 1] full scale throughout dereverb.  Every write
goes to a temporary file in the destination folder and is renamed into place, so a crash or a full
disk never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import DereverbError

# Containers by file suffix (libsndfile's major formats): what a file name asks to be written as.
_CONTAINERS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".opus": "OGG", ".mp3": "MP3",
               ".aiff": "AIFF", ".aif": "AIFF", ".aifc": "AIFF", ".au": "AU", ".caf": "CAF", ".w64": "W64",
               ".rf64": "RF64", ".sph": "NIST"}
FORMATS = {s: f for s, f in _CONTAINERS.items() if f in sf.available_formats()}  # MP3 needs libsndfile >= 1.1
# What enhance, evaluate, make-testset and info take from a folder: every container read and written here.
READ_SUFFIXES = tuple(FORMATS)
# What training data folders take (speech, RIRs, paired folders).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
# Audio formats libsndfile does not decode: a folder's files of these are skipped with a warning.
FOREIGN_SUFFIXES = (".aac", ".ac3", ".amr", ".ape", ".m4a", ".m4b", ".mka", ".mp4", ".webm", ".wma", ".wv")
# Lossy codecs and the one container each can be written in (check_format accepts MP3 in WAV; writing fails).
LOSSY = {"VORBIS": "OGG", "OPUS": "OGG", "MPEG_LAYER_I": "MP3", "MPEG_LAYER_II": "MP3", "MPEG_LAYER_III": "MP3"}
# Where a format cannot hold the input's subtype: the nearest it may (lossy -> 16 bits, float -> 24).
NEAREST = {**dict.fromkeys(LOSSY, "PCM_16"), "FLOAT": "PCM_24", "DOUBLE": "PCM_24", "PCM_32": "PCM_24"}
# A container written in the variant the input came in when the name allows it (WAVEX or RF64 named .wav).
VARIANTS = {"WAV": ("WAVEX", "RF64")}
# The codec a suffix implies where it is not its container's default (.opus: Opus in Ogg, not Vorbis).
SUFFIX_SUBTYPES = {".opus": "OPUS"}
# libsndfile's log of a WAV/AIFF data chunk shorter than its header says: "data : 32000 (should be 16000)".
_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (read without decoding the samples)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    header_frames: int = 0  # frames the header promises; more than ``frames`` in a truncated file

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate

    @property
    def truncated(self) -> str:
        """``""``, or a sentence for a warning when the file holds less than its header promises
        (a cut-off download or copy: the readable part is all there is)."""
        if self.header_frames <= self.frames:
            return ""
        return (f"{self.path}: truncated: its header promises {self.header_frames / self.sample_rate:.2f} s, "
                f"the file holds {self.duration:.2f} s; only that part is used")


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
    return AudioInfo(path, int(i.samplerate), int(i.channels), int(i.frames), i.format, i.subtype,
                     _header_frames(i.frames, i.extra_info or ""))


def _header_frames(frames: int, log: str) -> int:
    """Frames a WAV/AIFF header promises, from libsndfile's log of a data chunk cut short.  Sizes of
    2 GiB and more are the placeholders of a streamed recording (length unknown), not a promise."""
    m = _SHORT_CHUNK.search(log)
    promised, present = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if not present or promised <= present or promised >= 0x7FFF0000:
        return frames
    return round(frames * promised / present)


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
    """libsndfile format name for a path's suffix (WAV, FLAC, OGG, MP3, AIFF, ...: :data:`FORMATS`)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DereverbError(
            f"{path}: unsupported output format {suffix or '(none)'!r}; use {', '.join(FORMATS)}"
        )
    return FORMATS[suffix]


def output_format(path: str | Path, like: str | None = None) -> str:
    """The format to write ``path`` in: the one its suffix names, or ``like`` (the input's format)
    when that is a variant of it, so a WAVEX or RF64 input named ``.wav`` keeps its container."""
    fmt = format_for(path)
    return like if like in VARIANTS.get(fmt, ()) else fmt


def compatible_subtype(path: str | Path, subtype: str | None, sample_rate: int | None = None,
                       channels: int = 1, fmt: str | None = None) -> str:
    """The subtype to write ``path`` with (format ``fmt``, default: its suffix's).

    ``subtype`` (the input's) where the format holds it; else the nearest it does (:data:`NEAREST`:
    16-bit PCM from a lossy codec, MP3, Vorbis or Opus, whose noise more bits would only store;
    24-bit from float or 32-bit, in FLAC); else the format's default.  With ``sample_rate`` the choice is tried on a writer in memory, and a format
    that cannot hold that rate or channel count at all (MP3 above 48 kHz, Opus at 44.1 kHz) is one
    clear error, raised before any work.
    """
    fmt = fmt or format_for(path)
    forced = SUFFIX_SUBTYPES.get(Path(path).suffix.lower())
    wanted = [forced] if forced else [subtype, NEAREST.get(subtype), sf.default_subtype(fmt)]
    usable = [c for c in dict.fromkeys(wanted) if c and LOSSY.get(c, fmt) == fmt and sf.check_format(fmt, c)]
    if sample_rate is None:
        return usable[0] if usable else sf.default_subtype(fmt)
    reason = f"no {forced} in {fmt}" if forced and not usable else ""
    for candidate in usable:
        try:
            with sf.SoundFile(io.BytesIO(), "w", sample_rate, channels, candidate, format=fmt):
                return candidate
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
            reason = _reason(e)
    raise DereverbError(f"{path}: {fmt} cannot hold {channels}-channel audio at {sample_rate} Hz ({reason}); "
                        "choose another output format")


def _reason(e: Exception) -> str:
    """libsndfile's own words, without its "Error opening <object>:" preamble."""
    text = getattr(e, "error_string", None) or _short(e)
    return text.removeprefix("Error : ").strip()


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    cannot hold is replaced (:func:`compatible_subtype`).  Integer subtypes clip at full scale, so
    callers that care (``enhance``) rescale first.
    """
    x = np.asarray(audio, dtype=np.float32)
    x = x[None] if x.ndim == 1 else x
    fmt = format_for(path)
    sub = compatible_subtype(path, subtype, sample_rate, x.shape[0], fmt)
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

    def __init__(self, path: str | Path, sample_rate: int, channels: int, subtype: str | None = None,
                 like: str | None = None):
        """``subtype``: the input's, replaced where the format cannot hold it (:func:`compatible_subtype`);
        ``like``: the input's format, kept where it is a variant of the name's (:func:`output_format`)."""
        self.path = Path(path)
        self._fmt = output_format(self.path, like)
        self._subtype = compatible_subtype(self.path, subtype, sample_rate, channels, self._fmt)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        try:
            self._file = sf.SoundFile(
                str(self._tmp), "w", sample_rate, channels, self._subtype, format=self._fmt
            )
        except (sf.LibsndfileError, RuntimeError) as e:
            self._ctx.__exit__(type(e), e, e.__traceback__)
            raise DereverbError(f"{self.path}: cannot write {self._fmt}/{self._subtype} ({_reason(e)})") from e
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


def list_audio(root: str | Path, suffixes: tuple[str, ...] = AUDIO_SUFFIXES,
               warn_foreign: bool = False) -> list[Path]:
    """All audio files under ``root`` (recursive, sorted, symlink loops ignored) whose suffix is one
    of ``suffixes``; ``warn_foreign``: a warning names each file of a format libsndfile cannot
    decode (:data:`FOREIGN_SUFFIXES`: AAC, M4A, WMA, ...), which is left out.

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
        for f in sorted(filenames) if warn_foreign else ():
            if f.lower().endswith(FOREIGN_SUFFIXES):
                warnings.warn(f"{Path(dirpath) / f}: skipped: dereverb cannot decode {Path(f).suffix} audio; "
                              "convert it to WAV or FLAC (e.g. with ffmpeg)", stacklevel=2)
    return found
