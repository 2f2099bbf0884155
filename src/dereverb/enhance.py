"""Dereverberation of arrays and files with a trained model: :class:`Dereverberator` (folders and
whole corpora: :mod:`dereverb.corpus`).

A signal of any length goes through the network in overlapping segments (see
:mod:`dereverb.chunking`), and files are read, resampled and written in blocks, so a one-hour
recording never sits in memory.  Chunked and whole-signal outputs agree (tests/test_enhance.py).

Waveforms are float32 ``(rows, samples)`` internally; rows are channels or batch items, each
enhanced on its own.  The output always has the input's length (at the output rate).  Files are
written atomically in two passes: the enhanced signal goes to a float scratch file beside the
target while its peak is tracked, then to the target in the input's subtype, scaled down (with a
warning) if it would clip.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import audio, checkpoint, spectral
from .checkpoint import PRETRAINED_DIR, resolve_model  # noqa: F401  (PRETRAINED_DIR: where bundled models live)
from .chunking import ChunkConfig, Fifo, OverlapAdd, StreamResampler
from .errors import DereverbError
from .model import autocast_dtype
from .outputs import check_target, make_folder, scratch_file
from .wpe import WpeConfig

PHASES = ("reverberant", "griffinlim", "model")
BACKENDS = ("torch", "onnx")
OUTPUT_RATES = ("input", "model")
PEAK = 10 ** (-0.1 / 20)  # an output that would clip is scaled to this peak (-0.1 dBFS)
# Dereverberation removes energy: no bin's enhanced magnitude may exceed the input's by more than
# 20 dB, so digital silence stays silent and a model's glitch cannot make a noise burst.
MAX_GAIN = 10.0
# Network passes per segment at offsets over the U-Net's grid (``Dereverberator(shifts=...)``).
DEFAULT_SHIFTS = 2
# An array with more rows than this, each shorter than the row count, is (samples, channels) passed
# as (channels, samples): refused with a clear error (a 4-s stereo file read so would run for hours).
MAX_CHANNELS = 64


def inference_net(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """An inference copy of a U-Net: each (transposed) convolution + eval batch norm folded into one
    convolution, and on the CPU the NHWC layout (faster oneDNN kernels; ~20 % measured on 2 cores).
    The same function to float rounding."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(net).eval()
    for seq in net.modules():
        if not isinstance(seq, torch.nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and isinstance(bn, torch.nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, torch.nn.ConvTranspose2d))
                seq[i + 1] = torch.nn.Identity()
    if device.type == "cpu" and hasattr(net, "channels_last"):
        net.to(memory_format=torch.channels_last)
        net.channels_last = True
    return net


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; asking for a missing CUDA is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise DereverbError(f"--device {device!r}: not a device (auto, cpu, cuda)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DereverbError("--device cuda: no CUDA device is available here; use --device cpu")
    return dev


class Dereverberator:
    """Enhance waveforms and files with a :class:`~dereverb.model.DereverbModel`.

    ``phase``: ``"reverberant"`` or ``"griffinlim"`` (fast Griffin-Lim started from the
    reverberant phase) for magnitude models, ``"model"`` for complex ones; ``None`` takes the
    model's first.  ``strength`` in [0, 1] mixes enhanced and input waveforms (1 = fully
    dereverberated).  ``onnx_net``: a callable run in place of ``model.net`` (see export.py);
    otherwise the torch network runs with its batch norms folded into the convolutions.
    ``wpe``: run single-channel WPE (:mod:`dereverb.wpe`, ``taps``/``delay``/``iterations`` of the
    config, on the model's own STFT) on each segment before the network, a WPE + network cascade:
    WPE removes the late tail by linear prediction, so the network sees the higher-DRR input it
    handles best (see the bundled model's card).  It is the model with ``features.frontend: wpe``.
    ``shifts``: network passes per segment, with the input moved by frame offsets spread evenly
    over the U-Net's grid of ``2 ** depth`` frames, their outputs averaged.  A strided U-Net's
    output depends on where its grid falls on the signal; the mean over offsets is better than any
    one of them (most near the microphone: the bundled model's card), at ``shifts`` times the
    network's cost.  ``autocast``: the network's convolutions in reduced precision (float16 or
    bfloat16 on CUDA, bfloat16 on the CPU); the STFT, compression, normalisation and iSTFT stay in
    float32, where the dB and power-law ranges need it.  Off by default: it moves outputs by more
    than float rounding.

    :attr:`network` is the one place the network runs; :mod:`dereverb.corpus` swaps in a batcher
    that runs segments from several files (threads) in one call.
    """

    def __init__(self, model, device: str | torch.device = "auto", phase: str | None = None,
                 strength: float = 1.0, chunk: ChunkConfig = ChunkConfig(), onnx_net=None,
                 wpe: WpeConfig | None = None, shifts: int = DEFAULT_SHIFTS, autocast: bool = False):
        modes = tuple(model.phase_modes)
        if phase is not None and phase not in modes:
            kind = "predicts phase (model.output complex)" if modes == ("model",) else \
                f"predicts a magnitude ({model.model_config.output})"
            raise DereverbError(f"--phase {phase}: this model {kind}, so it supports {' or '.join(modes)}; "
                                "--phase model needs a model with model.output complex")
        if not 0.0 <= float(strength) <= 1.0:
            raise DereverbError(f"--strength {strength}: must be between 0 and 1")
        grid = model.model_config.frame_multiple  # 1 for a causal model: no grid, one pass
        if int(shifts) < 1 or (grid > 1 and int(shifts) > grid):
            raise DereverbError(f"--shifts {shifts}: must be between 1 and {grid} (this model's frame grid)")
        if onnx_net is not None and str(device) not in ("auto", "cpu"):
            raise DereverbError(f"--device {device}: the onnx backend runs on the CPU; use --device cpu or auto")
        if onnx_net is not None and autocast:
            raise DereverbError("--autocast: the onnx backend runs in float32; use --backend torch")
        if wpe is not None:
            if model.model_config.causal:
                raise DereverbError("--wpe: WPE runs over the whole signal, which a causal model does without; "
                                    "leave --wpe out")
            if model.feature_config.frontend == "wpe":
                raise DereverbError("--wpe: this model runs WPE itself (its frontend); leave --wpe out")
            model = copy.copy(model)  # the same weights, WPE as its frontend
            model.feature_config = dataclasses.replace(model.feature_config, frontend="wpe", wpe_taps=wpe.taps,
                                                       wpe_delay=wpe.delay, wpe_iterations=wpe.iterations)
        self.device = torch.device("cpu") if onnx_net is not None else resolve_device(device)
        self.model = model.to(self.device).eval()
        self.net = onnx_net if onnx_net is not None else inference_net(model.net, self.device)
        self.phase, self.strength, self.chunk = phase or modes[0], float(strength), chunk
        self.backend = "torch" if onnx_net is None else "onnx"
        self.shifts = min(int(shifts), grid)
        self.offsets = [i * grid // self.shifts for i in range(self.shifts)]  # frames
        self.autocast = (autocast_dtype(self.device) or torch.bfloat16) if autocast else None  # dtype
        self.network: Callable[[Tensor], Tensor] = self.run_network

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str = "auto", phase: str | None = None,
                        strength: float = 1.0, backend: str = "torch", chunk: ChunkConfig = ChunkConfig(),
                        wpe: WpeConfig | None = None, shifts: int = DEFAULT_SHIFTS,
                        autocast: bool = False) -> "Dereverberator":
        """Load a bundled model name, a ``.safetensors`` checkpoint, a run folder or an ``.onnx`` file.

        ``backend="onnx"`` runs the network with onnxruntime (a checkpoint is exported in memory;
        an ``.onnx`` file always runs there).
        """
        from . import export  # onnx and onnxruntime only when asked for

        if backend not in BACKENDS:
            raise DereverbError(f"--backend {backend}: choose {' or '.join(BACKENDS)}")
        file = resolve_model(path)
        if file.suffix == ".onnx":
            model, net = export.load_onnx(file)
            return cls(model, device, phase, strength, chunk, onnx_net=net, wpe=wpe, shifts=shifts, autocast=autocast)
        model = checkpoint.load(file, device="cpu")
        net = export.OnnxNet(export.to_onnx_bytes(model)) if backend == "onnx" else None
        return cls(model, device, phase, strength, chunk, onnx_net=net, wpe=wpe, shifts=shifts, autocast=autocast)

    @property
    def sample_rate(self) -> int:
        """The model's sample rate in Hz."""
        return self.model.stft_config.sample_rate

    # --- the network on one segment --------------------------------------------------------------

    def run_network(self, feats: Tensor) -> Tensor:
        """The network on features ``(B, C, F, T)`` (``F``, ``T`` on its grid) -> float32 output
        ``(B, C_out, F, T)``; each row on its own, so rows of equal shape may come from any files."""
        if self.autocast is None:
            return self.net(feats).float()
        with torch.autocast(self.device.type, dtype=self.autocast):
            return self.net(feats).float()

    def _spectrum(self, spec: Tensor) -> Tensor:
        """Complex ``(B, F_full, T)`` -> enhanced complex ``(B, F_full, T)``, at most ``MAX_GAIN`` x ``|spec|``.

        Each pass mirrors the features ``s`` frames to the left (and up to the grid on the right):
        mirrored speech is input like the training crops, where zeros (the mean feature) are not.
        """
        feats = self.model.encode(spec)  # (B, C, n_freq, T)
        n_f, n_t = feats.shape[-2:]
        m, grid = self.model.model_config.multiple, self.model.model_config.frame_multiple
        # bins: zero-padded to the grid, as UNet.forward pads; frames: mirrored, per pass below
        feats = torch.nn.functional.pad(feats, (0, 0, 0, -n_f % m))
        est = torch.zeros_like(spec)
        for s in self.offsets:
            out = self.network(mirror_frames(feats, s, -(n_t + s) % grid))
            est += self.model.decode(out[..., :n_f, s : s + n_t], spec)
        est /= len(self.offsets)
        ceiling = MAX_GAIN * spec.abs()
        return est * (ceiling / est.abs().clamp_min(1e-20)).clamp(max=1.0)

    @torch.inference_mode()
    def _segment(self, wave: Tensor) -> Tensor:
        """Enhance waveform rows ``(B, L)`` at the model rate -> ``(B, L)``."""
        stft = self.model.stft
        spec = self.model.frontend(stft(wave))  # (B, F_full, T)
        est = self._spectrum(spec)
        if self.phase == "griffinlim":
            return spectral.griffin_lim(est.abs(), stft, wave.shape[-1],
                                        n_iter=self.chunk.griffin_lim_iters, init_phase=spec)
        return stft.inverse(est, length=wave.shape[-1])

    def _rows(self, x: np.ndarray) -> np.ndarray:
        """Enhance ``(B, L)`` float32 rows; all-zero rows stay exactly zero (silence in, silence out).

        Leading and trailing digital silence is left out of the network's input and comes out as
        zeros: the model never saw it in training, and 0.2 s of zeros after a file used to spoil
        the two seconds before it (PESQ 1.42 -> 1.24 on the bundled church example).  Silence
        inside a segment, or dither-level noise instead of zeros, still reaches the network.
        """
        y = np.zeros_like(x)
        active = np.flatnonzero(np.any(x != 0, axis=1))
        frames = x.shape[1] // self.model.stft_config.hop_length + 1
        per_call = max(1, self.chunk.batch_frames // frames)
        for i in range(0, len(active), per_call):
            idx = active[i : i + per_call]
            a, b = active_span(x[idx], self.model.stft_config.n_fft)
            rows = x[idx, a:b]
            y[idx, a:b] = self._segment(torch.from_numpy(np.ascontiguousarray(rows)).to(self.device)).float().cpu().numpy()
        return y

    def _overlap_add(self) -> OverlapAdd:
        geometry = self.chunk.geometry(self.model.stft_config.hop_length, self.model.model_config.frame_multiple)
        return OverlapAdd(self._rows, *(geometry or ()))

    # --- streams and arrays ----------------------------------------------------------------------

    def stream(self, blocks: Iterable[np.ndarray], rate: int, channels: int,
               output_rate: str = "input") -> Iterator[np.ndarray]:
        """Enhance a stream of ``(C, n)`` float32 blocks at ``rate`` Hz, block by block.

        Yields ``(C, m)`` blocks at the input rate (``output_rate="input"``) or the model's; their
        total length is the input's at that rate.  Non-finite samples raise :class:`DereverbError`.
        """
        if output_rate not in OUTPUT_RATES:
            raise DereverbError(f"--output-rate {output_rate}: choose input or model")
        out_rate = rate if output_rate == "input" else self.sample_rate
        up = StreamResampler(rate, self.sample_rate, channels)
        down = StreamResampler(self.sample_rate, out_rate, channels)
        ola, wet, dry = self._overlap_add(), Fifo(channels), Fifo(channels)
        for block in blocks:
            if not np.isfinite(block).all():
                raise DereverbError("input contains NaN or infinite samples")
            x = up(block)  # (C, n') at the model rate
            dry.push(block if out_rate == rate else x)
            for y in ola.feed(x):
                wet.push(down(y))
                yield from self._mix(wet, dry)
        x = up(last=True)
        if out_rate != rate:
            dry.push(x)
        for y in ola.feed(x) + ola.flush():
            wet.push(down(y))
        wet.push(down(last=True))
        if dry.size > wet.size:  # resampling there and back can come out a sample short
            wet.push(np.zeros((channels, dry.size - wet.size), np.float32))
        yield from self._mix(wet, dry)

    def _mix(self, wet: Fifo, dry: Fifo) -> Iterator[np.ndarray]:
        n = min(wet.size, dry.size)
        if n:
            y, x = wet.pop(n), dry.pop(n)
            yield y if self.strength == 1.0 else self.strength * y + (1.0 - self.strength) * x

    def __call__(self, x: np.ndarray | Tensor, sample_rate: int,
                 channels_first: bool = True) -> np.ndarray | Tensor:
        """Enhance ``(S,)``, ``(C, S)`` or ``(..., S)`` audio at ``sample_rate`` Hz.

        ``channels_first=False`` takes soundfile's ``(S, C)`` (and ``(..., S, C)``) instead.  Float
        samples are full scale at 1; int16/int32 PCM is converted and the output converted back.
        Returns the same type, shape, dtype (and device) as ``x``.  Rows are enhanced together, so
        a batch of equal-length signals is one call.  An output that would clip is scaled down with
        a warning.  A ``(samples, channels)`` array passed as ``(C, S)`` (more than
        :data:`MAX_CHANNELS` rows, each shorter than the row count) is an error, not hours of
        garbage.
        """
        is_tensor = isinstance(x, Tensor)
        arr = x.detach().cpu().numpy() if is_tensor else np.asarray(x)
        if not channels_first and arr.ndim >= 2:
            arr = np.swapaxes(arr, -1, -2)  # (..., S, C) -> (..., C, S)
        rows = _float_rows(arr, int(sample_rate))  # (B, S)
        step = self.chunk.block_frames
        blocks = (rows[:, i : i + step] for i in range(0, rows.shape[1], step))
        y = np.concatenate(list(self.stream(blocks, int(sample_rate), rows.shape[0])), axis=1)
        y *= _gain(float(np.abs(y).max()), "output")
        y = _like(y.reshape(arr.shape), arr.dtype)
        if not channels_first and arr.ndim >= 2:
            y = np.swapaxes(y, -1, -2)
        return torch.from_numpy(np.ascontiguousarray(y)).to(x.device) if is_tensor else y

    # --- files and folders -----------------------------------------------------------------------

    def enhance_file(self, src: str | Path, dst: str | Path, output_rate: str = "input", mono: bool = False,
                     subtype: str | None = None, overwrite: bool = False) -> float:
        """Enhance audio file ``src`` into ``dst`` atomically (``dst``'s folder is created, and
        temporary files a killed run left for ``dst`` are removed).

        Any format libsndfile reads goes in; ``dst``'s suffix picks the output format (a WAVEX or
        RF64 input keeps its container in a ``.wav``).  ``subtype`` defaults to the input's
        (16/24/32-bit int or float) where ``dst``'s format holds it, 16-bit PCM from a lossy input
        (MP3, Vorbis, Opus) into a lossless format.  Never writes onto ``src``; an existing ``dst``
        needs ``overwrite``.  A truncated input is enhanced as far as it goes, with a warning.
        Returns the input's duration in seconds.
        """
        src, dst = Path(src), Path(dst)
        meta = audio.info(src)
        check_target(dst, [src], overwrite)
        rate, channels, fmt, subtype = self.output_spec(meta, dst, output_rate, mono, subtype)
        if meta.truncated:
            warnings.warn(meta.truncated, stacklevel=2)
        make_folder(dst.parent)
        for stale in dst.parent.glob(f".{glob.escape(dst.name)}.*.tmp"):  # left by a killed run
            stale.unlink(missing_ok=True)
        with scratch_file(dst) as tmp:
            peak, n = 0.0, 0
            try:
                with open(tmp, "wb") as f:
                    for y in self.stream(_read_blocks(src, self.chunk.block_frames, mono), meta.sample_rate,
                                         channels, output_rate):
                        peak = max(peak, float(np.abs(y).max()))
                        # (n, C) interleaved; file.write, not ndarray.tofile, so a full disk says so (errno)
                        f.write(np.ascontiguousarray(y.T, dtype=np.float32))
                        n += y.shape[1]
            except OSError as e:
                raise DereverbError(f"{dst}: write failed ({e.strerror or e})") from e
            gain = _gain(peak, str(dst))
            # plain reads, not a memmap: mapped pages would count as resident and grow with the file
            with open(tmp, "rb") as f, audio.BlockWriter(dst, rate, channels, subtype, like=fmt) as w:
                for _ in range(0, n, self.chunk.block_frames):
                    block = np.fromfile(f, np.float32, self.chunk.block_frames * channels)
                    w.write(block.reshape(-1, channels).T * gain)
        return meta.duration

    def output_spec(self, meta: audio.AudioInfo, dst: Path, output_rate: str, mono: bool,
                     subtype: str | None = None) -> tuple[int, int, str, str]:
        """``(rate Hz, channels, format, subtype)`` of ``dst`` enhanced from the file ``meta``
        describes; a format that cannot hold them is an error here, before any work."""
        rate = meta.sample_rate if output_rate == "input" else self.sample_rate
        channels = 1 if mono else meta.channels
        fmt = audio.output_format(dst, meta.format)
        try:
            return rate, channels, fmt, audio.compatible_subtype(dst, subtype or meta.subtype, rate, channels, fmt)
        except DereverbError as e:
            raise DereverbError(f"{e} for {meta.path}") from e


def mirror_frames(x: Tensor, left: int, right: int) -> Tensor:
    """Pad the last (frame) axis of ``x`` by reflection, repeatedly where ``x`` is shorter than a pad."""
    if not left and not right:
        return x
    idx = np.pad(np.arange(x.shape[-1]), (left, right), mode="reflect")
    return x[..., torch.from_numpy(idx).to(x.device)]


def active_span(x: np.ndarray, min_length: int) -> tuple[int, int]:
    """``[a, b)``: ``(B, L)`` rows without their leading and trailing digital silence (samples that
    are exactly zero in every row); all of them if that leaves under ``min_length``."""
    loud = np.flatnonzero(np.any(x != 0, axis=0))
    if loud.size == 0 or loud[-1] + 1 - loud[0] < min_length:
        return 0, x.shape[-1]
    return int(loud[0]), int(loud[-1]) + 1


def _float_rows(arr: np.ndarray, sample_rate: int) -> np.ndarray:
    """``(..., C, S)`` float or int PCM audio -> float32 rows ``(B, S)`` in [-1, 1] full scale;
    the shapes and types that cannot be audio are a :class:`DereverbError` saying what is expected."""
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise DereverbError("expected audio of shape (S,) or (C, S) with at least one sample")
    if sample_rate <= 0:
        raise DereverbError(f"sample_rate {sample_rate}: must be a positive number of Hz")
    if arr.ndim >= 2 and arr.shape[-2] > MAX_CHANNELS and arr.shape[-2] > arr.shape[-1]:
        raise DereverbError(
            f"audio of shape {arr.shape}: read as {arr.shape[-2]} channels of {arr.shape[-1]} samples; dereverb "
            "takes (samples,) or (channels, samples): pass x.T, or channels_first=False for soundfile's "
            "(samples, channels)")
    if np.issubdtype(arr.dtype, np.floating):
        rows = arr
    elif arr.dtype in (np.int16, np.int32):
        rows = arr / np.float32(-np.iinfo(arr.dtype).min)  # PCM full scale -> 1
    else:
        raise DereverbError(f"audio of dtype {arr.dtype}: expected float samples (full scale 1) or int16/int32 PCM")
    return np.ascontiguousarray(rows.reshape(-1, arr.shape[-1]), dtype=np.float32)


def _like(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float ``y`` (full scale 1) in ``dtype``: int PCM rounded and clipped to its range."""
    if np.issubdtype(dtype, np.floating):
        return y.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    return np.clip(np.round(y.astype(np.float64) * -info.min), info.min, info.max).astype(dtype)


def _read_blocks(src: Path, block: int, mono: bool) -> Iterator[np.ndarray]:
    for x in audio.blocks(src, block):
        if not np.isfinite(x).all():
            raise DereverbError(f"{src}: contains NaN or infinite samples")
        yield audio.to_mono(x) if mono else x


def _gain(peak: float, what: str) -> float:
    """1, or the factor that brings ``peak`` to :data:`PEAK` (with a warning) when it would clip."""
    if peak <= 1.0:
        return 1.0
    warnings.warn(f"{what}: peak {peak:.3f} would clip; scaled down by {20 * math.log10(peak / PEAK):.1f} dB",
                  stacklevel=3)
    return PEAK / peak
