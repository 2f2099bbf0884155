"""Metrics against hand-computed cases, reference packages and invariants.

Real speech: the bundled LibriSpeech clip (3 s) and its copy convolved with the bundled
St Margaret's church RIR; every metric must rate the reverberant copy worse.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.signal as ss

from dereverb import audio, metrics
from dereverb.metrics import MetricWarning, blind, reverb

srmr_mod = importlib.import_module("dereverb.metrics.srmr")  # the name "srmr" is the function

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SR = 16000


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, np.ndarray]:
    """(clean, reverberant) 3 s at 16 kHz, aligned on the RIR's direct path."""
    clean = audio.read(EXAMPLES / "speech_1688-142285-0003.flac", SR)[0][0].astype(np.float64)
    h = audio.read(EXAMPLES / "rir_st_margarets_church.wav", SR, channel=0)[0][0].astype(np.float64)
    d = int(np.argmax(np.abs(h)))
    rev = ss.fftconvolve(clean, h)[d : d + clean.size]
    rev *= 0.5 / np.abs(rev).max()
    return clean[: 3 * SR], rev[: 3 * SR]


# --- identical signals give the best value; the reverberant copy scores worse -------------------

INTRUSIVE = {  # name: (function, best value, higher is better)
    "pesq": (lambda r, e: metrics.pesq(r, e, SR), 4.64, True),
    "stoi": (lambda r, e: metrics.stoi(r, e, SR), 1.0, True),
    "estoi": (lambda r, e: metrics.estoi(r, e, SR), 1.0, True),
    "si_sdr": (metrics.si_sdr, np.inf, True),
    "cepstral_distance": (lambda r, e: metrics.cepstral_distance(r, e, SR), 0.0, False),
    "llr": (lambda r, e: metrics.llr(r, e, SR), 0.0, False),
    "fwsegsnr": (lambda r, e: metrics.fwsegsnr(r, e, SR), 35.0, True),
}


@pytest.mark.parametrize("name", sorted(INTRUSIVE))
def test_intrusive_best_on_identical_and_worse_on_reverberant(name, speech):
    fn, best, higher = INTRUSIVE[name]
    clean, rev = speech
    same, worse = fn(clean, clean), fn(clean, rev)
    assert same == pytest.approx(best, abs=0.01)
    assert (worse < same - 0.1) if higher else (worse > same + 0.1)


@pytest.mark.slow
def test_nonintrusive_rate_reverberant_worse(speech):
    clean, rev = speech
    assert metrics.srmr(clean, SR) > 2 * metrics.srmr(rev, SR)
    good, bad = metrics.dnsmos(clean, SR), metrics.dnsmos(rev, SR)
    assert set(good) == {"ovrl", "sig", "bak"}
    for key in good:
        assert bad[key] < good[key] - 0.3, key
    assert metrics.estimate_t60(rev, SR) > metrics.estimate_t60(clean, SR) + 0.3
    assert metrics.estimate_drr(rev, SR) < metrics.estimate_drr(clean, SR) - 2.0


# --- silent input: NaN with a warning, never an exception ---------------------------------------

SILENT_CASES = [
    *[(n, lambda z, f=f: f(z, np.ones_like(z))) for n, (f, _, _) in INTRUSIVE.items()],
    ("srmr", lambda z: metrics.srmr(z, SR)),
    ("dnsmos", lambda z: metrics.dnsmos(z, SR)["ovrl"]),
    ("estimate_t60", lambda z: metrics.estimate_t60(z, SR)),
    ("estimate_drr", lambda z: metrics.estimate_drr(z, SR)),
]


@pytest.mark.parametrize("name,call", SILENT_CASES, ids=[c[0] for c in SILENT_CASES])
def test_silent_input_is_nan_with_warning(name, call):
    with pytest.warns(MetricWarning, match="silent"):
        assert np.isnan(call(np.zeros(SR)))


# --- hand-computed cases and reference implementations -----------------------------------------


def test_si_sdr_hand_computed():
    ref = np.array([1.0, -1.0, 1.0, -1.0])
    noise = 0.5 * np.array([1.0, 1.0, -1.0, -1.0])  # zero mean, orthogonal to ref
    # |ref|^2 = 4, |noise|^2 = 1 -> 10 log10(4) dB, whatever the gain on the estimate
    assert metrics.si_sdr(ref, ref + noise) == pytest.approx(10 * np.log10(4.0))
    assert metrics.si_sdr(ref, 3.0 * (ref + noise)) == pytest.approx(10 * np.log10(4.0))
    assert metrics.si_sdr(ref, noise) == -np.inf


def test_pesq_modes_and_resampling(speech):
    import pesq as pesq_lib

    clean, rev = speech
    wb = pesq_lib.pesq(SR, clean.astype(np.float32), rev.astype(np.float32), "wb")
    assert metrics.pesq(clean, rev, SR) == pytest.approx(wb, abs=1e-6)
    c8, r8 = audio.resample(clean, SR, 8000), audio.resample(rev, SR, 8000)
    assert metrics.pesq(c8, r8, 8000) == pytest.approx(pesq_lib.pesq(8000, c8, r8, "nb"), abs=1e-6)
    c48, r48 = audio.resample(clean, SR, 48000), audio.resample(rev, SR, 48000)
    assert metrics.pesq(c48, r48, 48000) == pytest.approx(wb, abs=0.1)  # scored at 16 kHz


def test_stoi_matches_pystoi(speech):
    from pystoi import stoi as ref_stoi

    clean, rev = speech
    assert metrics.stoi(clean, rev, SR) == pytest.approx(ref_stoi(clean, rev, SR), abs=1e-9)
    assert metrics.estoi(clean, rev, SR) == pytest.approx(ref_stoi(clean, rev, SR, extended=True), abs=1e-9)


def test_real_cepstrum_of_first_order_filter():
    # log|1 - a e^{-jw}| = -sum_n a^n cos(nw) / n, so the real cepstrum is c_n = -a^n / (2n)
    a = 0.6
    frame = np.zeros((1, 400))
    frame[0, :2] = [1.0, -a]
    c = reverb._real_cepstrum(frame, order=8)[0]
    n = np.arange(1, 9)
    np.testing.assert_allclose(c[1:], -(a**n) / (2 * n), atol=1e-9)
    assert c[0] == pytest.approx(0.0, abs=1e-9)


def test_cepstral_distance_matches_formula_and_ignores_gain(speech):
    clean, rev = speech
    assert metrics.cepstral_distance(clean, 0.3 * clean, SR) == pytest.approx(0.0, abs=1e-9)
    # the REVERB formula written out frame by frame
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1, 401) / 401)
    starts = range(0, clean.size - 400 + 1, 160)
    fx = np.array([clean[s : s + 400] * win for s in starts])
    fy = np.array([rev[s : s + 400] * win for s in starts])
    mx, my = np.abs(np.fft.fft(fx, 512)), np.abs(np.fft.fft(fy, 512))
    cx = np.fft.ifft(np.log(np.maximum(mx, mx.max() * 1e-5))).real[:, :25]
    cy = np.fft.ifft(np.log(np.maximum(my, my.max() * 1e-5))).real[:, :25]
    cx, cy = cx - cx.mean(0), cy - cy.mean(0)
    per_frame = [10 / np.log(10) * np.sqrt((u[0] - v[0]) ** 2 + 2 * np.sum((u[1:] - v[1:]) ** 2))
                 for u, v in zip(cx, cy)]
    expected = np.mean(np.clip(per_frame, 0, 10))
    assert metrics.cepstral_distance(clean, rev, SR) == pytest.approx(expected, rel=1e-9)


def test_lpc_matches_toeplitz_solve():
    rng = np.random.default_rng(1)
    x = ss.lfilter([1.0], [1.0, -0.9, 0.4], rng.standard_normal((3, 400)), axis=1)
    r = reverb._autocorr(x, 12)
    a = reverb.lpc(r)
    for k in range(3):
        coef = scipy.linalg.solve_toeplitz(r[k, :12], -r[k, 1:13])
        np.testing.assert_allclose(a[k, 1:], coef, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a[:, 1:3].mean(0), [-0.9, 0.4], atol=0.15)  # the AR(2) model


def test_llr_of_ar_processes_hand_computed():
    # Clean AR(1) x_n = phi x_{n-1} + w_n has r_k = phi^k / (1 - phi^2) and LPC a_c = [1, -phi],
    # so a_c^T R a_c = 1.  White noise (a_e = [1, 0]) gives a_e^T R a_e = r_0 = 1 / (1 - phi^2);
    # an AR(1) with psi gives r_0 (1 + psi^2) - 2 psi r_1 = (1 + psi^2 - 2 psi phi) / (1 - phi^2).
    rng = np.random.default_rng(2)
    noise = rng.standard_normal(5 * SR)
    phi, psi = 0.9, 0.5
    clean = ss.lfilter([1.0], [1.0, -phi], noise)
    est = ss.lfilter([1.0], [1.0, -psi], noise)
    assert metrics.llr(clean, noise, SR) == pytest.approx(np.log(1 / (1 - phi**2)), abs=0.05)
    expected = np.log((1 + psi**2 - 2 * psi * phi) / (1 - phi**2))
    assert metrics.llr(clean, est, SR) == pytest.approx(expected, abs=0.05)
    steep = ss.lfilter([1.0], [1.0, -0.98], noise)  # ln(1 / (1 - 0.98^2)) = 3.2, clamped to 2
    assert metrics.llr(steep, noise, SR) == pytest.approx(2.0, abs=0.01)


def test_fwsegsnr_hand_computed():
    # ref: one noise segment repeated; est: ref, then 2 * ref.  After both are scaled to unit
    # energy the estimate is ref * 1/sqrt(2.5) then ref * 2/sqrt(2.5), so every band of every
    # frame has SNR 20 log10(1 / |1 - g|): 8.68 dB and 11.53 dB; their mean (boundary frames aside).
    rng = np.random.default_rng(3)
    seg = rng.standard_normal(2 * SR)
    ref = np.concatenate([seg, seg])
    est = np.concatenate([seg, 2 * seg])
    g1, g2 = 1 / np.sqrt(2.5), 2 / np.sqrt(2.5)
    expected = np.mean([20 * np.log10(1 / abs(1 - g1)), 20 * np.log10(1 / abs(1 - g2))])
    assert metrics.fwsegsnr(ref, est, SR) == pytest.approx(expected, abs=0.1)


def test_mel_filterbank_partitions_unity():
    fb = reverb.mel_filterbank(512, SR, 23)
    assert fb.shape == (23, 257)
    inner = fb.sum(0)[(np.arange(257) * SR / 512 > 100) & (np.arange(257) * SR / 512 < 7000)]
    np.testing.assert_allclose(inner, 1.0, atol=1e-9)  # adjacent triangles sum to one


def test_srmr_filterbanks_and_modulation_preference():
    cf = srmr_mod.erb_centres(SR)
    assert cf[0] == pytest.approx(125.0) and 6500 < cf[-1] < 8000 and np.all(np.diff(cf) > 0)
    mc = srmr_mod.modulation_centres()
    np.testing.assert_allclose(mc[[0, -1]], [4.0, 128.0])
    for fc in (4.0, 128.0):
        b, a = srmr_mod.modulation_filter(fc, SR)
        q = srmr_mod.MOD_Q
        edges = fc * (np.sqrt(1 + 1 / (4 * q * q)) + np.array([-1, 1]) / (2 * q))  # analog -3 dB
        _, h = ss.freqz(b, a, worN=[fc, *edges], fs=SR)
        np.testing.assert_allclose(np.abs(h), [1, 2**-0.5, 2**-0.5], atol=1e-3)
    # noise amplitude-modulated at 4 Hz (speech-like) vs 90 Hz (reverberant-like smearing aside)
    rng = np.random.default_rng(4)
    t = np.arange(2 * SR) / SR
    carrier = rng.standard_normal(t.size)
    slow = metrics.srmr(carrier * (1 + np.sin(2 * np.pi * 4 * t)), SR)
    fast = metrics.srmr(carrier * (1 + np.sin(2 * np.pi * 90 * t)), SR)
    assert slow > 3 * fast
    assert metrics.srmr(3 * carrier, SR) == pytest.approx(metrics.srmr(carrier, SR), rel=1e-9)


@pytest.mark.slow
def test_dnsmos_matches_speechmos_reference(speech, monkeypatch):
    """speechmos' own pipeline (librosa stubbed: only its P.808 branch uses it) gives the same."""
    fake = types.ModuleType("librosa")
    fake.feature = types.SimpleNamespace(
        melspectrogram=lambda y, sr, n_fft, hop_length, n_mels: np.ones((n_mels, len(y) // hop_length))
    )
    fake.power_to_db = lambda s, ref: s
    monkeypatch.setitem(sys.modules, "librosa", fake)
    monkeypatch.setitem(sys.modules, "requests", types.SimpleNamespace(session=None))
    for name in [m for m in sys.modules if m.startswith("speechmos")]:
        monkeypatch.delitem(sys.modules, name)
    from speechmos import dnsmos as reference

    clean, _ = speech
    want = reference.run(clean.astype(np.float32), SR)
    got = metrics.dnsmos(clean, SR)
    for key in ("ovrl", "sig", "bak"):
        assert got[key] == pytest.approx(float(want[f"{key}_mos"]), abs=1e-4)


def _synthetic_rir(t60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Unit direct path + exponentially decaying noise tail of known T60 and DRR."""
    n = int(1.5 * t60 * SR)
    tail = rng.standard_normal(n) * np.exp(-3 * np.log(10) * np.arange(n) / SR / t60)
    tail[:40] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    tail[0] = 1.0
    return tail


def test_blind_t60_tracks_synthetic_rooms():
    clean = audio.read(EXAMPLES / "speech_1688-142285-0003.flac", SR)[0][0].astype(np.float64)
    rng = np.random.default_rng(5)
    est = {t: blind.estimate_t60(ss.fftconvolve(clean, _synthetic_rir(t, 0.0, rng))[: clean.size], SR)
           for t in (0.6, 0.9)}
    assert est[0.6] == pytest.approx(0.6, rel=0.25)
    assert est[0.9] == pytest.approx(0.9, rel=0.25)
    assert est[0.9] > est[0.6]
    direct = ss.fftconvolve(clean, _synthetic_rir(0.6, 10.0, rng))[: clean.size]
    assert blind.estimate_drr(direct, SR) > blind.estimate_drr(
        ss.fftconvolve(clean, _synthetic_rir(0.6, -10.0, rng))[: clean.size], SR) + 3.0


def test_multichannel_input_is_a_user_error():
    from dereverb.errors import DereverbError

    with pytest.raises(DereverbError, match="1-D"):
        metrics.srmr(np.zeros((2, SR)), SR)
