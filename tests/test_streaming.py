"""Real-time streaming: the engine's output, block by block, equals the offline pass of the same
causal model through the file path; the pipe (`dereverb stream`) equals the engine; the live
mode's callback and its errors."""

from __future__ import annotations

import io
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from dereverb import StreamingDereverberator, audio, checkpoint, streaming
from dereverb.chunking import ChunkConfig
from dereverb.cli import main
from dereverb.config import FeatureConfig, StftConfig
from dereverb.enhance import Dereverberator
from dereverb.errors import DereverbError
from dereverb.model import DereverbModel, model_config
from tiny import one_thread, realistic  # noqa: F401  (one_thread: autouse fixture)

RATE = 16000


def causal_model(output: str = "mask", seed: int = 0, **overrides) -> DereverbModel:
    """A random tiny causal model with realistic normaliser statistics and non-trivial batch norms."""
    torch.manual_seed(seed)
    model = DereverbModel(StftConfig(), FeatureConfig(compression="power"),
                          model_config("tiny", output=output, causal=True, **{"lookahead": 1, **overrides}))
    return realistic(model, 0.1, 0.15)  # power-law features


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "causal.safetensors"
    checkpoint.save(path, causal_model())
    return path


@pytest.fixture(scope="module")
def signal(speech) -> np.ndarray:
    """1.5 s of speech that neither starts nor ends in digital silence (the offline pass trims that)."""
    x = (speech[0][8000:32000] * 0.8).astype(np.float32)
    assert x[0] != 0 and x[-1] != 0
    return x


def stream(engine: StreamingDereverberator, x: np.ndarray, block: int) -> np.ndarray:
    """The engine's whole output for ``x`` (``(S,)`` or ``(C, S)``) fed in blocks, less its latency."""
    parts = [engine.process(x[..., i : i + block]) for i in range(0, x.shape[-1], block)]
    y = np.concatenate([*parts, engine.flush()], axis=-1)
    assert y.shape[-1] == x.shape[-1] + engine.latency_samples
    return y[..., engine.latency_samples :]


def rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


def offline_file(model_path: Path, x: np.ndarray, tmp_path: Path, **kwargs) -> np.ndarray:
    """``x`` enhanced through the file path (float WAV in, float WAV out) with default settings."""
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    audio.write(src, np.atleast_2d(x), RATE, subtype="FLOAT")
    Dereverberator.from_pretrained(model_path, device="cpu", **kwargs).enhance_file(src, dst)
    y, _ = audio.read(dst)
    return y if x.ndim == 2 else y[0]


# --- the engine ----------------------------------------------------------------------------------


def test_stream_equals_the_offline_file_path_for_any_block_size(model_file, signal, tmp_path, monkeypatch):
    ref = offline_file(model_file, signal, tmp_path)
    engine = StreamingDereverberator.from_pretrained(model_file)
    assert engine.sample_rate == RATE and engine.latency_samples == 512 + 128 - 1
    for block in (1, 7, 128, 129, 1000, len(signal)):
        assert rel_rms(stream(engine, signal, block), ref) < 1e-5, block
    monkeypatch.setattr(streaming, "BATCH_FRAMES", 16)  # a long block analysed in several batches
    assert rel_rms(stream(engine, signal, len(signal)), ref) < 1e-5


@pytest.mark.parametrize("output,lookahead", [("mapping", 2), ("complex", 0)])
def test_stream_equals_offline_for_every_output_and_lookahead(output, lookahead, signal, tmp_path):
    model = causal_model(output, lookahead=lookahead)
    checkpoint.save(tmp_path / "m.safetensors", model)
    ref = offline_file(tmp_path / "m.safetensors", signal, tmp_path)
    engine = StreamingDereverberator(model)
    assert engine.latency_samples == 512 + lookahead * 128 - 1
    assert rel_rms(stream(engine, signal, 333), ref) < 1e-5


def test_stereo_stream_equals_offline_and_channels_stay_apart(model_file, signal, tmp_path):
    x = np.stack([signal, 0.5 * signal[::-1]])
    ref = offline_file(model_file, x, tmp_path)
    engine = StreamingDereverberator.from_pretrained(model_file)
    y = stream(engine, x, 100)
    assert y.shape == x.shape and rel_rms(y, ref) < 1e-5
    assert rel_rms(stream(engine, x[1], 100), ref[1]) < 1e-5  # a channel alone: the same


def test_chunked_offline_pass_equals_the_stream(model_file, speech):
    """Offline segments need the causal context as margin, and no right context beyond the lookahead:
    short chunks give the stream's output (the model's context, 59 frames, within the margin)."""
    model = checkpoint.load(model_file)
    assert model.model_config.context_frames <= 64
    x = (speech[0][2000:78000] * 0.8).astype(np.float32)  # 594 frames: 4 segments of 280
    chunked = Dereverberator(model, "cpu", chunk=ChunkConfig(chunk_frames=280, margin_frames=64, fade_frames=8))
    y = stream(StreamingDereverberator(model), x, 256)
    assert rel_rms(chunked(x, RATE), y) < 1e-5


def test_blocks_keep_their_shape_and_the_stream_restarts(model_file, signal):
    engine = StreamingDereverberator.from_pretrained(model_file)
    first = stream(engine, signal, 500)  # flush() ends the stream
    assert engine.process(signal[:10]).shape == (10,)
    assert np.all(engine.process(signal[10:20]) == 0)  # still inside the latency
    engine.reset()
    assert np.array_equal(stream(engine, signal, 500), first)
    assert engine.process(np.zeros(0, np.float32)).shape == (0,)
    assert engine.process(signal[None, :64]).shape == (1, 64)
    assert engine.flush().shape[-1] == 64 + engine.latency_samples - 64


def test_strength_zero_gives_the_input_delayed_by_the_latency(model_file, signal):
    engine = StreamingDereverberator.from_pretrained(model_file, strength=0.0)
    y = stream(engine, signal, 64)
    assert np.array_equal(y, signal)


def test_bad_blocks_and_models_are_clear_errors(model_file, signal):
    engine = StreamingDereverberator.from_pretrained(model_file)
    engine.process(signal[:100])
    with pytest.raises(DereverbError, match="2 channel.*stream of 1"):
        engine.process(np.zeros((2, 10), np.float32))
    with pytest.raises(DereverbError, match="NaN"):
        engine.process(np.full(10, np.nan, np.float32))
    with pytest.raises(DereverbError, match="expected float"):
        engine.process(np.zeros(10, np.int16))
    with pytest.raises(DereverbError, match="not causal"):
        StreamingDereverberator(DereverbModel(StftConfig(), FeatureConfig(), model_config("tiny")))
    with pytest.raises(DereverbError, match="phase griffinlim"):
        StreamingDereverberator(checkpoint.load(model_file), phase="griffinlim")


def test_realtime_before_its_file_exists_names_what_does(tmp_path, monkeypatch):
    (tmp_path / "default.safetensors").write_bytes(b"")
    monkeypatch.setattr(checkpoint, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(DereverbError, match=r"bundled realtime model is not installed.*bundled: default.*"
                                            r"recipes/realtime.yaml"):
        StreamingDereverberator.from_pretrained("realtime")


def test_enhance_model_realtime_runs_files_as_every_model(model_file, signal, tmp_path, monkeypatch):
    """Once the bundled file exists, ``enhance --model realtime`` works (default --shifts 2 is one
    pass for a causal model) and gives the stream's output; --wpe is refused."""
    bundled = tmp_path / "pretrained"
    bundled.mkdir()
    (bundled / "realtime.safetensors").write_bytes(model_file.read_bytes())
    monkeypatch.setattr(checkpoint, "PRETRAINED_DIR", bundled)
    audio.write(tmp_path / "in.wav", signal[None], RATE, subtype="FLOAT")
    assert main(["enhance", str(tmp_path / "in.wav"), "-o", str(tmp_path / "out.wav"), "--model", "realtime"]) == 0
    y, _ = audio.read(tmp_path / "out.wav")
    assert rel_rms(stream(StreamingDereverberator.from_pretrained("realtime"), signal, 128), y[0]) < 1e-5
    with pytest.raises(DereverbError, match="--wpe"):
        from dereverb.wpe import WpeConfig

        Dereverberator.from_pretrained("realtime", wpe=WpeConfig())


# --- the pipe: dereverb stream -------------------------------------------------------------------


def run_stream(model_file: Path, data: bytes, *flags: str) -> bytes:
    r = subprocess.run([sys.executable, "-m", "dereverb", "stream", "--model", str(model_file), *flags],
                       input=data, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def test_pipe_s16le_equals_the_engine(model_file, signal):
    """Raw 16-bit PCM through a real pipe: the output is the engine's on the same samples, as PCM."""
    data = streaming.encode_pcm(signal[None], "s16le")
    out = run_stream(model_file, data, "--rate", "16000", "--channels", "1", "--format", "s16le")
    engine = StreamingDereverberator.from_pretrained(model_file)
    x = streaming.decode_pcm(data, "s16le", 1)
    ref = np.concatenate([engine.process(x), engine.flush()], axis=1)
    assert out == streaming.encode_pcm(ref, "s16le")


def test_pipe_wav_in_wav_out_and_align(model_file, signal):
    x = np.stack([signal, -signal])
    wav = streaming.wav_header(RATE, 2, "f32le") + streaming.encode_pcm(x, "f32le")
    out = run_stream(model_file, wav, "--align")
    assert out[:44] == streaming.wav_header(RATE, 2, "f32le")
    rate, channels, fmt, size = streaming.read_wav_header(io.BytesIO(out[:44]))
    assert (rate, channels, fmt, size) == (RATE, 2, "f32le", None)
    y = streaming.decode_pcm(out[44:], "f32le", 2)
    assert np.array_equal(y, stream(StreamingDereverberator.from_pretrained(model_file), x, 4096))
    raw = run_stream(model_file, wav, "--output-format", "s16le")
    assert len(raw) == 2 * 2 * (x.shape[1] + 639)


def test_pipe_writes_each_block_before_the_input_ends(model_file, signal):
    """Output comes out while stdin is still open: as much output as input, block by block."""
    proc = subprocess.Popen([sys.executable, "-m", "dereverb", "stream", "--model", str(model_file)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = streaming.encode_pcm(signal[None, :8000], "s16le")
        proc.stdin.write(first)
        proc.stdin.flush()
        got = b""
        while len(got) < len(first):  # read() would wait for the end; read1 returns what is there
            got += proc.stdout.read1(len(first) - len(got))
        proc.stdin.write(streaming.encode_pcm(signal[None, 8000:], "s16le"))
        proc.stdin.close()
        got += proc.stdout.read()
        assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    finally:
        proc.kill()
    assert len(got) == 2 * (len(signal) + 639)


def test_pipe_refuses_other_rates_and_bad_headers(model_file):
    engine = StreamingDereverberator.from_pretrained(model_file)

    with pytest.raises(DereverbError, match="--rate 48000: the model runs at 16000 Hz"):
        streaming.run_pipe(engine, io.BytesIO(b"\0" * 100), io.BytesIO(), rate=48000)
    header = streaming.wav_header(44100, 1, "s16le")
    with pytest.raises(DereverbError, match="--rate 44100"):
        streaming.run_pipe(engine, io.BytesIO(header + b"\0" * 100), io.BytesIO())
    with pytest.raises(DereverbError, match="--channels 2: the WAV header on stdin says 1"):
        streaming.run_pipe(engine, io.BytesIO(streaming.wav_header(RATE, 1, "s16le")), io.BytesIO(), channels=2)
    with pytest.raises(DereverbError, match="WAV header on stdin ends early"):
        streaming.run_pipe(engine, io.BytesIO(b"RIFF\0\0"), io.BytesIO())


def test_pipe_in_process_with_a_known_wav_size_stops_at_the_data(model_file, signal):
    """A WAV file's declared data size is honoured (a chunk after the data is not audio)."""

    body = streaming.encode_pcm(signal[None], "s16le")
    header = bytearray(streaming.wav_header(RATE, 1, "s16le"))
    header[40:44] = len(body).to_bytes(4, "little")
    out = io.BytesIO()
    n = streaming.run_pipe(StreamingDereverberator.from_pretrained(model_file),
                           io.BytesIO(bytes(header) + body + b"LIST\x04\0\0\0abcd"), out, output_format="s16le")
    assert n == len(signal) and len(out.getvalue()) == 2 * (len(signal) + 639)


# --- live ---------------------------------------------------------------------------------------


class FakeSounddevice(types.ModuleType):
    """A stand-in for sounddevice: a stream whose callback runs on a given input as it opens."""

    class PortAudioError(Exception):
        pass

    class CallbackAbort(Exception):
        pass

    def __init__(self, devices, mic: np.ndarray | None = None, block: int = 128):
        super().__init__("sounddevice")
        self.devices, self.mic, self.block, self.played = devices, mic, block, []

    def query_devices(self):
        return self.devices

    def Stream(self, samplerate, blocksize, channels, dtype, latency, device, callback):  # noqa: N802
        fake = self

        class Stream:
            active = False

            def __enter__(self):
                for i in range(0, fake.mic.shape[0], blocksize):
                    indata = fake.mic[i : i + blocksize]
                    outdata = np.zeros_like(indata)
                    callback(indata, outdata, len(indata), None, None)
                    fake.played.append(outdata)
                return self

            def __exit__(self, *exc):
                return False

        return Stream()


DEVICES = [{"max_input_channels": 2, "max_output_channels": 0}, {"max_input_channels": 0, "max_output_channels": 2}]


def test_live_runs_the_engine_in_the_callback(model_file, signal, monkeypatch):
    fake = FakeSounddevice(DEVICES, mic=signal[:, None])
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    engine = StreamingDereverberator.from_pretrained(model_file)
    assert streaming.run_live(engine, seconds=0.01) == len(signal)
    played = np.concatenate(fake.played)[:, 0]
    ref = StreamingDereverberator.from_pretrained(model_file)
    blocks = [ref.process(signal[i : i + 128]) for i in range(0, len(signal), 128)]
    assert np.array_equal(played, np.concatenate(blocks))


def test_live_without_package_library_or_device_is_one_clear_error(model_file, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # not installed
    with pytest.raises(DereverbError, match=r"pip install 'dereverb\[live\]'"):
        streaming.check_live()
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    monkeypatch.delitem(sys.modules, "sounddevice")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DereverbError, match="PortAudio library"):
        streaming.check_live()
    monkeypatch.setitem(sys.modules, "sounddevice", FakeSounddevice(DEVICES[:1]))
    with pytest.raises(DereverbError, match="no audio output device"):
        streaming.check_live()
    assert main(["stream", "--model", str(model_file), "--live"]) == 2
