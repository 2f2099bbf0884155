"""Audio I/O: round trips per subtype, resampling, channels, atomic writes, blocks, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from dereverb import audio
from dereverb.errors import DereverbError

# subtype -> (suffix, max abs round-trip error for a signal in [-0.9, 0.9])
SUBTYPES = {
    "PCM_16": (".wav", 1 / 2**15),
    "PCM_24": (".wav", 1 / 2**23),
    "PCM_32": (".wav", 1 / 2**31 + 1e-7),
    "FLOAT": (".wav", 0.0),
    "DOUBLE": (".wav", 0.0),
    "FLAC16": (".flac", 1 / 2**15),
}


@pytest.mark.parametrize("subtype", sorted(SUBTYPES))
def test_write_read_round_trip(tmp_path, rng, subtype):
    suffix, tol = SUBTYPES[subtype]
    sub = "PCM_16" if subtype == "FLAC16" else subtype
    x = rng.uniform(-0.9, 0.9, size=(2, 4000)).astype(np.float32)
    path = tmp_path / f"x{suffix}"
    audio.write(path, x, 16000, subtype=sub)
    y, sr = audio.read(path)
    assert sr == 16000 and y.shape == (2, 4000) and y.dtype == np.float32
    assert np.max(np.abs(y - x)) <= tol + 1e-9
    assert audio.info(path).subtype == sub


def test_ogg_round_trip_is_close(tmp_path, speech):
    x, sr = speech
    audio.write(tmp_path / "x.ogg", x[: sr * 2], sr)
    y, _ = audio.read(tmp_path / "x.ogg")
    assert y.shape[1] == sr * 2
    err = np.sqrt(np.mean((y[0] - x[: sr * 2]) ** 2) / np.mean(x[: sr * 2] ** 2))
    assert err < 0.3  # lossy, but the same signal


def test_multichannel_44k_24bit_reads_with_shape_and_rate(tmp_path, rng):
    x = rng.uniform(-0.5, 0.5, size=(44100, 3))
    path = tmp_path / "three.wav"
    sf.write(path, x, 44100, subtype="PCM_24")
    y, sr = audio.read(path)
    assert (sr, y.shape) == (44100, (3, 44100))
    i = audio.info(path)
    assert (i.channels, i.sample_rate, i.subtype, i.frames) == (3, 44100, "PCM_24", 44100)
    one, _ = audio.read(path, channel=2)
    np.testing.assert_allclose(one[0], y[2])


def test_resampling_keeps_a_tones_frequency():
    sr_in, sr_out, f0 = 44100, 16000, 1000.0
    t = np.arange(sr_in) / sr_in
    x = np.sin(2 * np.pi * f0 * t).astype(np.float32)
    y = audio.resample(x, sr_in, sr_out)
    assert y.shape == (sr_out,)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spectrum) * sr_out / len(y)
    assert abs(peak_hz - f0) <= 1.0
    # multichannel keeps channels apart
    y2 = audio.resample(np.stack([x, -x]), sr_in, sr_out)
    np.testing.assert_allclose(y2[0], -y2[1], atol=1e-6)


def test_read_resamples_on_request(tmp_path, speech):
    x, sr = speech
    audio.write(tmp_path / "s.wav", x, sr, subtype="FLOAT")
    y, rate = audio.read(tmp_path / "s.wav", sample_rate=8000)
    assert rate == 8000 and y.shape == (1, round(len(x) * 8000 / sr))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "out.wav"
    with pytest.raises(RuntimeError):
        with audio.atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    import os

    audio.write(tmp_path / "x.wav", np.zeros(10), 16000)
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.wav").stat().st_mode & 0o777 == 0o666 & ~mask


def test_blocks_and_block_writer_reproduce_the_file(tmp_path, rng):
    x = rng.uniform(-0.5, 0.5, size=(2, 10007)).astype(np.float32)
    src = tmp_path / "src.wav"
    audio.write(src, x, 16000, subtype="FLOAT")
    got = list(audio.blocks(src, 4096))
    assert [b.shape for b in got] == [(2, 4096), (2, 4096), (2, 1815)]
    dst = tmp_path / "dst.flac"
    with audio.BlockWriter(dst, 16000, channels=2, subtype="PCM_24") as w:
        for b in got:
            w.write(b)
    y, _ = audio.read(dst)
    assert np.max(np.abs(y - x)) < 1e-6


def test_block_writer_failure_leaves_no_file(tmp_path):
    dst = tmp_path / "dst.wav"
    with pytest.raises(ValueError):
        with audio.BlockWriter(dst, 16000, channels=1) as w:
            w.write(np.zeros((1, 100), np.float32))
            raise ValueError("stop")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.mkdir(), p)[1], "is a folder"),
        (lambda p: (p.write_text("hello, not audio"), p)[1], "not a readable audio file"),
        (lambda p: (sf.write(p, np.zeros((0, 1)), 16000), p)[1], "no audio samples"),
        (lambda p: (sf.write(p, np.array([0.1, np.nan, 0.2]), 16000, subtype="FLOAT"), p)[1], "NaN"),
    ],
    ids=["missing", "folder", "text", "empty", "nan"],
)
def test_bad_input_is_one_clear_error(tmp_path, make, message):
    path = make(tmp_path / "bad.wav")
    with pytest.raises(DereverbError, match=message) as e:
        audio.read(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_unsupported_output_format(tmp_path):
    with pytest.raises(DereverbError, match="unsupported output format"):
        audio.write(tmp_path / "x.mp4", np.zeros(10), 16000)


def test_list_audio_recurses_and_survives_symlink_loops(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ["a/x.wav", "a/b/y.flac", "a/b/z.txt"]:
        (tmp_path / p).touch()
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path / "a")
    found = [p.relative_to(tmp_path).as_posix() for p in audio.list_audio(tmp_path)]
    assert found == ["a/x.wav", "a/b/y.flac"]


def test_read_segment_seeks_resamples_and_pads(tmp_path, speech):
    """A segment of a 22.05 kHz file at 16 kHz is that part of the whole file resampled (edges
    aside, where the resampler sees less context); past the end it is zero padded; bad files and
    NaN in the segment are one clear error."""
    x, sr = speech
    path = tmp_path / "b.flac"
    audio.write(path, audio.resample(x[: int(2.5 * sr)], sr, 22050), 22050)
    seg = audio.read_segment(path, 1.0, 8000, 16000)
    full = audio.read(path, 16000)[0][0]
    assert seg.shape == (8000,) and seg.dtype == np.float32
    assert np.abs(seg[100:-100] - full[16100:23900]).max() < 0.02
    tail = audio.read_segment(path, 2.4, 8000, 16000)
    assert tail.shape == (8000,) and not tail[2000:].any()
    np.testing.assert_array_equal(audio.read_segment(path, 0.5, 100, 22050), audio.read(path)[0][0][11025:11125])
    nan = np.zeros(1000, np.float32)
    nan[500] = np.nan
    audio.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    with pytest.raises(DereverbError, match="nan.wav: contains NaN"):
        audio.read_segment(tmp_path / "nan.wav", 0.0, 1000, 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000")
    with pytest.raises(DereverbError, match="bad.wav: cannot decode audio"):
        audio.read_segment(tmp_path / "bad.wav", 0.0, 10, 16000)
