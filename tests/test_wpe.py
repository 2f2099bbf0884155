"""The batched torch WPE against nara_wpe (the reference), and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

import dereverb.wpe as wpe_mod
from dereverb import baselines
from dereverb.wpe import delayed_frames, wpe

from tiny import one_thread  # noqa: F401  (one_thread: autouse fixture)


@pytest.fixture(scope="module")
def church_spec() -> np.ndarray:
    """Complex128 ``(F, T)`` STFT of bundled speech in the bundled church (first channel)."""
    speech, _ = sf.read("examples/speech_1688-142285-0003.flac")
    rir, _ = sf.read("examples/rir_st_margarets_church.wav")
    rir = rir[:, 0] if rir.ndim > 1 else rir
    y = scipy.signal.fftconvolve(speech, rir)[: 2 * 16000]
    return baselines._stft(y, 512, 128)


def test_delayed_frames_are_the_past_frames_after_the_delay():
    y = torch.arange(1, 7, dtype=torch.float32)  # frames 1..6
    past = delayed_frames(y, taps=2, delay=2)  # [t, k] = y[t - 3 + k]
    assert past.tolist() == [[0, 0], [0, 0], [0, 1], [1, 2], [2, 3], [3, 4]]


@pytest.mark.slow
@pytest.mark.parametrize("iterations", [1, 3])
def test_unregularised_equals_nara_wpe(church_spec, iterations, monkeypatch):
    nara = pytest.importorskip("nara_wpe.wpe")
    ref = nara.wpe(church_spec[:, None, :], taps=40, delay=3, iterations=iterations,
                   statistics_mode="full")[:, 0, :]
    monkeypatch.setattr(wpe_mod, "LOADING", 0.0)
    out = wpe(torch.from_numpy(church_spec), taps=40, delay=3, iterations=iterations).numpy()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-6


@pytest.mark.slow
def test_default_loading_and_complex64_stay_close_to_nara_wpe(church_spec):
    nara = pytest.importorskip("nara_wpe.wpe")
    ref = nara.wpe(church_spec[:, None, :], taps=40, delay=3, iterations=3, statistics_mode="full")[:, 0, :]
    out = wpe(torch.from_numpy(church_spec).to(torch.complex64), 40, 3, 3).numpy()
    assert out.dtype == np.complex64
    removed_ref = np.linalg.norm(church_spec - ref)
    assert np.linalg.norm(out - ref) < 0.1 * np.linalg.norm(ref)
    assert 0.9 * removed_ref < np.linalg.norm(church_spec - out) < 1.1 * removed_ref


def test_rows_are_independent_and_silence_stays_silent(church_spec):
    x = torch.from_numpy(church_spec[:, :200]).to(torch.complex64)
    silent = torch.zeros_like(x)
    banded = x.clone()
    banded[100:] = 0  # a band-limited row: silent bins must not poison the others
    both = wpe(torch.stack([x, silent, banded]), taps=10, delay=3, iterations=2)
    torch.testing.assert_close(both[0], wpe(x, taps=10, delay=3, iterations=2), rtol=1e-4, atol=1e-6)
    assert torch.isfinite(torch.view_as_real(both)).all()
    assert both[1].abs().max() == 0 and both[2][100:].abs().max() == 0


def test_reduces_the_late_tail_of_a_synthetic_echo():
    """A frame-domain echo beyond the delay is predictable from the past: WPE cancels most of it
    (0.36 -> 0.09 of the source's energy here).  The source has a time-varying power, WPE's model."""
    g = torch.Generator().manual_seed(0)
    envelope = torch.exp(torch.randn(64, 400, generator=g))
    s = envelope * torch.complex(torch.randn(64, 400, generator=g), torch.randn(64, 400, generator=g))
    s = s.to(torch.complex128)
    y = s.clone()
    y[:, 5:] += 0.6 * s[:, :-5]  # an echo 5 frames late
    out = wpe(y, taps=16, delay=3, iterations=3)
    before = (y - s).abs().square().sum() / s.abs().square().sum()
    after = (out - s).abs().square().sum() / s.abs().square().sum()
    assert before > 0.3 and after < 0.35 * before


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        wpe(torch.zeros(4, 10, dtype=torch.complex64), taps=0)
