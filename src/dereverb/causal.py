"""The real-time network's parts: causal convolutions along time (:class:`CausalConv2d`,
:class:`CausalConvTranspose2d`), which :class:`~dereverb.model.CausalUNet` stacks, and
:class:`StreamingUNet`, the same network one frame at a time with its time context as explicit
state (what :mod:`dereverb.streaming` and the streaming ONNX export run).

Shapes: features ``(B, C, F, T)``; a frame ``(B, C, F, 1)``.  Nothing here reads a config: the
layers take their sizes, :class:`StreamingUNet` a built network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalConv2d(nn.Conv2d):
    """``(B, C, F, T)`` -> ``(B, C', ceil(F/2), T)``: stride 2 along F only; along T a kernel of
    ``kt`` frames ``dilation`` apart, over the ``context = (kt - 1) * dilation`` frames before
    and ``lookahead`` of them moved after (zeros beyond either end of the signal)."""

    def __init__(self, c_in: int, c_out: int, kf: int, kt: int, dilation: int = 1, lookahead: int = 0,
                 bias: bool = True):
        super().__init__(c_in, c_out, (kf, kt), stride=(2, 1), padding=(kf // 2, 0), dilation=(1, dilation),
                         bias=bias)
        self.context, self.lookahead = (kt - 1) * dilation, lookahead

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.context - self.lookahead, self.lookahead)))


class CausalConvTranspose2d(nn.ConvTranspose2d):
    """``(B, C, F, T)`` -> ``(B, C', 2F, T)``: the decoder's mirror of :class:`CausalConv2d`,
    upsampling F by 2; output frame ``t`` sums the inputs at ``t, t - dilation, ...`` (the
    transposed convolution's first ``T`` frames).

    It runs in its polyphase form: even and odd output bins are two plain convolutions of the
    input (stacked as ``2 C'`` channels, then interleaved), which CPUs run several times faster
    than a dilated transposed convolution, forward and backward.  The parameters are the
    transposed convolution's.
    """

    def __init__(self, c_in: int, c_out: int, kf: int, kt: int, dilation: int = 1, bias: bool = True):
        super().__init__(c_in, c_out, (kf, kt), stride=(2, 1), padding=(kf // 2, 0), output_padding=(1, 0),
                         dilation=(1, dilation), bias=bias)
        self.context = (kt - 1) * dilation

    @property
    def offsets(self) -> range:
        """Input bins ``q + m`` that output bins ``2q`` and ``2q + 1`` read: ``m`` such that the
        kernel tap ``r + padding - 2m`` along F is in range for a parity ``r``."""
        pad, kf = self.padding[0], self.kernel_size[0]
        return range(-((kf - 1 - pad) // 2), (pad + 1) // 2 + 1)

    def polyphase_weight(self) -> Tensor:
        """The kernel as a plain convolution's, ``(2 C', C, len(offsets), kt)``: output channels
        (parity, channel), input bins ``q + offsets``, taps oldest first (the time axis flipped)."""
        pad, kf = self.padding[0], self.kernel_size[0]
        m = torch.tensor(list(self.offsets))
        k = torch.arange(2)[:, None] + pad - 2 * m[None, :]  # (2, n): the tap along F
        w = self.weight.flip(-1)[:, :, k.clamp(0, kf - 1), :] * ((k >= 0) & (k < kf))[:, :, None]  # (C, C', 2, n, kt)
        return w.permute(2, 1, 0, 3, 4).flatten(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        m = self.offsets
        x = F.pad(x, (self.context, 0, -m[0], m[-1]))  # the past frames; the bins beyond either edge
        bias = None if self.bias is None else torch.cat([self.bias, self.bias])
        y = F.conv2d(x, self.polyphase_weight(), bias, dilation=self.dilation)  # (B, 2C', F, T)
        b, _, n_f, n_t = y.shape
        return y.unflatten(1, (2, -1)).permute(0, 2, 3, 1, 4).reshape(b, -1, 2 * n_f, n_t)  # bin 2q + r


class StreamingUNet(nn.Module):
    """A :class:`~dereverb.model.CausalUNet` one frame at a time, its time context held as explicit state.

    ``forward(frame (B, C_in, n_freq, 1), *state) -> (out (B, C_out, n_freq, 1), *next_state)``:
    ``state`` holds, for each convolution (encoder, decoder, head), the ``context`` input frames
    before the newest, flattened ``(B, context * F_l * C_l)`` (bins major, channels minor), zeros at
    the start (:meth:`initial_state`).  With a lookahead of ``L`` frames ``out`` is the output
    frame ``L`` before ``frame``, and a signal's first ``L`` frames only enter the first layer's
    state (:meth:`prime`).  Fed a signal's frames, then ``L`` zero frames, it gives the network's
    output on the whole signal (to float rounding).

    Each layer on one frame is one gather of bins (its taps ``2**i`` frames apart, the bins each
    output bin reads, zeros beyond the edges) and one matrix product (batch norms folded in; transposed
    convolutions in their polyphase form, even and odd output bins as two plain convolutions): on
    one frame that is several times faster on a CPU than convolution kernels tuned for images,
    and it exports to ONNX as plain Gather/MatMul (:mod:`dereverb.export`).  A copy: later changes
    to the network's weights do not reach it.
    """

    def __init__(self, net: nn.Module, n_freq: int):  # a dereverb.model.CausalUNet
        super().__init__()
        cfg = net.cfg
        self.depth, self.n_freq, self.multiple = cfg.depth, n_freq, cfg.multiple
        self.contexts: list[int] = []
        self.sizes: list[int] = []  # values per frame of each layer's input
        self.channels: list[int] = []  # of each layer's input
        self.columns: list[tuple[int, int]] = []  # (output bins, values each reads) of each layer
        f_in, f_pad = n_freq, n_freq + (-n_freq % cfg.multiple)
        layers = [(seq[0], seq[1]) for seq in net.down] + [(seq[0], seq[1]) for seq in net.up] + [(net.head, None)]
        for i, (conv, norm) in enumerate(layers):
            transposed = isinstance(conv, CausalConvTranspose2d)
            f_out = 2 * f_in if transposed else f_pad // 2
            index, weight, bias = _frame_layer(conv, norm, f_in, f_out)
            self.register_buffer(f"index_{i}", index.flatten(), persistent=False)
            self.columns.append((index.shape[0], index.shape[1] * conv.in_channels))
            self.channels.append(conv.in_channels)
            self.register_buffer(f"weight_{i}", weight, persistent=False)
            self.register_buffer(f"bias_{i}", bias, persistent=False)
            self.contexts.append(conv.context)
            self.sizes.append(f_in * conv.in_channels)
            f_in, f_pad = f_out, f_out
        self.register_buffer("zero", torch.zeros(1, max(self.channels)), persistent=False)

    def state_shapes(self, batch: int = 1) -> list[tuple[int, int]]:
        """The state tensors' shapes: encoder, decoder, head."""
        return [(batch, n * size) for n, size in zip(self.contexts, self.sizes)]

    def initial_state(self, batch: int = 1) -> list[Tensor]:
        """Zeros: the frames before a signal starts (what the whole-signal network pads with)."""
        return [self.zero.new_zeros(shape) for shape in self.state_shapes(batch)]

    @staticmethod
    def prime(frame: Tensor, state: list[Tensor]) -> list[Tensor]:
        """One of a signal's first ``lookahead`` frames ``(B, C_in, n_freq, 1)`` into the first layer's state."""
        x = frame[..., 0].transpose(1, 2).reshape(frame.shape[0], -1)  # (B, n_freq * C_in): bins major
        return [torch.cat([state[0], x], dim=1)[:, x.shape[1] :], *state[1:]]

    def _layer(self, i: int, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """Layer ``i`` on the newest frame ``x (B, F_l, C_l)`` -> ``(B, F', C')`` (decoder levels:
        ``(B, F_l, 2 C')``, parity before channel) and its next state."""
        b, c, buffers = x.shape[0], self.channels[i], self._buffers  # (the dict: Module.__getattr__ is slow)
        window = torch.cat([state, x.reshape(b, -1), self.zero[:, :c].expand(b, c)], dim=1)  # last: a zero bin
        cols = window.view(b, -1, c).index_select(1, buffers[f"index_{i}"])  # (B, F' * taps * offsets, C)
        y = F.linear(cols.view(b, *self.columns[i]), buffers[f"weight_{i}"], buffers[f"bias_{i}"])  # (B, F', C')
        return y, window[:, self.sizes[i] : -c]

    def forward(self, frame: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        b, depth = frame.shape[0], self.depth
        x = frame[..., 0].transpose(1, 2)  # (B, n_freq, C_in): bins major
        nxt, skips = [], []
        for i in range(depth):
            x, s = self._layer(i, x, state[i])
            x = F.leaky_relu(x, 0.2)
            nxt.append(s)
            skips.append(x)
        skips.pop()  # the innermost output is x itself
        for i in range(depth, 2 * depth - 1):
            y, s = self._layer(i, x, state[i])
            y = F.relu(y.reshape(b, 2 * y.shape[1], -1))  # (B, 2F, C'): bin 2q + r
            x = torch.cat([y, skips.pop()], dim=2)  # (B, 2F, 2C')
            nxt.append(s)
        y, s = self._layer(2 * depth - 1, x, state[-1])
        y = y.reshape(b, 2 * y.shape[1], -1)[:, : self.n_freq]  # (B, n_freq, C_out)
        return (y.transpose(1, 2).unsqueeze(-1), *nxt, s)


def _frame_layer(conv: nn.Module, norm: nn.Module | None, f_in: int, f_out: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(index (F', K / C), weight (C' or 2 C', K), bias)`` of one causal (transposed) convolution on
    one frame: ``window[index]`` are the bins (C values each) each output bin reads, ``window`` being
    the layer's frames, oldest first, each ``f_in`` bins, then a bin of zeros (for taps beyond the edges).

    Columns ``K`` run over (tap, bin offset, channel).  A strided convolution's output bin ``q``
    reads bins ``2q - pad + u``; a transposed one, in its polyphase form, gives output bins ``2q``
    and ``2q + 1`` (rows: parity, channel) from bins ``q + m``.  An eval batch norm after the
    convolution is folded into the weight and bias.
    """
    with torch.no_grad():
        transposed = isinstance(conv, CausalConvTranspose2d)
        w = (conv.polyphase_weight() if transposed else conv.weight).detach().float()  # (rows, C, n, kt)
        bias = conv.bias.detach().float() if conv.bias is not None else w.new_zeros(conv.out_channels)
        scale = torch.ones_like(bias)
        if isinstance(norm, nn.BatchNorm2d):
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            bias = (bias - norm.running_mean) * scale + norm.bias
        if transposed:  # rows (parity, channel)
            scale, bias = scale.repeat(2), bias.repeat(2)
            offsets, starts = torch.tensor(list(conv.offsets)), torch.arange(f_in)
        else:
            offsets, starts = torch.arange(conv.kernel_size[0]) - conv.padding[0], 2 * torch.arange(f_out)
        matrix = (w * scale[:, None, None, None]).permute(0, 3, 2, 1).reshape(w.shape[0], -1)
        c_in, kt, d = conv.in_channels, conv.kernel_size[1], conv.dilation[1]
        taps = torch.arange(kt) * d  # frames in the window, oldest first
        bins = starts[:, None] + offsets[None, :]  # (F', n)
        index = (taps[:, None, None] * f_in + bins[None]).permute(1, 0, 2)  # (F', kt, n): rows of C values
        inside = ((bins >= 0) & (bins < f_in))[:, None, :].expand_as(index)
        index = torch.where(inside, index, torch.full_like(index, (conv.context + 1) * f_in))  # the zero bin
    return index.reshape(index.shape[0], -1).contiguous(), matrix.contiguous(), bias.contiguous()
