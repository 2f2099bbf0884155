"""Spectral core against torch.stft and against the invariants of each transform pair."""

from __future__ import annotations

import pytest
import torch

from dereverb import spectral
from dereverb.config import FeatureConfig, StftConfig


@pytest.fixture(scope="module")
def stft() -> spectral.Stft:
    return spectral.Stft(StftConfig())


def test_stft_equals_torch_stft(stft):
    x = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0))
    ref = torch.stft(
        x, 512, 128, 512, torch.hann_window(512), center=True, pad_mode="constant", return_complex=True
    )
    got = stft(x)
    assert got.shape == (3, 257, 16000 // 128 + 1) == ref.shape
    assert torch.allclose(got, ref)
    assert stft.frames(16000) == got.shape[-1]


@pytest.mark.parametrize("length", [1, 127, 16000, 16001])
def test_istft_inverts_stft(stft, length):
    x = torch.randn(2, length, dtype=torch.float64, generator=torch.Generator().manual_seed(length))
    y = stft.inverse(stft(x), length=length)
    assert y.shape == x.shape
    assert torch.max(torch.abs(y - x)) < 1e-6


def test_istft_inverts_stft_float32_speech(stft, speech):
    x = torch.from_numpy(speech[0])
    y = stft.inverse(stft(x), length=len(x))
    assert torch.max(torch.abs(y - x)) < 1e-6


def test_trim_and_restore_frequency_axis(stft):
    spec = stft(torch.randn(1, 4000))
    kept, dropped = spectral.trim_freq(spec, 256)
    assert kept.shape[-2] == 256 and dropped.shape[-2] == 1
    assert torch.equal(spectral.restore_freq(kept, 512, dropped), spec)
    zero = spectral.restore_freq(kept, 512)
    assert zero.shape == spec.shape and torch.all(zero[..., 256, :] == 0)


def test_db_round_trip_and_floor():
    mag = torch.tensor([1.0, 0.1, 1e-3, 0.0])
    db = spectral.magnitude_to_db(mag, floor_db=-80.0)
    assert torch.allclose(db, torch.tensor([0.0, -20.0, -60.0, -80.0]))
    assert torch.allclose(spectral.db_to_magnitude(db[:3]), mag[:3], rtol=1e-5)


@pytest.mark.parametrize("cfg", [FeatureConfig(compression="log"), FeatureConfig(compression="power", power=0.3)])
def test_compress_decompress_round_trip(cfg):
    mag = torch.rand(2, 256, 50) + 1e-3
    assert torch.allclose(spectral.decompress(spectral.compress(mag, cfg), cfg), mag, rtol=1e-4)


def test_power_compression_values():
    assert torch.allclose(spectral.power_compress(torch.tensor([8.0]), 1 / 3), torch.tensor([2.0]))


def test_complex_compression_keeps_phase_and_inverts(stft):
    spec = stft(torch.randn(1, 2000))
    c = spectral.compress_complex(spec, 0.3)
    nz = spec.abs() > 1e-6
    assert torch.allclose(torch.angle(c)[nz], torch.angle(spec)[nz], atol=1e-5)
    assert torch.allclose(c.abs()[nz], spec.abs()[nz] ** 0.3, rtol=1e-4)
    assert torch.allclose(spectral.decompress_complex(c, 0.3), spec, atol=1e-5)


def test_real_imag_channels_round_trip(stft):
    spec = stft(torch.randn(4, 3000))
    ch = spectral.complex_to_channels(spec)
    assert ch.shape == (4, 2, 257, spec.shape[-1])
    assert torch.equal(spectral.channels_to_complex(ch), spec)


@pytest.mark.parametrize("mode", ["global", "per_freq", "none"])
def test_normalizer_fits_inverts_and_serialises(mode):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 256, 40, generator=g) * torch.linspace(1, 5, 256)[:, None] - 30
    norm = spectral.Normalizer(256, mode).fit(feats)
    z = norm(feats)
    if mode == "per_freq":
        assert torch.allclose(z.mean(dim=(0, 2)), torch.zeros(256), atol=1e-4)
        assert torch.allclose(z.std(dim=(0, 2)), torch.ones(256), atol=1e-3)
    elif mode == "global":
        assert abs(z.mean().item()) < 1e-4 and abs(z.std().item() - 1) < 1e-3
    else:
        assert torch.equal(z, feats)
    assert torch.allclose(norm.inverse(z), feats, atol=1e-4)
    again = spectral.Normalizer.from_dict(norm.to_dict(), 256)
    assert torch.equal(again(feats), z)


def test_with_phase_takes_magnitude_and_phase(stft):
    a, b = stft(torch.randn(2, 2000)).unbind(0)
    c = spectral.with_phase(a.abs(), b)
    assert torch.allclose(c.abs(), a.abs(), atol=1e-5)
    nz = b.abs() > 1e-6
    assert torch.allclose(torch.angle(c)[nz & (a.abs() > 1e-6)], torch.angle(b)[nz & (a.abs() > 1e-6)], atol=1e-4)


def test_reverberant_phase_with_exact_magnitude_is_exact(stft, speech):
    x = torch.from_numpy(speech[0][:16000])
    spec = stft(x)
    y = stft.inverse(spectral.with_phase(spec.abs(), spec), len(x))
    assert torch.max(torch.abs(y - x)) < 1e-5


def _gl_error(mag, stft, n_iter, momentum):
    wave = spectral.griffin_lim(
        mag, stft, 16000, n_iter=n_iter, momentum=momentum, generator=torch.Generator().manual_seed(0)
    )
    est = stft(wave).abs()  # spectral convergence: ||mag - |STFT(wave)| ||_F / ||mag||_F, 0 when exact
    return (torch.linalg.vector_norm(mag - est) / torch.linalg.vector_norm(mag)).item()


@pytest.mark.slow
def test_griffin_lim_converges_and_fast_gl_is_faster(stft, speech):
    mag = stft(torch.from_numpy(speech[0][8000:24000])).abs()
    plain = [_gl_error(mag, stft, n, 0.0) for n in (2, 8, 32)]
    assert plain[0] > plain[1] > plain[2]
    fast = [_gl_error(mag, stft, n, 0.99) for n in (2, 8, 32)]
    assert fast[2] < plain[2]
    # fast GL reaches plain GL's 32-iteration error in at most 16 iterations
    assert _gl_error(mag, stft, 16, 0.99) <= plain[2]


def test_griffin_lim_is_batched(stft):
    mag = stft(torch.randn(3, 4000, generator=torch.Generator().manual_seed(1))).abs()
    wave = spectral.griffin_lim(mag, stft, 4000, n_iter=4, generator=torch.Generator().manual_seed(0))
    assert wave.shape == (3, 4000) and torch.isfinite(wave).all()
