"""U-Net shapes, gradient flow, the feature <-> spectrogram round trips and a one-batch overfit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from dereverb.config import FeatureConfig, StftConfig
from dereverb.errors import DereverbError
from dereverb.model import (Blur, DereverbModel, ModelConfig, PatchDiscriminator, UNet, count_parameters,
                            model_config)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
@pytest.mark.parametrize("depth", [1, 3, 5])
def test_unet_keeps_any_shape(kernel, norm, depth):
    cfg = ModelConfig(depth=depth, kernel_size=kernel, norm=norm, base_channels=4, max_channels=8)
    net = UNet(cfg).train()
    for n_f, n_t in [(37, 19), (256, 1), (1, 50), (64, 64)]:
        x = torch.randn(2, 1, n_f, n_t)
        assert net(x).shape == (2, 1, n_f, n_t)


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
    with pytest.raises(DereverbError, match="model.antialias"):
        ModelConfig(antialias="freq")


def test_blur_is_the_121_filter_along_the_chosen_axes():
    x = torch.randn(2, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    t = Blur((-1,))(x)
    xp = np.pad(x.numpy(), [(0, 0)] * 3 + [(1, 1)], mode="edge")
    np.testing.assert_allclose(t.numpy(), 0.25 * xp[..., :-2] + 0.5 * xp[..., 1:-1] + 0.25 * xp[..., 2:], atol=1e-6)
    torch.testing.assert_close(Blur((-1, -2))(x), Blur((-1,))(Blur((-2,))(x)))
    torch.testing.assert_close(Blur((-1, -2))(torch.full_like(x, 3.0)), torch.full_like(x, 3.0))
    nyquist = torch.tensor([1.0, -1.0] * 8).view(1, 1, 1, 16)  # alternating frames
    assert Blur((-1,))(nyquist)[..., 1:-1].abs().max() == 0
    torch.testing.assert_close(Blur((-2,))(nyquist), nyquist)  # along F it is constant
    assert not Blur((-1,)).state_dict()  # nothing to save or load


@pytest.mark.parametrize("antialias", ["time", "both"])
def test_antialias_adds_no_weights_and_makes_the_net_less_shift_dependent(antialias):
    """The same weights with and without the blur; moved by one frame, the blurred U-Net's output
    moves with the input far more closely (seed-fixed random weights: 1.13 vs 0.27 / 0.14)."""
    torch.manual_seed(0)
    plain = UNet(model_config("tiny")).eval()
    smooth = UNet(model_config("tiny", antialias=antialias)).eval()
    smooth.load_state_dict(plain.state_dict())  # strict: the same keys
    x = torch.randn(1, 1, 64, 160, generator=torch.Generator().manual_seed(0))

    def shift_error(net):
        with torch.no_grad():
            a, b = net(x[..., 16:144]), net(x[..., 17:145])  # the second input starts a frame later
        return float((a[..., 17:-16] - b[..., 16:-17]).norm() / a[..., 17:-16].norm())

    assert shift_error(smooth) < 0.4 * shift_error(plain)
    assert smooth(x).shape == x.shape


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
    cfg = model_config("tiny", output=output, mask_max=2.0)
    model = DereverbModel(StftConfig(), feats, cfg)
    wet, _ = _reverberant_pair(speech, rir_16k)
    spec = model.stft(wet)
    model.fit_normalizer(spec)
    ident = torch.zeros_like(model.encode(spec)) if output == "mask" else model.encode(spec)
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
