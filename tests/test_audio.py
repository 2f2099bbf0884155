"""Audio I/O: round trips per subtype, resampling, channels, atomic writes, blocks, bad input."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize("name, subtype, rate, want", [
    ("x.wav", "MPEG_LAYER_III", 16000, "PCM_16"),  # libsndfile's check_format accepts MP3 in WAV; writing fails
    ("x.flac", "VORBIS", 44100, "PCM_16"),  # from a lossy codec: 16 bits, not the format's widest
    ("x.wav", "OPUS", 48000, "PCM_16"),
    ("x.wav", "PCM_24", 16000, "PCM_24"),  # what the format holds is kept
    ("x.aiff", "FLOAT", 16000, "FLOAT"),
    ("x.flac", "DOUBLE", 16000, "PCM_24"),  # FLAC holds no float: 24 bits, not 16
    ("x.ogg", "PCM_24", 16000, "VORBIS"),  # else the format's default
    ("x.ogg", "OPUS", 48000, "OPUS"),
    ("x.opus", "PCM_16", 16000, "OPUS"),  # .opus is Opus in Ogg, not Vorbis
])
def test_output_subtype_is_one_the_format_can_write(tmp_path, name, subtype, rate, want):
    if audio.FORMATS.get(Path(name).suffix) is None:
        pytest.skip(f"no {name} writer in this libsndfile")
    assert audio.compatible_subtype(tmp_path / name, subtype, rate, 2) == want
    audio.write(tmp_path / name, np.zeros((2, 480), np.float32), rate, subtype)  # and it writes
    assert sf.info(tmp_path / name).subtype == want


@pytest.mark.skipif("MP3" not in audio.FORMATS.values(), reason="this libsndfile has no MP3")
def test_mp3_subtype_and_rates_it_cannot_hold(tmp_path):
    assert audio.compatible_subtype(tmp_path / "x.mp3", "PCM_24", 44100, 1) == "MPEG_LAYER_III"
    with pytest.raises(DereverbError, match=r"x.mp3: MP3 cannot hold 1-channel audio at 96000 Hz \(MPEG"):
        audio.compatible_subtype(tmp_path / "x.mp3", "PCM_24", 96000, 1)


def test_a_wav_variant_keeps_its_container_in_a_wav_name(tmp_path):
    assert audio.output_format(tmp_path / "x.wav", "WAVEX") == "WAVEX"
    assert audio.output_format(tmp_path / "x.wav", "RF64") == "RF64"
    assert audio.output_format(tmp_path / "x.wav", "FLAC") == "WAV"  # FLAC named .wav: the name decides
    assert audio.output_format(tmp_path / "x.flac", "WAVEX") == "FLAC"
    with audio.BlockWriter(tmp_path / "x.wav", 16000, 2, "PCM_24", like="WAVEX") as w:
        w.write(np.zeros((2, 100), np.float32))
    assert (sf.info(tmp_path / "x.wav").format, sf.info(tmp_path / "x.wav").subtype) == ("WAVEX", "PCM_24")


def test_truncated_data_is_told_from_the_header(tmp_path):
    sf.write(tmp_path / "whole.wav", np.full(16000, 0.1), 16000, subtype="PCM_16")
    raw = (tmp_path / "whole.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[: 44 + 2 * 4000])
    whole, cut = audio.info(tmp_path / "whole.wav"), audio.info(tmp_path / "cut.wav")
    assert (whole.header_frames, whole.truncated) == (16000, "")
    assert (cut.frames, cut.header_frames) == (4000, 16000)
    assert cut.truncated == (f"{tmp_path / 'cut.wav'}: truncated: its header promises 1.00 s, the file holds "
                             "0.25 s; only that part is used")
    streamed = bytearray(raw)
    streamed[40:44] = (0xFFFFFFFF).to_bytes(4, "little")  # a streamed recording's "length unknown"
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    assert audio.info(tmp_path / "streamed.wav").truncated == ""


def test_folder_listing_for_enhance_takes_every_readable_format_and_names_foreign_audio(tmp_path):
    for name in ["a.wav", "b.mp3", "c.aiff", "d.caf", "e.m4a", "f.txt"]:
        (tmp_path / name).touch()
    with pytest.warns(UserWarning, match=r"e\.m4a: skipped: dereverb cannot decode \.m4a audio") as caught:
        found = [p.name for p in audio.list_audio(tmp_path, audio.READ_SUFFIXES, warn_foreign=True)]
    assert len(caught) == 1
    assert found == [n for n in ["a.wav", "b.mp3", "c.aiff", "d.caf"] if Path(n).suffix in audio.FORMATS]
    assert [p.name for p in audio.list_audio(tmp_path)] == ["a.wav"]  # training folders: .wav/.flac/.ogg
