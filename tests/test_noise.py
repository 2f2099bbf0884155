"""Generated coloured noise (spectral slope, level) and mixing at an SNR."""

from __future__ import annotations

import numpy as np
import pytest

from dereverb import noise


@pytest.mark.parametrize("slope", [0.0, -3.0, -6.0])
def test_colored_noise_has_its_slope_and_unit_rms(slope, rng):
    x = noise.colored_noise(2**16, slope, rng)
    assert x.dtype == np.float32 and x.shape == (2**16,)
    assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)
    psd = np.abs(np.fft.rfft(x)) ** 2
    octaves = [(f, 2 * f) for f in (256, 512, 1024, 2048, 4096, 8192)]  # bins, well above DC
    level = [10 * np.log10(psd[a:b].mean()) for a, b in octaves]
    measured = np.polyfit(np.arange(len(level)), level, 1)[0]  # dB per octave of mean power density
    assert measured == pytest.approx(slope, abs=0.5)


@pytest.mark.parametrize("snr", [-5.0, 10.0, 30.0])
def test_mix_at_snr_reaches_it(snr, rng):
    s = rng.standard_normal(16000).astype(np.float32) * 0.1
    n = noise.colored_noise(16000, -3.0, rng) * 7.0
    y = noise.mix_at_snr(s, n, snr)
    assert y.dtype == np.float32
    added = y.astype(np.float64) - s
    assert 10 * np.log10(np.sum(s.astype(np.float64) ** 2) / np.sum(added**2)) == pytest.approx(snr, abs=1e-3)


def test_silent_noise_leaves_the_signal(rng):
    s = rng.standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(noise.mix_at_snr(s, np.zeros(1000, np.float32), 0.0), s)
