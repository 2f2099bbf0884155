"""Real-time dereverberation with a causal model: :class:`StreamingDereverberator`.

Blocks of any size go in and blocks of the same size come out, ``latency_samples`` later.
Between calls the engine keeps the input samples of the frame being filled, the network's time
context (:class:`~dereverb.causal.StreamingUNet`: cached inputs of each convolution), the spectra
that wait for their lookahead, and the inverse STFT's overlap-add tail, so each hop costs one
network step on one frame.

Latency: frame ``k`` of the centred STFT covers input samples ``[k hop - n_fft/2, k hop + n_fft/2)``;
its enhanced version needs ``lookahead`` more frames, and output sample ``n`` is final once the
last frame that overlaps it is added.  The latest sample to wait for is ``n + n_fft + lookahead *
hop - 1``, so the output is the input delayed by ``latency_samples = n_fft + lookahead * hop - 1``
(the window plus the lookahead, at the model's rate).

The output stream without its first ``latency_samples`` is the offline pass of the same model
(:class:`~dereverb.enhance.Dereverberator`: one network pass, the same STFT, the same gain
ceiling) to float rounding.  The offline pass leaves a file's leading and trailing digital
silence out of the network; a stream cannot know where it ends, so there the two differ.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import checkpoint, spectral
from .chunking import Fifo
from .enhance import MAX_GAIN
from .errors import DereverbError
from .causal import StreamingUNet
from .model import DereverbModel, latency_samples

BACKENDS = ("torch", "onnx")
BATCH_FRAMES = 256  # frames analysed (and synthesised) at a time within one block


class StreamingDereverberator:
    """Enhance a live stream block by block with a causal model (``model.causal``).

    ``process(block) -> block``: float ``(S,)`` or ``(channels, S)`` at :attr:`sample_rate` in,
    float32 of the same shape out (each channel on its own); the output is the enhanced input
    :attr:`latency_samples` earlier (zeros before the stream starts).  ``flush()`` ends the stream:
    it returns the last :attr:`latency_samples` of output and starts a new stream, as ``reset()``
    does without output.  ``phase``: ``"reverberant"`` (magnitude models) or ``"model"`` (complex
    ones); ``strength`` in [0, 1] mixes the enhanced and the (equally delayed) input.  ``step``: a
    frame step with the interface of :class:`~dereverb.causal.StreamingUNet` (e.g.
    :class:`dereverb.export.OnnxStep`); by default the model's own network.

    Input at another sample rate is refused: resample it first (``arecord -r``, ``ffmpeg -ar``),
    since resampling inside would add its own delay and change the block sizes.
    """

    def __init__(self, model: DereverbModel, phase: str | None = None, strength: float = 1.0, step=None):
        cfg, st = model.model_config, model.stft_config
        if not cfg.causal:
            raise DereverbError("this model is not causal (model.causal false): it looks seconds ahead, so it "
                                "cannot stream; use a causal model (e.g. --model realtime), or dereverb enhance "
                                "for files")
        modes = tuple(m for m in model.phase_modes if m != "griffinlim")  # Griffin-Lim iterates over the whole signal
        if phase is not None and phase not in modes:
            raise DereverbError(f"phase {phase}: streaming this model supports phase {' or '.join(modes)}")
        if not 0.0 <= float(strength) <= 1.0:
            raise DereverbError(f"strength {strength}: must be between 0 and 1")
        if st.hop_length > st.n_fft // 2:
            raise DereverbError(f"stft hop {st.hop_length} > n_fft / 2: frames would not overlap enough to stream")
        self.model = model.cpu().eval()
        self.step = step if step is not None else StreamingUNet(model.net, st.n_freq).eval()
        self.phase, self.strength = phase or modes[0], float(strength)
        self.sample_rate: int = st.sample_rate
        self.latency_samples: int = latency_samples(st, cfg)
        self.n_fft, self.hop, self.lookahead = st.n_fft, st.hop_length, cfg.lookahead
        left = (st.n_fft - st.win_length) // 2  # torch.stft centres a shorter window in the frame
        self.window = torch.nn.functional.pad(spectral.make_window(st), (left, st.n_fft - st.win_length - left))
        self.envelope = self.window.square().numpy()
        self.reset()

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "realtime", phase: str | None = None,
                        strength: float = 1.0, backend: str = "torch") -> "StreamingDereverberator":
        """A bundled model name, a ``.safetensors`` checkpoint, a run folder, or a streaming ``.onnx``
        export (:func:`dereverb.export.export_streaming_onnx`).  ``backend="onnx"`` runs the network
        step with onnxruntime (a checkpoint is exported in memory)."""
        from . import export  # onnx and onnxruntime only when asked for

        if backend not in BACKENDS:
            raise DereverbError(f"--backend {backend}: choose {' or '.join(BACKENDS)}")
        file = checkpoint.resolve_model(name_or_path)
        if file.suffix == ".onnx":
            model, step = export.load_streaming_onnx(file)
            return cls(model, phase, strength, step=step)
        model = checkpoint.load(file, device="cpu")
        if backend == "onnx" and model.model_config.causal:
            return cls(model, phase, strength, step=export.OnnxStep(export.to_streaming_onnx_bytes(model)))
        return cls(model, phase, strength)

    def reset(self) -> None:
        """Forget the stream: the next block starts a new one (the network's context zeroed)."""
        self.channels: int | None = None
        self._samples = 0  # input samples of this stream
        self._frames = 0  # STFT frames analysed
        self._virtual = 0  # samples of the centred inverse STFT done (the first n_fft / 2 precede the signal)
        self._primed = 0  # frames that have entered the network
        self._pending: list[Tensor] = []  # spectra (C, F_full) waiting for their network output
        self._state: list[Tensor] = []

    def _start(self, channels: int) -> None:
        d = self.latency_samples
        self.channels = channels
        self._input = np.zeros((channels, self.n_fft // 2), np.float32)  # the centred STFT's padding
        self._ola = np.zeros((channels, self.n_fft), np.float32)
        self._weight = np.zeros(self.n_fft, np.float32)  # sum of squared windows added at each sample
        self._wet, self._dry = Fifo(channels), Fifo(channels)
        self._wet.push(np.zeros((channels, d), np.float32))
        self._dry.push(np.zeros((channels, d), np.float32))
        self._state = self.step.initial_state(channels)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Enhance float ``(S,)`` or ``(channels, S)`` samples -> float32 of the same shape."""
        x, mono = self._rows(block)
        if x.shape[1]:
            self._dry.push(x)
            self._input = np.concatenate([self._input, x], axis=1)
            self._samples += x.shape[1]
            self._analyse()
        y = self._mix(x.shape[1])
        return y[0] if mono else y

    def flush(self) -> np.ndarray:
        """End the stream: the remaining ``latency_samples`` of output, ``(channels, n)`` (``(n,)`` for a
        mono stream); the next block starts a new stream.  The whole output, without its first
        ``latency_samples``, is the offline pass over the input."""
        if self.channels is None:
            return np.zeros(0, np.float32)
        frames = self._samples // self.hop + 1  # as the offline STFT of the whole signal has
        end = self.n_fft + (frames - 1 - self._frames) * self.hop  # samples for the last of them
        self._input = np.pad(self._input, ((0, 0), (0, end - self._input.shape[1])))
        self._analyse()
        zero = torch.zeros(self.channels, self.model.model_config.in_channels, self.model.stft_config.n_freq, 1)
        self._synthesise(self._network([zero] * self.lookahead))  # the lookahead past the end: zeros
        rest = self._samples + self.n_fft // 2 - self._virtual
        self._emit(self._ola[:, :rest] / np.maximum(self._weight[:rest], 1e-11))
        y = self._mix(self._wet.size)
        mono = self._mono
        self.reset()
        return y[0] if mono else y

    # --- inside ---------------------------------------------------------------------------------

    def _rows(self, block: np.ndarray) -> tuple[np.ndarray, bool]:
        """A block as float32 ``(C, S)`` and whether it came as ``(S,)``; starts the stream on its first block."""
        x = np.asarray(block)
        if x.ndim not in (1, 2) or not np.issubdtype(x.dtype, np.floating):
            raise DereverbError(f"a block of shape {x.shape} and dtype {x.dtype}: expected float samples, "
                                "(samples,) or (channels, samples)")
        if not np.isfinite(x).all():
            raise DereverbError("input contains NaN or infinite samples")
        mono = x.ndim == 1
        x = np.ascontiguousarray(x.reshape(1, -1) if mono else x, dtype=np.float32)
        if self.channels is None:
            self._start(x.shape[0])
            self._mono = mono
        elif x.shape[0] != self.channels:
            raise DereverbError(f"a block of {x.shape[0]} channel(s) in a stream of {self.channels}; "
                                "reset() or flush() starts a new stream")
        return x, mono

    def _analyse(self) -> None:
        """STFT of the complete frames in the input buffer, through the network and the inverse STFT
        (at most :data:`BATCH_FRAMES` at a time, so a long block needs no more memory than a short one)."""
        while (n := min((self._input.shape[1] - self.n_fft) // self.hop + 1, BATCH_FRAMES)) > 0:
            frames = np.lib.stride_tricks.sliding_window_view(self._input, self.n_fft, axis=1)[:, :: self.hop][:, :n]
            with torch.inference_mode():
                frames = torch.from_numpy(frames.copy()) * self.window  # (C, n, n_fft)
                spec = torch.fft.rfft(frames, dim=-1).transpose(1, 2)  # (C, F_full, n)
                self._pending.extend(spec.unbind(-1))
                feats = self.model.encode(spec)  # (C, C_in, n_freq, n)
            self._input = self._input[:, n * self.hop :]
            self._frames += n
            self._synthesise(self._network(list(feats.split(1, dim=-1))))
        self._input = self._input.copy()  # not a view that keeps the whole block alive

    def _network(self, frames: list[Tensor]) -> list[Tensor]:
        """Feature frames ``(C, C_in, n_freq, 1)`` through the network step -> the output frames due."""
        out = []
        with torch.inference_mode():
            for frame in frames:
                if self._primed < self.lookahead:  # a signal's first frames only fill the lookahead
                    self._state = self.step.prime(frame, self._state)
                else:
                    y, *self._state = self.step(frame, *self._state)
                    out.append(y)
                self._primed += 1
        return out

    def _synthesise(self, outs: list[Tensor]) -> None:
        """Network output frames -> enhanced spectra (gain ceiling as offline) -> overlap-add."""
        if not outs:
            return
        m = len(outs)
        spec, self._pending = torch.stack(self._pending[:m], dim=-1), self._pending[m:]  # (C, F_full, m)
        with torch.inference_mode():
            est = self.model.decode(torch.cat(outs, dim=-1), spec)
            est = est * (MAX_GAIN * spec.abs() / est.abs().clamp_min(1e-20)).clamp(max=1.0)
            frames = (torch.fft.irfft(est.transpose(1, 2), n=self.n_fft, dim=-1) * self.window).numpy()  # (C, m, N)
        h = self.hop
        for j in range(m):
            self._ola += frames[:, j]
            self._weight += self.envelope
            done = self._ola[:, :h] / np.maximum(self._weight[:h], 1e-11)
            self._ola = np.concatenate([self._ola[:, h:], np.zeros((self.channels, h), np.float32)], axis=1)
            self._weight = np.concatenate([self._weight[h:], np.zeros(h, np.float32)])
            self._emit(done)

    def _emit(self, y: np.ndarray) -> None:
        """Finished samples of the centred inverse STFT: those before the signal's start are dropped."""
        skip = max(0, self.n_fft // 2 - self._virtual)
        self._virtual += y.shape[1]
        self._wet.push(y[:, skip:])

    def _mix(self, n: int) -> np.ndarray:
        wet = self._wet.pop(n)
        dry = self._dry.pop(n)
        return wet if self.strength == 1.0 else self.strength * wet + (1.0 - self.strength) * dry


# --- pipes: raw PCM or WAV in, the same out --------------------------------------------------------

# Raw sample formats by the names ffmpeg, arecord and aplay use, and their full scale.
PCM = {"s16le": (np.dtype("<i2"), 32768.0), "s32le": (np.dtype("<i4"), 2147483648.0), "f32le": (np.dtype("<f4"), 1.0)}
OUTPUT_FORMATS = (*PCM, "wav")
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # what a WAV writer that cannot seek back (a pipe) leaves as the data size
_READ = 1 << 14  # bytes asked of the input at a time; a pipe gives what it has


def decode_pcm(raw: bytes, fmt: str, channels: int) -> np.ndarray:
    """Interleaved little-endian samples -> float32 ``(channels, n)``, full scale 1."""
    dtype, scale = PCM[fmt]
    x = np.frombuffer(raw, dtype).reshape(-1, channels).T
    return (x / np.float32(scale)).astype(np.float32) if scale != 1.0 else np.ascontiguousarray(x, np.float32)


def encode_pcm(y: np.ndarray, fmt: str) -> bytes:
    """Float ``(channels, n)`` -> interleaved little-endian samples; integers rounded and clipped."""
    dtype, scale = PCM[fmt]
    if scale == 1.0:
        return np.ascontiguousarray(y.T, dtype).tobytes()
    info = np.iinfo(dtype)
    return np.clip(np.round(y.T.astype(np.float64) * scale), info.min, info.max).astype(dtype).tobytes()


def wav_header(rate: int, channels: int, fmt: str) -> bytes:
    """A WAV header for a stream of unknown length (sizes 0xFFFFFFFF, as ffmpeg writes to a pipe)."""
    dtype, _ = PCM[fmt]
    tag, bits = (3 if fmt == "f32le" else 1), 8 * dtype.itemsize
    chunk = (tag, channels, rate, rate * channels * dtype.itemsize, channels * dtype.itemsize, bits)
    return (b"RIFF" + (0xFFFFFFFF).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
            + b"".join(v.to_bytes(n, "little") for v, n in zip(chunk, (2, 2, 4, 4, 2, 2)))
            + b"data" + (0xFFFFFFFF).to_bytes(4, "little"))


def read_wav_header(reader, head: bytes = b"") -> tuple[int, int, str, int | None]:
    """``(rate, channels, format, data bytes or None when unknown)`` of a WAV stream whose first bytes
    (``head``, then ``reader``) are its header, read up to the start of the samples."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = reader.read(n - len(data))
            if not more:
                raise DereverbError("the WAV header on stdin ends early")
            data += more
        return data

    head += exactly(12 - len(head))
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise DereverbError("stdin starts with RIFF but is not a WAV stream")
    fmt = None
    while True:
        name, size = (lambda h: (h[:4], int.from_bytes(h[4:], "little")))(exactly(8))
        if name == b"data":
            if fmt is None:
                raise DereverbError("the WAV stream on stdin has no fmt chunk before its data")
            return (*fmt, None if size in _UNKNOWN_SIZES else size)
        body = exactly(size + size % 2)
        if name == b"fmt ":
            fmt = _wav_format(body)


def _wav_format(body: bytes) -> tuple[int, int, str]:
    tag, channels, rate = (int.from_bytes(body[i:j], "little") for i, j in ((0, 2), (2, 4), (4, 8)))
    bits = int.from_bytes(body[14:16], "little")
    if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the format is the sub-format's
        tag = int.from_bytes(body[24:26], "little")
    fmt = {(1, 16): "s16le", (1, 32): "s32le", (3, 32): "f32le"}.get((tag, bits))
    if fmt is None:
        raise DereverbError(f"a WAV stream of {bits}-bit {'float' if tag == 3 else 'format ' + str(tag)} samples: "
                            f"dereverb stream takes {', '.join(PCM)} (e.g. ffmpeg -c:a pcm_s16le)")
    return rate, channels, fmt


def run_pipe(engine: StreamingDereverberator, reader, writer, rate: int | None = None, channels: int | None = None,
             fmt: str | None = None, output_format: str | None = None, align: bool = False) -> int:
    """Enhance the audio ``reader`` (a binary stream, e.g. stdin) gives into ``writer`` block by
    block, flushing each block, until the input ends; returns the number of input samples.

    The input is WAV when it starts with a RIFF header (its rate, channels and format must agree
    with any given), else raw interleaved ``fmt`` samples (default s16le) at ``rate`` Hz (default
    the model's) with ``channels`` (default 1).  The output has the input's sample format, and a
    WAV header when the input had one, unless ``output_format`` says otherwise (s16le, s32le,
    f32le, or wav with the input's samples).  It is the input delayed by
    ``engine.latency_samples`` and that much longer, unless ``align`` drops those first samples
    (for files through pipes; a live pipe keeps them)."""
    head, size = reader.read(4), None
    wav = head == b"RIFF"
    if wav:
        got = read_wav_header(reader, head)
        for flag, given, found in zip(("--rate", "--channels", "--format"), (rate, channels, fmt), got):
            if given is not None and given != found:
                raise DereverbError(f"{flag} {given}: the WAV header on stdin says {found}")
        rate, channels, fmt, size = got
        head = b""
    rate, channels, fmt = rate or engine.sample_rate, channels or 1, fmt or "s16le"
    if fmt not in PCM:
        raise DereverbError(f"--format {fmt}: choose {', '.join(PCM)}")
    if rate != engine.sample_rate:
        raise DereverbError(f"--rate {rate}: the model runs at {engine.sample_rate} Hz; resample before it "
                            f"(arecord -r {engine.sample_rate}, ffmpeg -ar {engine.sample_rate})")
    if channels < 1:
        raise DereverbError(f"--channels {channels}: must be at least 1")
    out = output_format or ("wav" if wav else fmt)
    out_fmt = fmt if out == "wav" else out
    if out == "wav":
        _write(writer, wav_header(rate, channels, out_fmt))
    frame = channels * PCM[fmt][0].itemsize
    skip, samples, pending, left = (engine.latency_samples if align else 0), 0, head, size
    read = reader.read1 if hasattr(reader, "read1") else reader.read  # read1: what a pipe has, without waiting
    while left is None or left > 0:
        more = read(_READ if left is None else min(_READ, left))
        if not more:
            break
        pending += more
        left = None if left is None else left - len(more)
        n = len(pending) // frame * frame
        if n:
            block, pending = decode_pcm(pending[:n], fmt, channels), pending[n:]
            samples += block.shape[1]
            skip = _write_block(writer, engine.process(block), out_fmt, skip)
    if pending:
        warnings.warn(f"the input ends inside a sample frame: {len(pending)} byte(s) dropped", stacklevel=2)
    if samples:
        _write_block(writer, engine.flush(), out_fmt, skip)
    return samples


def _write_block(writer, y: np.ndarray, fmt: str, skip: int) -> int:
    """Write ``(C, n)`` samples less the first ``skip``; returns what is left to skip."""
    drop = min(skip, y.shape[1])
    _write(writer, encode_pcm(y[:, drop:], fmt))
    return skip - drop


def _write(writer, data: bytes) -> None:
    if data:
        writer.write(data)
        writer.flush()


# --- live: microphone to speaker ----------------------------------------------------------------


def run_live(engine: StreamingDereverberator, channels: int = 1, block: int | None = None,
             input_device: str | int | None = None, output_device: str | int | None = None,
             seconds: float | None = None) -> int:
    """Enhance the microphone into the speaker through PortAudio (the ``sounddevice`` package,
    ``pip install 'dereverb[live]'``) until ``seconds`` pass or Ctrl-C; returns the number of
    samples.  ``block``: samples per callback (default one hop: the lowest latency, one network
    step per callback).  Devices: a PortAudio index or part of a name (``python -m sounddevice``
    lists them).  Each callback runs :meth:`StreamingDereverberator.process`; blocks the sound
    card dropped because a callback ran late are counted in a warning at the end."""
    sd = check_live()
    problems, errors, count = [], [], [0]

    def callback(indata, outdata, frames, time, status):  # PortAudio's thread; (frames, channels) float32
        if status:
            problems.append(str(status))
        try:
            outdata[:] = engine.process(indata.T).T
            count[0] += frames
        except Exception as e:  # noqa: BLE001 (raised again in the caller's thread)
            errors.append(e)
            raise sd.CallbackAbort from e

    try:
        stream = sd.Stream(samplerate=engine.sample_rate, blocksize=block or engine.hop, channels=channels,
                           dtype="float32", latency="low", device=(input_device, output_device), callback=callback)
    except (sd.PortAudioError, ValueError) as e:
        raise DereverbError(f"--live: no usable audio device ({e}); list them with python -m sounddevice, or "
                            "use the pipe (arecord ... | dereverb stream | aplay ...)") from e
    end = None if seconds is None else time.monotonic() + seconds
    with stream:
        try:
            while stream.active and (end is None or time.monotonic() < end):
                time.sleep(0.05)
        except KeyboardInterrupt:
            pass
    if errors:
        raise errors[0]
    if problems:
        warnings.warn(f"{len(problems)} callback(s) reported {problems[0]}: the machine did not keep up; a larger "
                      "--block helps", stacklevel=2)
    return count[0]


def check_live():
    """The sounddevice module when live audio can work here, else a :class:`DereverbError` saying
    what is missing: the package, the PortAudio library, or any input and output device."""
    try:
        import sounddevice as sd
    except ImportError as e:
        raise DereverbError("--live needs the sounddevice package: pip install 'dereverb[live]'") from e
    except OSError as e:  # the package is there, the PortAudio library is not
        raise DereverbError(f"--live: sounddevice cannot load the PortAudio library ({e}); install it "
                            "(Debian/Ubuntu: apt install libportaudio2)") from e
    devices = sd.query_devices()
    for kind in ("input", "output"):
        if not any(d[f"max_{kind}_channels"] for d in devices):
            raise DereverbError(f"--live: PortAudio finds no audio {kind} device on this machine; use the pipe "
                                "instead (arecord ... | dereverb stream | aplay ...)")
    return sd
