"""RIR analysis against synthetic RIRs with known T60/DRR, measured RIR loading, aligned targets."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from dereverb import audio, rooms, simulate
from dereverb.errors import DereverbError

SR = 16000


def synthetic_rir(t60: float, rng: np.random.Generator, seconds: float = 1.5, delay: int = 200,
                  noise_db: float = -90.0) -> np.ndarray:
    """A unit direct path at ``delay``, then exponentially decaying noise (energy falls 60 dB in
    ``t60``), then a stationary noise floor ``noise_db`` below the direct path."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    h = 0.1 * rng.standard_normal(n) * 10 ** (-3 * t / t60)
    h[:delay] = 0
    h[delay] = 1.0
    return h + 10 ** (noise_db / 20) * rng.standard_normal(n)


@pytest.mark.parametrize("t60", [0.3, 0.8, 1.5])
def test_t30_of_exponential_decay_within_10_percent(t60, rng):
    rir = rooms.analyze(synthetic_rir(t60, rng, seconds=max(1.0, 1.4 * t60)), SR, "synthetic")
    assert rir.meta["decay_fit"] == "T30"
    assert abs(rir.t30 - t60) / t60 < 0.10


def test_t20_fallback_when_decay_is_short(rng):
    # noise floor 40 dB under the tail's start: too close for T30 (45 dB), enough for T20 (35 dB)
    h = synthetic_rir(0.5, rng, noise_db=-60.0)
    rir = rooms.analyze(h, SR, "noisy")
    assert rir.meta["decay_fit"] == "T20"
    assert abs(rir.t30 - 0.5) / 0.5 < 0.15


def test_tail_cut_at_noise_floor(rng):
    # decay of 60 dB/0.5 s from -20 dB meets a -80 dB floor at 0.5 s after the direct path
    h = synthetic_rir(0.5, rng, seconds=2.0, noise_db=-80.0)
    rir = rooms.analyze(h, SR, "tail")
    after_direct = (len(rir.audio) - rir.direct_index) / SR
    assert 0.4 < after_direct < 0.65


def test_direct_path_trimmed_and_unit(rng):
    rir = rooms.analyze(-3.0 * synthetic_rir(0.4, rng), SR, "neg")
    w = round(0.0025 * SR)
    assert rir.direct_index == w and rir.audio[w] == pytest.approx(1.0)


def test_drr_matches_hand_computation():
    h = np.zeros(4000)
    h[100] = 1.0  # direct
    h[120] = 0.5  # 1.25 ms later: inside the +-2.5 ms (40 samples) direct window
    h[60] = 0.2  # 2.5 ms before: the window's first sample
    h[141] = 0.5  # first sample after the window
    h[900] = -0.5
    expected = 10 * np.log10((1 + 0.25 + 0.04) / (0.25 + 0.25))
    assert rooms.direct_to_reverberant(h, 100, SR) == pytest.approx(expected, abs=1e-9)


def test_drr_through_analyze(rng):
    rir = rooms.analyze(synthetic_rir(0.6, rng), SR, "x")
    h, d, w = rir.audio.astype(np.float64), rir.direct_index, 40
    expected = 10 * np.log10((h[d - w : d + w + 1] ** 2).sum() / (h[d + w + 1 :] ** 2).sum())
    assert rir.drr == pytest.approx(expected, abs=1e-3)


def _xcorr_peak_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 400) -> int:
    full = np.correlate(a, b, mode="full")  # lag k at index k + len(b) - 1
    mid = len(b) - 1
    window = full[mid - max_lag : mid + max_lag + 1]
    return int(np.argmax(window)) - max_lag


@pytest.fixture(scope="module")
def simulated() -> rooms.Rir:
    return simulate.simulate_rir(0.5, 2.0, SR, np.random.default_rng(0), room_size=(5.0, 4.0, 3.0))


@pytest.mark.parametrize("target", ["direct", "early"])
@pytest.mark.parametrize("which", ["measured", "simulated"])
def test_reverberate_aligned(target, which, speech, rir_16k, simulated):
    dry = speech[0][: 3 * SR]
    rir = rooms.analyze(rir_16k, SR, "church") if which == "measured" else simulated
    rev, tgt = rooms.reverberate(dry, rir, target)
    assert rev.shape == tgt.shape == dry.shape and rev.dtype == tgt.dtype == np.float32
    assert np.isfinite(rev).all() and np.isfinite(tgt).all()
    assert _xcorr_peak_lag(rev, tgt) == 0
    if target == "direct":  # the shared delay is the direct path (measured: a filtered pulse)
        assert abs(_xcorr_peak_lag(tgt, dry) - rir.direct_index) <= (2 if which == "measured" else 0)


def test_direct_target_of_unit_direct_path_is_delayed_dry(speech, rng):
    h = synthetic_rir(0.4, rng)
    h[160:241] = 0
    h[200] = 1.0  # nothing else inside the +-2.5 ms window
    rir = rooms.analyze(h, SR, "x")
    dry = speech[0][:SR]
    _, tgt = rooms.reverberate(dry, rir, "direct")
    d = rir.direct_index
    assert np.abs(tgt[d:] - dry[:-d]).max() < 1e-3  # only the -90 dB floor differs


def test_dry_target_is_delayed_dry(speech, rng):
    rir = rooms.analyze(synthetic_rir(0.4, rng), SR, "x")
    dry = speech[0][:SR]
    _, tgt = rooms.reverberate(dry, rir, "dry")
    d = rir.direct_index
    assert np.array_equal(tgt[d:], dry[:-d]) and not tgt[:d].any()


def test_unknown_target_is_user_error(rng):
    rir = rooms.analyze(synthetic_rir(0.4, rng), SR, "x")
    with pytest.raises(DereverbError, match="unknown target"):
        rooms.reverberate(np.ones(100), rir, "late")


def test_load_rirs_resamples_channels_and_skips_bad(tmp_path, rng):
    good = np.stack([synthetic_rir(0.4, rng) for _ in range(2)])
    good_48k = audio.resample(good, SR, 48000)
    audio.write(tmp_path / "room.wav", 0.5 * good_48k, 48000, subtype="FLOAT")
    audio.write(tmp_path / "silent.wav", np.zeros(4000), SR)
    clipped = synthetic_rir(0.4, rng)
    clipped[200:205] = 1.0
    audio.write(tmp_path / "clipped.wav", clipped, SR, subtype="FLOAT")
    audio.write(tmp_path / "short.wav", np.r_[np.zeros(10), 1.0, np.zeros(5)], SR)
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    with pytest.warns(UserWarning, match="skipped 4 bad") as record:
        rirs = rooms.load_rirs([tmp_path], SR, channels="all")
    assert len(record) == 1
    msg = str(record[0].message)
    assert all(n in msg for n in ("silent.wav", "clipped.wav", "short.wav", "junk.wav"))
    assert [r.name for r in rirs] == ["room:ch0", "room:ch1"]
    for r in rirs:
        assert r.sample_rate == SR and r.audio[r.direct_index] == pytest.approx(1.0)
        assert abs(r.t30 - 0.4) < 0.04
    with pytest.raises(DereverbError, match="4 bad"):
        rooms.load_rirs([tmp_path], SR, strict=True)


def test_measured_example_rir(rir_16k):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rir = rooms.analyze(rir_16k, SR, "church")
    assert 1.1 < rir.t30 < 1.6  # St Margaret's church; MANIFEST.tsv estimates T30 = 1.26 s at 44.1 kHz


@pytest.mark.parametrize("drr", [-8.0, 5.0, 18.0])
def test_with_drr_reaches_drr_and_keeps_direct_path_and_decay(drr, rng, speech):
    speech, _ = speech
    rir = rooms.analyze(synthetic_rir(0.6, rng), SR, "x")
    out = rooms.with_drr(rir, drr)
    d = out.direct_index
    assert rooms.direct_to_reverberant(out.audio, d, SR) == pytest.approx(drr, abs=1e-4)
    assert out.drr == drr and out.meta["drr_from"] == pytest.approx(rir.drr, abs=1e-6)
    assert out.audio[d] == 1.0 and out.t30 == rir.t30
    for target in ("direct", "dry"):  # the target is untouched
        assert np.array_equal(rooms.reverberate(speech, out, target)[1], rooms.reverberate(speech, rir, target)[1])
    tail = slice(d + 41, None)  # past the +-2.5 ms window: one gain, so the same decay
    gain = 10 ** ((rir.drr - drr) / 20)
    np.testing.assert_allclose(out.audio[tail], rir.audio[tail] * gain, rtol=1e-5, atol=1e-9)


def test_with_drr_leaves_anechoic_rir_alone():
    rir = rooms.Rir(np.ones(1, np.float32), SR, "anechoic", 0, 0.0, float("inf"))
    assert rooms.with_drr(rir, 3.0) is rir


@pytest.mark.parametrize("exponent", [0.3, 0.6])
def test_with_hf_decay_shortens_only_high_bands_and_keeps_direct_path(exponent, rng, speech):
    speech, _ = speech
    rir = rooms.analyze(synthetic_rir(1.2, rng), SR, "shoebox")  # white tail: the same T30 in every band
    out = rooms.with_hf_decay(rir, exponent)
    before, after = rooms.band_decay_times(rir), rooms.band_decay_times(out)
    assert before == pytest.approx(np.full(6, rir.t30), rel=0.12)  # octave bands 250 Hz .. 6 kHz
    assert after[:2] == pytest.approx(before[:2], rel=0.08)  # below the 1 kHz corner the decay stays
    expected = before * np.minimum(1.0, (np.array(rooms.OCTAVE_BANDS) / 1000) ** -exponent)
    assert after[3:] == pytest.approx(expected[3:], rel=0.15)  # above it T30 falls as (f / 1 kHz) ** -b
    d = out.direct_index
    assert np.array_equal(out.audio[: d + 41], rir.audio[: d + 41]) and len(out.audio) == len(rir.audio)
    for target in ("direct", "dry"):
        assert np.array_equal(rooms.reverberate(speech, out, target)[1], rooms.reverberate(speech, rir, target)[1])
    assert out.drr > rir.drr and out.t30 < rir.t30 and out.meta["hf_decay"] == exponent
    assert out.name == f"shoebox@hf{exponent:.2f}"


def test_band_decay_times_follow_a_band_limited_decay(rng):
    from scipy import signal
    n = int(1.5 * SR)
    t = np.arange(n) / SR
    slow, fast = (rng.standard_normal(n) * 10 ** (-3 * t / t60) for t60 in (1.0, 0.4))
    low = signal.sosfiltfilt(signal.butter(8, 1400, "lowpass", fs=SR, output="sos"), slow)
    high = signal.sosfiltfilt(signal.butter(8, 1400, "highpass", fs=SR, output="sos"), fast)
    h = np.r_[np.zeros(100), 1.0, 0.1 * (low + high)[:-101]]
    bands = rooms.band_decay_times(rooms.analyze(h, SR, "two-slope"), (250, 500, 4000, 6000, 12000))
    assert bands[:2] == pytest.approx([1.0, 1.0], rel=0.1) and bands[2:4] == pytest.approx([0.4, 0.4], rel=0.1)
    assert math.isnan(bands[4])  # starts above Nyquist: no band


def test_with_hf_decay_keeps_exponent_zero_and_refuses_negative():
    rir = rooms.Rir(np.r_[1.0, 0.5 * np.ones(800)].astype(np.float32), SR, "x", 0, 0.5, 0.0)
    assert rooms.with_hf_decay(rir, 0.0) is rir
    with pytest.raises(DereverbError, match="exponent"):
        rooms.with_hf_decay(rir, -0.1)


@pytest.mark.parametrize("n, taps, lo, hi", [(1000, 300, 299, 1000), (1000, 300, 0, 1000), (1000, 81, -40, 960),
                                             (500, 900, 120, 500), (64, 5, 30, 64), (1000, 300, 650, 1000), (100, 10, 100, 100)])
def test_convolve_part_is_a_slice_of_the_full_convolution(n, taps, lo, hi, rng):
    x, h = rng.standard_normal(n).astype(np.float32), rng.standard_normal(taps).astype(np.float32)
    full = np.concatenate([np.zeros(max(0, -lo)), np.convolve(x.astype(np.float64), h), np.zeros(hi)])
    expected = full[max(0, -lo) + lo : max(0, -lo) + hi]
    got = rooms.convolve_part(x, h, lo, hi)
    assert got.dtype == np.float32 and got.shape == (hi - lo,)
    np.testing.assert_allclose(got, expected, atol=2e-4 * np.abs(full).max())


def test_reverberate_skip_is_the_cut_of_the_whole(speech, rir_16k):
    speech, _ = speech
    rir = rooms.analyze(rir_16k, SR, "church")
    skip = len(rir.audio) - 1
    whole = rooms.reverberate(speech, rir, "direct")
    part = rooms.reverberate(speech, rir, "direct", skip=skip)
    for a, b in zip(part, whole):
        np.testing.assert_allclose(a, b[skip:], atol=1e-5 * np.abs(b).max())
