"""Hostile files and fault injection shared by test_hostile*.py, test_fuzz.py and test_crash.py.

Every hostile audio file is made here from generated signals (no data outside the repository).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dereverb import checkpoint
from dereverb.cli import main
from dereverb.config import FeatureConfig, StftConfig
from dereverb.model import DereverbModel, model_config

REPO = Path(__file__).resolve().parents[1]
RIR = REPO / "examples" / "rir_st_margarets_church.wav"
SPEECH = REPO / "examples" / "speech_1688-142285-0003.flac"

# name: (frames at the file's rate, rate, channels, subtype); all 1 s long unless noted
VALID = {
    "good.wav": (16000, 16000, 1, "PCM_16"),
    "one_sample.wav": (1, 16000, 1, "PCM_16"),
    "zeros.wav": (16000, 16000, 1, "PCM_16"),
    "dc_offset.wav": (16000, 16000, 1, "PCM_16"),
    "clipped.wav": (16000, 16000, 1, "PCM_16"),
    "8k.wav": (8000, 8000, 1, "PCM_16"),
    "192k.wav": (192000, 192000, 1, "PCM_24"),
    "16ch.wav": (16000, 16000, 16, "PCM_16"),
    "pcm24.wav": (16000, 16000, 1, "PCM_24"),
    "float32.wav": (16000, 16000, 1, "FLOAT"),
    "float64.wav": (16000, 16000, 1, "DOUBLE"),
    "u8.wav": (16000, 16000, 1, "PCM_U8"),
    "flac_named.wav": (16000, 16000, 1, "PCM_16"),  # FLAC content behind a .wav name
    "wav_named.flac": (16000, 16000, 1, "PCM_16"),  # WAV content behind a .flac name
    "truncated_data.wav": (8000, 16000, 1, "PCM_16"),  # header promises 16000 frames, 8000 remain
}
# name: what the one-line error must say
INVALID = {
    "truncated_header.wav": "not a readable audio file",
    "text.wav": "not a readable audio file",
    "mp4_named.wav": "not a readable audio file",  # an unsupported container
    "zero_samples.wav": "contains no audio samples",
    "nan.wav": "NaN or infinite",
    "inf.wav": "NaN or infinite",
}


def speechlike(frames: int, rate: int, rng: np.random.Generator, channels: int = 0) -> np.ndarray:
    """A voiced, amplitude-modulated tone plus noise, peak ~0.35: ``(S,)`` or ``(S, C)``."""
    t = np.arange(frames) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x = x + 0.02 * rng.standard_normal(frames)
    if not channels:
        return x
    return np.stack([x * (0.4 + 0.6 * k / channels) for k in range(channels)], 1)  # (S, C)


def make_library(root: Path) -> Path:
    """Write every :data:`VALID` and :data:`INVALID` file into ``root``; returns ``root``."""
    rng = np.random.default_rng(8)
    root.mkdir(parents=True, exist_ok=True)
    for name, (frames, rate, channels, subtype) in VALID.items():
        x = speechlike(max(frames, 16000) if name == "truncated_data.wav" else frames, rate, rng,
                       channels if channels > 1 else 0)
        if name == "one_sample.wav":
            x = np.array([0.5])
        elif name == "zeros.wav":
            x = np.zeros(frames)
        elif name == "dc_offset.wav":
            x = 0.5 + 0.3 * x
        elif name == "clipped.wav":
            x = np.clip(10 * x, -1.0, 1.0)  # flat tops at full scale
        fmt = "FLAC" if name == "flac_named.wav" else "WAV"
        sf.write(root / name, x, rate, subtype=subtype, format=fmt)
    raw = (root / "good.wav").read_bytes()
    (root / "truncated_data.wav").write_bytes((root / "truncated_data.wav").read_bytes()[: 44 + 2 * 8000])
    (root / "truncated_header.wav").write_bytes(raw[:30])
    (root / "text.wav").write_text("these are not the samples you are looking for\n")
    (root / "mp4_named.wav").write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(200))
    sf.write(root / "zero_samples.wav", np.zeros(0), 16000, subtype="PCM_16")
    for name, bad in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        x = speechlike(16000, 16000, rng)
        x[5000] = bad
        sf.write(root / name, x, 16000, subtype="FLOAT")
    sf.write(root / "aiff.aiff", speechlike(16000, 16000, rng), 16000, subtype="PCM_16", format="AIFF")
    sf.write(root / "wav_named.mp3", speechlike(16000, 16000, rng), 16000, subtype="PCM_16", format="WAV")
    sf.write(root / "wav_named.m4a", speechlike(16000, 16000, rng), 16000, subtype="PCM_16", format="WAV")
    sf.write(root / "wavex.wav", speechlike(16000, 16000, rng, 2), 16000, subtype="PCM_24", format="WAVEX")
    if "MP3" in sf.available_formats():  # libsndfile >= 1.1 encodes MP3 (LAME)
        sf.write(root / "talk.mp3", speechlike(16000, 16000, rng, 2), 16000, format="MP3")
    return root


def copy_files(lib: Path, names, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(lib / name, dst / name)
    return dst


def rir_variants(root: Path) -> Path:
    """The example church RIR as 8 kHz, 192 kHz, 16-channel, 24-bit, float64 and FLAC-named-.wav files."""
    h, rate = sf.read(RIR, always_2d=True)
    h = h[:, 0]
    root.mkdir(parents=True, exist_ok=True)
    from dereverb import audio

    sf.write(root / "rir_8k.wav", audio.resample(h.astype(np.float32), rate, 8000), 8000, subtype="PCM_16")
    sf.write(root / "rir_192k.wav", audio.resample(h.astype(np.float32), rate, 192000), 192000, subtype="PCM_24")
    sf.write(root / "rir_16ch.wav", np.repeat(h[:, None], 16, 1), rate, subtype="PCM_24")
    sf.write(root / "rir_pcm24.wav", h, rate, subtype="PCM_24")
    sf.write(root / "rir_float64.wav", h, rate, subtype="DOUBLE")
    sf.write(root / "rir_flac_named.wav", h, rate, subtype="PCM_24", format="FLAC")
    return root


# --- checks ----------------------------------------------------------------------------------------


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (symlinks not followed)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def temp_files(root: Path) -> list[str]:
    """Temporary files (``*.tmp``) anywhere under ``root``: a write that was not cleaned up."""
    return sorted(str(Path(d) / f) for d, _, files in os.walk(root) for f in files if f.endswith(".tmp"))


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``dereverb ARGS`` in this process; ``(exit code, stdout, stderr)``."""
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit code 2, one ``dereverb: error:`` line (the last), no traceback; returns that line."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("dereverb: error: ")]
    assert code == 2, err
    assert "Traceback" not in err and len(errors) == 1 and lines[-1] == errors[0], err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def tiny_model_file(path: Path) -> Path:
    """A random tiny model saved with :func:`dereverb.checkpoint.save`."""
    torch.manual_seed(2)
    model = DereverbModel(StftConfig(), FeatureConfig(), model_config("tiny"))
    with torch.no_grad():
        model.normalizer.mean.fill_(-45.0)
        model.normalizer.std.fill_(18.0)
    checkpoint.save(path, model)
    return path


# --- fault injection -------------------------------------------------------------------------------


def deny_read(monkeypatch, *paths: Path) -> None:
    """Make ``paths`` unreadable for this process even as root: ``os.access`` says no and opening
    them (Python ``open`` or libsndfile) fails with EACCES, as ``chmod 000`` does for a user."""
    denied = {str(Path(p).resolve()) for p in paths}

    def is_denied(p) -> bool:
        try:
            return str(Path(os.fspath(p)).resolve()) in denied
        except TypeError:  # a file descriptor
            return False

    real_access, real_open, real_sf_init = os.access, builtins.open, sf.SoundFile.__init__

    def access(p, mode, *a, **k):
        return False if is_denied(p) and mode & os.R_OK else real_access(p, mode, *a, **k)

    def fail(p):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(p))

    def opener(p, *a, **k):
        return fail(p) if is_denied(p) else real_open(p, *a, **k)

    def sf_init(self, file, *a, **k):
        return fail(file) if is_denied(file) else real_sf_init(self, file, *a, **k)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(builtins, "open", opener)
    monkeypatch.setattr(io, "open", opener)
    monkeypatch.setattr(sf.SoundFile, "__init__", sf_init)


@contextlib.contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """RLIMIT_FSIZE for this process: any write past ``nbytes`` in any file fails with EFBIG,
    a real kernel error reaching every writer (numpy, libsndfile, safetensors, torch, zip)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if hard != resource.RLIM_INFINITY and hard < nbytes:
        pytest.skip("RLIMIT_FSIZE hard limit too low here")
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def enospc_after(monkeypatch, frames: int) -> None:
    """``soundfile.SoundFile.write`` raises ENOSPC once ``frames`` frames were written in all."""
    real = sf.SoundFile.write
    state = {"left": frames}

    def write(self, data):
        n = len(data)
        if n > state["left"]:
            real(self, data[: state["left"]])
            state["left"] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        state["left"] -= n
        return real(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", write)


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "96k", read_only: bool = False) -> Iterator[Path]:
    """A real tiny (or read-only) filesystem at ``where`` (``mount -t tmpfs``); skips where
    mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
