"""The U-Net of Ernst et al., "Speech Dereverberation Using Fully Convolutional Networks"
(EUSIPCO 2018), its PatchGAN discriminator, and :class:`DereverbModel`, which wraps the network
between the STFT features and the enhanced spectrogram so a checkpoint alone runs inference.

Shapes: complex spectrograms ``(B, F_full, T)`` with ``F_full = n_fft//2+1``; network features
``(B, C, F, T)`` with ``F = StftConfig.n_freq`` (the top bin trimmed, as in the paper).

Two networks: :class:`UNet` (the paper's, strided along F and T: it sees seconds ahead) and
:class:`CausalUNet` (``model.causal``: strided along F only, causal dilated convolutions along T,
at most ``model.lookahead`` frames ahead; its layers and :class:`~dereverb.causal.StreamingUNet`,
which runs it one frame at a time for real-time use, live in :mod:`dereverb.causal`).

Three output kinds (``ModelConfig.output``):
- ``"mapping"``: normalised compressed magnitude in, the same of the clean speech out (the paper's);
- ``"mask"``: normalised compressed magnitude in, a magnitude mask in [0, 1] (a sigmoid) out;
- ``"complex"``: power-law-compressed real/imag in, the same of the clean speech out, so the
  network also estimates the phase (instead of reusing the reverberant one or Griffin-Lim).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import spectral, wpe
from .causal import CausalConv2d, CausalConvTranspose2d
from .config import FeatureConfig, StftConfig, from_dict, require
from .errors import DereverbError

OUTPUTS = ("mapping", "mask", "complex")
NORMS = ("batch", "instance", "none")
MAX_LOOKAHEAD = 2  # frames a causal model may look ahead (the real-time latency budget)
# Decoder levels with dropout (the innermost ones), when ``dropout`` > 0: pix2pix's three.
DROPOUT_LEVELS = 3


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """U-Net shape and output kind; saved with every checkpoint.

    Level ``i`` of ``depth`` halves F and T (stride 2) and has ``min(base_channels * 2**i,
    max_channels)`` channels; the decoder mirrors it with concatenated skips.  ``dropout`` applies
    to the innermost :data:`DROPOUT_LEVELS` decoder levels (pix2pix uses 0.5 in three: the
    ``paper`` configuration).  The output is linear for ``mapping`` and ``complex``, a sigmoid
    mask for ``mask``.

    ``causal``: the real-time network (:class:`CausalUNet`): levels halve F only, and each
    convolution spans ``time_kernel`` frames along T, ``2**i`` frames apart at level ``i`` (the
    decoder mirrors it), all in the past except ``lookahead`` frames ahead in the first layer.
    Nothing in it needs the whole signal, so instance norm (statistics over the signal) is refused.
    """

    # Keys of older versions, with the defaults that model files written then hold (config.from_dict).
    REMOVED: ClassVar[dict[str, Any]] = {"dropout_levels": 3, "output_activation": "auto", "mask_max": 1.0,
                                         "antialias": "none"}

    output: str = "mapping"
    depth: int = 6
    base_channels: int = 16
    max_channels: int = 128
    kernel_size: int = 5
    norm: str = "batch"
    dropout: float = 0.0
    causal: bool = False
    lookahead: int = 0
    time_kernel: int = 3

    def __post_init__(self) -> None:
        checks = [
            (self.output in OUTPUTS, f"model.output must be one of {list(OUTPUTS)}"),
            (self.norm in NORMS, f"model.norm must be one of {list(NORMS)}"),
            (self.kernel_size in (3, 5), "model.kernel_size must be 3 or 5"),
            (1 <= self.depth <= 10, "model.depth must be in 1..10"),
            (self.base_channels >= 1 and self.max_channels >= self.base_channels,
             "model.base_channels must be >= 1 and <= model.max_channels"),
            (0.0 <= self.dropout < 1.0, "model.dropout must be in [0, 1)"),
            (self.causal or self.lookahead == 0, "model.lookahead is for causal models (model.causal: true)"),
            (0 <= self.lookahead <= MAX_LOOKAHEAD, f"model.lookahead must be in 0..{MAX_LOOKAHEAD} frames"),
            (2 <= self.time_kernel <= 5, "model.time_kernel must be in 2..5"),
            (self.lookahead < self.time_kernel, "model.lookahead must be less than model.time_kernel"),
            (not (self.causal and self.norm == "instance"),
             "model.norm instance normalises over the whole signal, which a causal model (model.causal) cannot "
             "see; use batch or none"),
        ]
        require(checks)

    @property
    def in_channels(self) -> int:
        """1 (compressed magnitude) or 2 (compressed real/imag)."""
        return 2 if self.output == "complex" else 1

    @property
    def out_channels(self) -> int:
        return self.in_channels

    @property
    def multiple(self) -> int:
        """F (and T, unless causal) is padded to a multiple of this (``2 ** depth``)."""
        return 2**self.depth

    @property
    def frame_multiple(self) -> int:
        """The network's grid along T in frames: ``2 ** depth``, or 1 for a causal network (no
        stride along T, so its output does not depend on where a signal starts on a grid)."""
        return 1 if self.causal else self.multiple

    @property
    def context_frames(self) -> int:
        """Past frames a causal network's output frame depends on (0 for the non-causal one)."""
        if not self.causal:
            return 0
        return 2 * (self.time_kernel - 1) * (2**self.depth - 1) - self.lookahead


_NAMED = {
    # ~50 k parameters: tests and the smoke recipe.
    "tiny": dict(depth=4, base_channels=8, max_channels=48, kernel_size=3, norm="batch"),
    # CPU default, 2.86 M parameters: 6 levels (F, T / 64 at the bottleneck), 5x5 as the paper.
    # benchmarks/train_step.py, 8 x 256x256 patches on 2 heavily shared AMX cores: 2.0-4.0
    # examples/s fp32, 2.7-5.7 with channels_last + bf16 (the `auto` precision); README: idle rates.
    "small": dict(depth=6, base_channels=16, max_channels=128, kernel_size=5, norm="batch"),
    # Ernst et al. 2018 / pix2pix: 8 levels, 64 -> 512 channels, 256x256 patches.
    "paper": dict(depth=8, base_channels=64, max_channels=512, kernel_size=5, norm="batch", dropout=0.5),
    # Real-time (issue #28), 0.4 M parameters: causal, 1 frame (8 ms) ahead, 2-frame kernels 2**i
    # frames apart (1 s of past context); with the 512/128 STFT at 16 kHz the latency is 512 + 128
    # - 1 samples (40 ms).  Sized so that one frame's step stays well under the hop on one CPU
    # thread (benchmarks/streaming.py); full-length time axes at every level make its training
    # steps cost more than small's.
    "realtime": dict(depth=6, base_channels=16, max_channels=64, kernel_size=5, norm="batch", causal=True,
                     lookahead=1, time_kernel=2),
}


def model_config(name: str, **overrides) -> ModelConfig:
    """A named configuration (``"tiny"``, ``"small"``, ``"paper"``, ``"realtime"``) with optional
    field overrides."""
    if name not in _NAMED:
        raise DereverbError(f"unknown model configuration {name!r}; choose from {', '.join(_NAMED)}")
    return from_dict(ModelConfig, {**_NAMED[name], **overrides}, where="model.")


def latency_samples(stft: StftConfig, cfg: ModelConfig) -> int:
    """A causal model's algorithmic latency in samples: ``n_fft + lookahead * hop - 1``, the window
    plus the lookahead (output sample ``n`` is final once the last frame that overlaps it, and that
    frame's lookahead, are in: :mod:`dereverb.streaming`)."""
    return stft.n_fft + cfg.lookahead * stft.hop_length - 1


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class UNet(nn.Module):
    """Encoder-decoder with skip connections on ``(B, C_in, F, T)`` -> ``(B, C_out, F, T)``.

    Any F and T: the input is zero padded (in the normalised domain, i.e. at the mean) to a
    multiple of ``2 ** depth`` and the output cropped back.  The innermost level has no
    normalisation (its map can be 1x1, as in pix2pix).  ``channels_last`` makes the convolutions
    use the NHWC layout, which oneDNN runs faster on CPUs with AMX.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.channels_last = False
        k, p = cfg.kernel_size, cfg.kernel_size // 2
        c_last = _build_levels(
            self, cfg,
            lambda i, c_in, c_out, bias: nn.Conv2d(c_in, c_out, k, stride=2, padding=p, bias=bias),
            lambda j, c_in, c_out, bias: nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=p, output_padding=1,
                                                            bias=bias))
        self.head = nn.ConvTranspose2d(c_last, cfg.out_channels, k, stride=2, padding=p, output_padding=1)

    def forward(self, x: Tensor) -> Tensor:
        n_f, n_t = x.shape[-2:]
        m = self.cfg.multiple
        x = F.pad(x, (0, -n_t % m, 0, -n_f % m))  # (B, C, F', T'), F', T' multiples of m
        x = self.head(_encode_decode(self, x))
        return x[..., :n_f, :n_t]


def _build_levels(net: nn.Module, cfg: ModelConfig, down_conv, up_conv) -> int:
    """Give ``net`` its encoder ``down`` (level ``i``: ``down_conv(i, c_in, c_out, bias)``, norm,
    LeakyReLU) and decoder ``up`` (the level making ``chans[j-1]``: ``up_conv(j, c_in, c_out, bias)``,
    norm, dropout on the innermost :data:`DROPOUT_LEVELS`, ReLU), channels doubling from
    ``base_channels`` up to ``max_channels``; shared by :class:`UNet` and :class:`CausalUNet`.
    Returns the head's input channels."""
    chans = [min(cfg.base_channels * 2**i, cfg.max_channels) for i in range(cfg.depth)]
    net.down = nn.ModuleList()
    c_prev = cfg.in_channels
    for i, c in enumerate(chans):
        norm = "none" if i in (0, cfg.depth - 1) else cfg.norm
        net.down.append(nn.Sequential(down_conv(i, c_prev, c, norm != "batch"), _norm(norm, c), nn.LeakyReLU(0.2)))
        c_prev = c
    net.up = nn.ModuleList()
    for j in reversed(range(1, cfg.depth)):  # decoder level producing chans[j-1]
        c_in = chans[j] if j == cfg.depth - 1 else 2 * chans[j]
        drop = cfg.dropout if (cfg.depth - 1 - j) < DROPOUT_LEVELS else 0.0
        net.up.append(nn.Sequential(up_conv(j, c_in, chans[j - 1], cfg.norm != "batch"),
                                    _norm(cfg.norm, chans[j - 1]), nn.Dropout(drop), nn.ReLU()))
    return chans[0] if cfg.depth == 1 else 2 * chans[0]


def _encode_decode(net: nn.Module, x: Tensor) -> Tensor:
    """``net.down`` then ``net.up`` with skip connections, before the head: ``x (B, C, F', T')`` ->
    ``(B, 2 C_0, F', T')`` (``(B, C_0, ...)`` at depth 1); shared by :class:`UNet` and
    :class:`CausalUNet`."""
    if net.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    skips = []
    for layer in net.down:
        x = layer(x)
        skips.append(x)
    skips.pop()  # the innermost output is x itself
    for layer in net.up:
        x = layer(x)
        x = torch.cat([x, skips.pop()], dim=1)  # (B, 2C, F_l, T_l)
    return x


class CausalUNet(nn.Module):
    """The real-time U-Net (``model.causal``): ``(B, C_in, F, T)`` -> ``(B, C_out, F, T)`` where
    output frame ``t`` depends on input frames ``t - cfg.context_frames .. t + cfg.lookahead``.

    The levels of :class:`UNet` (channels, skips, norms, dropout) with F strided and T not: level
    ``i`` convolves ``time_kernel`` frames ``2**i`` apart (a dilated causal convolution, as in
    temporal convolutional networks), the decoder level that mirrors it the same.  F is zero padded
    to a multiple of ``2 ** depth``; T is never padded, so any frame count works and the output does
    not depend on where a signal starts.  :class:`StreamingUNet` runs the same weights one frame at a time.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.channels_last = False
        kf, kt = cfg.kernel_size, cfg.time_kernel
        c_last = _build_levels(
            self, cfg,
            lambda i, c_in, c_out, bias: CausalConv2d(c_in, c_out, kf, kt, 2**i, cfg.lookahead if i == 0 else 0,
                                                      bias=bias),
            lambda j, c_in, c_out, bias: CausalConvTranspose2d(c_in, c_out, kf, kt, 2**j, bias=bias))
        self.head = CausalConvTranspose2d(c_last, cfg.out_channels, kf, kt, 1)

    def forward(self, x: Tensor) -> Tensor:
        n_f = x.shape[-2]
        x = F.pad(x, (0, 0, 0, -n_f % self.cfg.multiple))  # (B, C, F', T), F' a multiple of 2**depth
        return self.head(_encode_decode(self, x))[..., :n_f, :]


class PatchDiscriminator(nn.Module):
    """PatchGAN of pix2pix (Isola et al., CVPR 2017), conditioned on the reverberant input.

    ``forward(cond (B, C, F, T), x (B, C, F, T)) -> logits (B, 1, F', T')``, one logit per
    overlapping patch (70x70 receptive field for ``n_layers = 3``).
    """

    def __init__(self, in_channels: int, base_channels: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(2 * in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = base_channels
        for i in range(1, n_layers + 1):
            c_next = base_channels * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, c_next, 4, stride, 1, bias=norm != "batch"), _norm(norm, c_next),
                       nn.LeakyReLU(0.2)]
            c = c_next
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, cond: Tensor, x: Tensor) -> Tensor:
        return self.net(torch.cat([cond, x], dim=1))


class DereverbModel(nn.Module):
    """STFT features -> U-Net -> enhanced complex spectrogram (see the module docstring).

    The normaliser's statistics are fitted on reverberant training features before training
    (:meth:`fit_normalizer`) and saved in the checkpoint; they normalise both input and target.
    """

    def __init__(self, stft: StftConfig, features: FeatureConfig, model: ModelConfig):
        super().__init__()
        self.stft_config, self.feature_config, self.model_config = stft, features, model
        self.stft = spectral.Stft(stft)
        self.normalizer = spectral.Normalizer(stft.n_freq, features.normalization)
        if model.causal and features.frontend != "none":
            raise DereverbError(f"features.frontend {features.frontend} runs over the whole signal, which a causal "
                                "model (model.causal) cannot see; use frontend none")
        self.net = CausalUNet(model) if model.causal else UNet(model)

    @property
    def phase_modes(self) -> tuple[str, ...]:
        return ("model",) if self.model_config.output == "complex" else ("reverberant", "griffinlim")

    @torch.no_grad()
    def frontend(self, spec: Tensor) -> Tensor:
        """The fixed signal processing before the network: complex ``(B, F_full, T)`` -> the same
        shape.  ``features.frontend == "wpe"``: WPE, then resynthesis and analysis again, so the
        network sees a consistent STFT (an STFT of a signal) as in training on plain reverberant
        input; WPE's raw output is not one, and v8 scored 0.08 PESQ lower on it (model card).
        Otherwise ``spec`` itself."""
        fc = self.feature_config
        if fc.frontend == "none":
            return spec
        out = wpe.wpe(spec, fc.wpe_taps, fc.wpe_delay, fc.wpe_iterations)
        return self.stft(self.stft.inverse(out, length=(spec.shape[-1] - 1) * self.stft_config.hop_length))

    def features(self, spec: Tensor) -> Tensor:
        """Complex ``(B, F_full, T)`` -> unnormalised features ``(B, C_in, n_freq, T)``."""
        kept, _ = spectral.trim_freq(spec, self.stft_config.n_freq)
        if self.model_config.output == "complex":
            return spectral.complex_to_channels(spectral.compress_complex(kept, self.feature_config.power))
        return spectral.compress(kept.abs(), self.feature_config).unsqueeze(1)

    def encode(self, spec: Tensor) -> Tensor:
        """Complex ``(B, F_full, T)`` -> normalised features ``(B, C_in, n_freq, T)``."""
        return self.normalizer(self.features(spec))

    @torch.no_grad()
    def fit_normalizer(self, specs: Tensor) -> None:
        """Fit the normaliser on reverberant complex spectrograms ``(N, F_full, T)``."""
        self.normalizer.fit(self.features(specs))

    def activate(self, out: Tensor) -> Tensor:
        """Raw network output ``(B, C_out, n_freq, T)`` -> the mask in [0, 1] (a sigmoid) for
        ``mask`` models, the output itself otherwise."""
        return torch.sigmoid(out) if self.model_config.output == "mask" else out

    def output_features(self, out: Tensor, spec: Tensor) -> Tensor:
        """Network output -> normalised features comparable with ``encode(clean_spec)``.

        For ``mapping``/``complex`` that is the (activated) output itself; for ``mask`` the
        masked reverberant magnitude, compressed and normalised.
        """
        out = self.activate(out.float())
        if self.model_config.output != "mask":
            return out
        kept, _ = spectral.trim_freq(spec, self.stft_config.n_freq)
        mag = out[:, 0] * kept.abs()  # (B, n_freq, T)
        return self.normalizer(spectral.compress(mag, self.feature_config).unsqueeze(1))

    def decode(self, out: Tensor, spec: Tensor) -> Tensor:
        """Raw network output ``(B, C_out, n_freq, T)`` + input ``(B, F_full, T)`` -> complex ``(B, F_full, T)``.

        Magnitude outputs take the reverberant phase; the trimmed top bins come from the input.
        """
        out = self.activate(out.float())
        kept, dropped = spectral.trim_freq(spec, self.stft_config.n_freq)
        if self.model_config.output == "complex":
            est = spectral.decompress_complex(spectral.channels_to_complex(self.normalizer.inverse(out)),
                                              self.feature_config.power)
        elif self.model_config.output == "mask":
            est = spectral.with_phase(out[:, 0] * kept.abs(), kept)
        else:
            mag = spectral.decompress(self.normalizer.inverse(out)[:, 0], self.feature_config)
            est = spectral.with_phase(mag, kept)
        return spectral.restore_freq(est, self.stft_config.n_fft, dropped)

    def forward(self, spec: Tensor) -> Tensor:
        """Complex reverberant ``(B, F_full, T)`` -> enhanced complex ``(B, F_full, T)`` (through
        the frontend; :meth:`encode` and :meth:`decode` take spectrograms after it)."""
        spec = self.frontend(spec)
        return self.decode(self.net(self.encode(spec)), spec)

    def enhanced_magnitude(self, spec: Tensor) -> Tensor:
        """Enhanced magnitude ``(B, F_full, T)`` float (for Griffin-Lim phase reconstruction)."""
        return self.forward(spec).abs()

    def enhance_wave(self, wave: Tensor) -> Tensor:
        """Waveform ``(B, S)`` at ``stft.sample_rate`` -> enhanced ``(B, S)`` (model/reverberant phase).

        One network pass, as in training and validation; :class:`dereverb.enhance.Dereverberator`
        averages passes over the network's grid (``shifts``) and streams long signals."""
        return self.stft.inverse(self.forward(self.stft(wave)), length=wave.shape[-1])

    def set_channels_last(self, enabled: bool = True) -> "DereverbModel":
        """Store the network's weights (and run its convolutions) in NHWC layout."""
        fmt = torch.channels_last if enabled else torch.contiguous_format
        self.net.to(memory_format=fmt)
        self.net.channels_last = enabled
        return self


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@functools.lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """True if this CPU has AMX bf16 tiles (``amx_bf16`` in /proc/cpuinfo), where bf16 pays off."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def autocast_dtype(device: torch.device | str, enabled: bool = True) -> torch.dtype | None:
    """Mixed-precision dtype for ``device``: bf16 on AMX CPUs, fp16/bf16 on CUDA, else None (fp32)."""
    device = torch.device(device)
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_amx():
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` context for ``dtype`` on ``device`` (a no-op context when ``dtype`` is None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
