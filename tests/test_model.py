"""U-Net shapes, gradient flow, the feature <-> spectrogram round trips and a one-batch overfit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from dereverb.config import FeatureConfig, StftConfig
from dereverb.errors import DereverbError
from dereverb.causal import StreamingUNet
from dereverb.model import (CausalUNet, DereverbModel, ModelConfig, PatchDiscriminator, UNet, count_parameters,
                            latency_samples, model_config)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
@pytest.mark.parametrize("depth", [1, 3, 5])
def test_unet_keeps_any_shape(kernel, norm, depth):
    cfg = ModelConfig(depth=depth, kernel_size=kernel, norm=norm, base_channels=4, max_channels=8)
    net = UNet(cfg).train()
    for n_f, n_t in [(37, 19), (256, 1), (1, 50), (64, 64)]:
        x = torch.randn(2, 1, n_f, n_t)
        assert net(x).shape == (2, 1, n_f, n_t)


@pytest.mark.slow
def test_named_configurations_sizes():
    sizes = {name: count_parameters(UNet(model_config(name))) for name in ("tiny", "small", "paper")}
    assert 30_000 < sizes["tiny"] < 70_000
    assert 1_000_000 < sizes["small"] <= 3_000_000
    assert sizes["paper"] > 50_000_000
    paper = model_config("paper")
    assert (paper.depth, paper.base_channels, paper.max_channels) == (8, 64, 512)
    assert UNet(paper).down[-1][0].out_channels == 512


def test_bad_model_config_is_a_clear_error():
    with pytest.raises(DereverbError, match="model.output"):
        ModelConfig(output="phase")
    with pytest.raises(DereverbError, match="kernel_size"):
        ModelConfig(kernel_size=4)
    with pytest.raises(DereverbError, match="unknown model configuration 'huge'"):
        model_config("huge")


@pytest.mark.parametrize("output", ["mapping", "mask", "complex"])
def test_gradients_reach_every_layer(output):
    cfg = model_config("tiny", output=output, dropout=0.5)
    model = DereverbModel(StftConfig(), FeatureConfig(), cfg).train()
    spec = model.stft(torch.randn(2, 6000, generator=torch.Generator().manual_seed(0)))
    out = model.output_features(model.net(model.encode(spec)), spec)
    assert out.shape == (2, cfg.out_channels, 256, spec.shape[-1])
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("output", ["mapping", "mask", "complex"])
@pytest.mark.parametrize("compression", ["log", "power"])
def test_gradients_are_finite_on_digital_silence(output, compression):
    """Exact zeros in the input (padded or gated audio) must not poison the loss: the power law's
    derivative is infinite at 0, and a mask model trained through it diverged at step 11."""
    model = DereverbModel(StftConfig(), FeatureConfig(compression=compression),
                          model_config("tiny", output=output)).train()
    wave = torch.randn(2, 6000, generator=torch.Generator().manual_seed(0))
    wave[:, 3000:] = 0.0  # the second half is digital silence
    spec, clean = model.stft(wave), model.stft(0.5 * wave)
    model.fit_normalizer(spec)
    loss = (model.output_features(model.net(model.encode(spec)), spec) - model.encode(clean)).abs().mean()
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def _reverberant_pair(speech, rir, seconds=1.0):
    dry = speech[0][: int(16000 * seconds)].astype(np.float64)
    wet = scipy.signal.fftconvolve(dry, rir[:8000])[: len(dry)]
    return torch.tensor(wet / np.abs(wet).max() * 0.5, dtype=torch.float32)[None], \
        torch.tensor(dry / np.abs(dry).max() * 0.5, dtype=torch.float32)[None]


@pytest.mark.parametrize("output", ["mapping", "mask", "complex"])
def test_identity_output_reproduces_the_input(output, speech, rir_16k):
    """decode() inverts encode(): fed its own input features, the model returns its input."""
    feats = FeatureConfig(compression="power") if output == "complex" else FeatureConfig()
    cfg = model_config("tiny", output=output)
    model = DereverbModel(StftConfig(), feats, cfg)
    wet, _ = _reverberant_pair(speech, rir_16k)
    spec = model.stft(wet)
    model.fit_normalizer(spec)
    # the mask's identity is 1, a saturated sigmoid
    ident = torch.full_like(model.encode(spec), 30.0) if output == "mask" else model.encode(spec)
    est = model.decode(ident, spec)
    loud = spec.abs() > 1e-4  # above the -100 dB floor of the log features
    assert est.shape == spec.shape
    assert torch.allclose(est[loud], spec[loud], rtol=1e-3, atol=1e-5)
    assert torch.allclose(model.output_features(ident, spec), model.encode(spec), atol=1e-3)
    assert model.phase_modes == (("model",) if output == "complex" else ("reverberant", "griffinlim"))


def test_enhance_wave_and_channels_last_agree():
    model = DereverbModel(StftConfig(), FeatureConfig(), model_config("tiny")).eval()
    wave = torch.randn(2, 5000, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        ref = model.enhance_wave(wave)
        fast = model.set_channels_last(True).enhance_wave(wave)
    assert ref.shape == wave.shape and torch.isfinite(ref).all()
    assert torch.allclose(ref, fast, atol=1e-5)
    assert model.enhanced_magnitude(model.stft(wave)).shape == (2, 257, model.stft.frames(5000))


def test_patch_discriminator_gives_patch_logits():
    disc = PatchDiscriminator(1, base_channels=8, n_layers=3)
    cond, x = torch.randn(2, 1, 256, 64), torch.randn(2, 1, 256, 64)
    # three stride-2 convolutions, then two stride-1 4x4 convolutions (each -1)
    assert disc(cond, x).shape == (2, 1, 256 // 8 - 2, 64 // 8 - 2)


@pytest.fixture
def one_thread():
    """One torch thread: on busy shared cores, two spinning OpenMP threads run 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_small_model_overfits_one_batch(speech, rir_16k, one_thread):
    torch.manual_seed(0)
    model = DereverbModel(StftConfig(), FeatureConfig(), model_config("small"))
    wet, dry = _reverberant_pair(speech, rir_16k, seconds=0.25)
    spec, clean = model.stft(wet), model.stft(dry)
    model.fit_normalizer(spec)
    x, y = model.encode(spec), model.encode(clean)
    opt = torch.optim.Adam(model.net.parameters(), lr=2e-3)
    losses = []
    for _ in range(200):  # deterministic: stops at the same step every run
        loss = (model.net(x) - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 10:
            break
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


# --- the causal (real-time) network ---------------------------------------------------------------


def _causal_net(seed: int = 0, **overrides) -> CausalUNet:
    """A random causal U-Net in eval mode with non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    cfg = model_config("tiny", causal=True, **{"lookahead": 1, **overrides})
    net = CausalUNet(cfg).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return net


@pytest.mark.parametrize("lookahead", [0, 1, 2])
def test_causal_unet_sees_its_context_and_lookahead_only(lookahead):
    """Output frame t depends on input frames t - context_frames .. t + lookahead, no others."""
    net = _causal_net(lookahead=lookahead, norm="none")
    cfg = net.cfg
    x = torch.randn(1, 1, 64, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x)
        for k in (0, 100):
            x2 = x.clone()
            x2[..., k] += 1.0
            changed = torch.nonzero((net(x2) - y).abs().amax(dim=(0, 1, 2)) > 0).flatten()
            assert int(changed[0]) == max(0, k - lookahead)
            assert int(changed[-1]) == min(159, k + cfg.context_frames)


@pytest.mark.parametrize("overrides", [
    dict(lookahead=0), dict(lookahead=1), dict(lookahead=2, norm="none"), dict(time_kernel=2, kernel_size=5),
    dict(output="complex", time_kernel=4, lookahead=2), dict(depth=1), dict(depth=2, dropout=0.5),
])
def test_streaming_unet_frame_by_frame_equals_the_whole_signal(overrides):
    """The streaming form on one frame at a time (then ``lookahead`` zero frames) gives the
    network's whole-signal output: batch norms folded, odd bin counts, two rows, any depth."""
    net = _causal_net(**overrides)
    n_freq, lookahead = 250, net.cfg.lookahead
    x = torch.randn(2, net.cfg.in_channels, n_freq, 70, generator=torch.Generator().manual_seed(2))
    step = StreamingUNet(net, n_freq)
    state, outs = step.initial_state(2), []
    with torch.no_grad():
        ref = net(x)
        for t, frame in enumerate([*x.split(1, dim=-1), *[torch.zeros_like(x[..., :1])] * lookahead]):
            if t < lookahead:
                state = step.prime(frame, state)
                continue
            y, *state = step(frame, *state)
            outs.append(y)
    got = torch.cat(outs, dim=-1)
    assert got.shape == ref.shape
    assert float((got - ref).norm() / ref.norm()) < 1e-5
    assert [tuple(s.shape) for s in state] == step.state_shapes(2)


def test_causal_model_refuses_what_needs_the_whole_signal():
    with pytest.raises(DereverbError, match="instance"):
        model_config("realtime", norm="instance")
    with pytest.raises(DereverbError, match="model.lookahead is for causal"):
        ModelConfig(lookahead=1)
    with pytest.raises(DereverbError, match="model.lookahead must be in 0..2"):
        model_config("realtime", lookahead=3)
    with pytest.raises(DereverbError, match="frontend wpe runs over the whole signal"):
        DereverbModel(StftConfig(), FeatureConfig(frontend="wpe"), model_config("realtime"))


def test_realtime_configuration_fits_the_latency_budget():
    """Window + lookahead at most 40 ms at 16 kHz with the default STFT, and a past context the
    offline chunking's margin covers (so chunked files equal one pass)."""
    from dereverb.chunking import ChunkConfig

    cfg, stft = model_config("realtime"), StftConfig()
    assert latency_samples(stft, cfg) == 512 + 128 - 1
    assert cfg.causal and latency_samples(stft, cfg) / stft.sample_rate <= 0.040
    assert cfg.frame_multiple == 1 and cfg.context_frames <= ChunkConfig().margin_frames
    assert ModelConfig().frame_multiple == ModelConfig().multiple == 64 and ModelConfig().context_frames == 0


def test_causal_model_trains_end_to_end():
    """Gradients reach every layer of the causal network through the model's features and loss."""
    torch.manual_seed(0)
    model = DereverbModel(StftConfig(), FeatureConfig(compression="power"),
                          model_config("tiny", output="mask", causal=True, lookahead=1, dropout=0.5)).train()
    spec = model.stft(torch.randn(2, 6000, generator=torch.Generator().manual_seed(0)))
    model.fit_normalizer(spec)
    out = model.output_features(model.net(model.encode(spec)), spec)
    assert out.shape == (2, 1, 256, spec.shape[-1])
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
