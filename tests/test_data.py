"""Speech sources, the on-the-fly pair stream (determinism, workers, ranks, finiteness,
alignment) and paired folders, on tiny generated signals."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dereverb import audio, data, paired, rooms
from dereverb.config import StftConfig
from dereverb.errors import DereverbError

SR = 16000
STFT = StftConfig()


def voiced(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Speech-like test signal: harmonics of a gliding f0 under a 4 Hz syllable envelope."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.5 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
    return (0.1 * env * x + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def decay_rir(t60: float, rng: np.random.Generator, delay: int = 100) -> np.ndarray:
    n = int(1.2 * t60 * SR)
    h = 0.1 * rng.standard_normal(n) * 10 ** (-3 * np.arange(n) / SR / t60)
    h[:delay] = 0
    h[delay] = 1.0
    return h


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """speech/ (16 kHz wav, 22.05 kHz flac in a subfolder, an ogg) and rirs/ (two decays)."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    (root / "speech" / "sub").mkdir(parents=True)
    (root / "rirs").mkdir()
    for i in range(3):
        audio.write(root / "speech" / f"a{i}.wav", voiced(3.0, SR, rng), SR)
    audio.write(root / "speech" / "sub" / "b.flac", voiced(2.5, 22050, rng), 22050)
    audio.write(root / "speech" / "sub" / "c.ogg", voiced(3.0, SR, rng), SR)
    for t60 in (0.3, 0.6):
        audio.write(root / "rirs" / f"r{t60}.wav", decay_rir(t60, rng), SR, subtype="FLOAT")
    return root


def config(corpus, **kw) -> data.DataConfig:
    base = dict(speech=(str(corpus / "speech"),), rirs=(str(corpus / "rirs"),), segment_seconds=0.5)
    return data.DataConfig(**{**base, **kw})


def take(ds, n: int) -> list[dict]:
    it = iter(ds)
    return [next(it) for _ in range(n)]


def test_scan_speech_recursive_any_rate(corpus):
    utts = data.scan_speech([corpus / "speech"])
    names = sorted(u.path.split("speech/")[1] for u in utts)
    assert names == ["a0.wav", "a1.wav", "a2.wav", "sub/b.flac", "sub/c.ogg"]
    b = next(u for u in utts if u.path.endswith("b.flac"))
    assert b.seconds == pytest.approx(2.5, abs=1e-4)


def test_bad_speech_listed_in_one_warning(tmp_path, corpus):
    (tmp_path / "junk.flac").write_bytes(b"nope")
    audio.write(tmp_path / "short.wav", np.zeros(800), SR)
    audio.write(tmp_path / "ok.wav", voiced(1.0, SR, np.random.default_rng(1)), SR)
    with pytest.warns(UserWarning, match="skipped 2 bad speech") as record:
        utts = data.scan_speech([tmp_path], min_seconds=0.25)
    assert len(record) == 1 and "junk.flac" in str(record[0].message) and "too short" in str(record[0].message)
    assert [u.path.endswith("ok.wav") for u in utts] == [True]
    with pytest.raises(DereverbError, match="junk.flac"):
        data.scan_speech([tmp_path], strict=True)


def test_manifests_csv_and_jsonl(tmp_path, corpus):
    (tmp_path / "m.csv").write_text(f"path,duration,speaker\n{corpus}/speech/a0.wav,2.5,s1\n{corpus}/speech/a1.wav,,s2\n")
    rows = [{"path": str(corpus / "speech" / "sub" / "b.flac")}, {"path": "missing.wav"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    csv_utts = data.scan_speech([tmp_path / "m.csv"])
    assert [(u.seconds, u.speaker) for u in csv_utts] == [(2.5, "s1"), (pytest.approx(3.0), "s2")]
    with pytest.warns(UserWarning, match="missing.wav"):
        jl = data.scan_speech([tmp_path / "m.jsonl"])
    assert len(jl) == 1 and jl[0].seconds == pytest.approx(2.5, abs=1e-4)


def test_items_finite_right_length_and_levels(corpus):
    ds = data.build_train_dataset(config(corpus), STFT, seed=0)
    low, high = data.LEVEL_DB
    for item in take(ds, 40):
        r, c = item["reverb"].numpy(), item["clean"].numpy()
        assert r.shape == c.shape == (8000,) and r.dtype == np.float32
        assert np.isfinite(r).all() and np.isfinite(c).all()
        assert max(np.abs(r).max(), np.abs(c).max()) <= 0.99 + 1e-6
        assert low - 0.01 <= 10 * np.log10(np.mean(r.astype(np.float64) ** 2)) <= high + 0.01


def test_items_aligned_on_real_speech_and_rir(tmp_path):
    examples = Path(__file__).resolve().parents[1] / "examples"
    cfg = data.DataConfig(speech=(str(examples / "speech_1688-142285-0003.flac"),),
                          rirs=(str(examples / "rir_st_margarets_church.wav"),), segment_seconds=2.048)
    for item in take(data.build_train_dataset(cfg, STFT, seed=0), 5):
        r, c = item["reverb"].numpy(), item["clean"].numpy()
        assert r.shape == (32768,)
        assert paired.estimate_lag(r, c, 400) == 0  # reverb and direct target share the delay


def test_same_seed_same_stream_other_seed_other_stream(corpus):
    cfg = config(corpus)
    a = take(data.build_train_dataset(cfg, STFT, seed=5), 6)
    b = take(data.build_train_dataset(cfg, STFT, seed=5), 6)
    c = take(data.build_train_dataset(cfg, STFT, seed=6), 6)
    assert all(torch.equal(x["reverb"], y["reverb"]) and torch.equal(x["clean"], y["clean"]) for x, y in zip(a, b))
    assert not any(torch.equal(x["reverb"], y["reverb"]) for x, y in zip(a, c))


def test_ranks_differ(corpus):
    cfg = config(corpus)
    r0 = take(data.build_train_dataset(cfg, STFT, seed=5, rank=0, world_size=2), 4)
    r1 = take(data.build_train_dataset(cfg, STFT, seed=5, rank=1, world_size=2), 4)
    assert not any(torch.equal(x["reverb"], y["reverb"]) for x, y in zip(r0, r1))


def test_workers_differ_reproducibly(corpus):
    ds = data.build_train_dataset(config(corpus), STFT, seed=3)

    def run():
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        return [item["reverb"] for item in itertools.islice(loader, 10)]

    first, again = run(), run()
    assert len(first) == 10
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not torch.equal(first[0], first[1])  # worker 0 and worker 1 start differently
    ds.set_epoch(1)
    assert not torch.equal(run()[0], first[0])


def test_silent_and_nan_files_never_reach_a_batch(tmp_path, corpus):
    audio.write(tmp_path / "silent.wav", np.zeros(SR * 2), SR)
    nan = voiced(2.0, SR, np.random.default_rng(2))
    nan[100:200] = np.nan
    audio.write(tmp_path / "nan.wav", nan, SR, subtype="FLOAT")
    audio.write(tmp_path / "ok.wav", voiced(2.0, SR, np.random.default_rng(3)), SR)
    cfg = config(corpus, speech=(str(tmp_path),), segment_seconds=1.0)
    ok = audio.read(tmp_path / "ok.wav")[0][0]
    for item in take(data.build_train_dataset(cfg, STFT, seed=0), 20):
        assert np.isfinite(item["reverb"].numpy()).all()
        assert item["clean"].abs().max() > 1e-3  # not the silent file
    assert np.isfinite(ok).all()


def test_all_silent_speech_is_a_clear_error(tmp_path, corpus):
    audio.write(tmp_path / "silent.wav", np.zeros(SR), SR)
    ds = data.build_train_dataset(config(corpus, speech=(str(tmp_path),)), STFT, seed=0)
    with pytest.raises(DereverbError, match="silent"):
        next(iter(ds))


def test_valid_set_fixed_for_seed(corpus):
    cfg = config(corpus)
    a = data.build_valid_set(cfg, STFT, seed=1, count=3)
    b = data.build_valid_set(cfg, STFT, seed=1, count=3)
    assert len(a) == 3 and all(torch.equal(x["reverb"], y["reverb"]) for x, y in zip(a, b))


def test_pool_only_and_simulated_if_missing(tmp_path, corpus):
    cfg = config(corpus, rirs=(), rir_pool=str(tmp_path / "pool"), simulate_count=1)
    ds = data.build_train_dataset(cfg, STFT, seed=0)
    assert len(ds.simulated) == 1 and (tmp_path / "pool" / "sim_00000.wav").is_file()
    assert np.isfinite(take(ds, 2)[1]["reverb"].numpy()).all()
    # A pool cut short (an interrupted first use) is finished to simulate_count, not used as it is.
    cfg = config(corpus, rirs=(), rir_pool=str(tmp_path / "pool"), simulate_count=2)
    assert [r.name for r in data.load_rir_sets(cfg, 16000, seed=0)[1]] == ["sim_00000", "sim_00001"]


@pytest.mark.slow
def test_hf_decay_range_reshapes_the_pool_once_per_rir(tmp_path, corpus):
    pool = str(tmp_path / "pool")
    cfg = config(corpus, rir_pool=pool, simulate_count=2)
    measured, plain = data.load_rir_sets(cfg, 16000, seed=0)
    cfg = config(corpus, rir_pool=pool, simulate_count=2, hf_decay_range=(0.2, 0.6))
    measured2, shaped = data.load_rir_sets(cfg, 16000, seed=0)
    assert [r.name for r in measured2] == [r.name for r in measured]  # measured rooms left alone
    exps = [r.meta["hf_decay"] for r in shaped]
    assert all(0.2 <= e <= 0.6 for e in exps) and len(set(exps)) == 2
    assert [r.name for r in shaped] == [f"{p.name}@hf{e:.2f}" for p, e in zip(plain, exps)]
    again = data.load_rir_sets(cfg, 16000, seed=0)[1]  # every worker and rank draws the same
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(shaped, again))
    with pytest.raises(DereverbError, match="hf_decay_range"):
        config(corpus, hf_decay_range=(0.5, 0.2))


def test_config_rejects_bad_values():
    with pytest.raises(DereverbError, match="target"):
        data.DataConfig(target="late")
    with pytest.raises(DereverbError, match="measured_prob"):
        data.DataConfig(measured_prob=2.0)


@pytest.fixture
def pairs(tmp_path, speech, rir_16k):
    """clean/ and reverb/: x (aligned), y (reverb 80 samples late), z at 22.05 kHz, a stray file."""
    rir = rooms.analyze(rir_16k, SR, "church")
    x = speech[0]
    for d in ("clean", "reverb"):
        (tmp_path / d).mkdir()
    for name, delay, part in (("x", 0, x[: 2 * SR]), ("y", 80, x[2 * SR : 4 * SR])):
        rev, tgt = rooms.reverberate(part, rir, "direct")
        audio.write(tmp_path / "clean" / f"{name}.wav", tgt, SR, subtype="FLOAT")
        audio.write(tmp_path / "reverb" / f"{name}.wav", np.r_[np.zeros(delay), rev[: len(rev) - delay]], SR, subtype="FLOAT")
    z = x[SR : 3 * SR]
    audio.write(tmp_path / "clean" / "z.wav", z, SR)
    audio.write(tmp_path / "reverb" / "z.flac", audio.resample(z, SR, 22050), 22050)
    audio.write(tmp_path / "clean" / "stray.wav", z, SR)
    return tmp_path


def test_paired_folder_reports_and_aligns(pairs):
    with pytest.warns(UserWarning) as record:
        ds = paired.PairedFolder(pairs / "clean", pairs / "reverb", SR)
    assert len(record) == 1
    msg = str(record[0].message)
    assert "y.wav: lags clean by 5.0 ms" in msg and "stray.wav: no partner" in msg
    assert "22050 Hz but clean is 16000 Hz" in msg and "x.wav" not in msg
    assert len(ds) == 3 and [p[2] for p in ds.pairs] == [0, 80, 0]
    for item in ds:
        r, c = item["reverb"].numpy(), item["clean"].numpy()
        assert r.shape == c.shape
        assert paired.estimate_lag(r, c, 400) == 0


def test_paired_folder_strict_and_crops(pairs):
    with pytest.raises(DereverbError, match="lags clean"):
        paired.PairedFolder(pairs / "clean", pairs / "reverb", SR, strict=True)
    with pytest.warns(UserWarning):
        ds = paired.PairedFolder(pairs / "clean", pairs / "reverb", SR, segment_seconds=0.5, seed=1)
    a, b = ds[1], ds[1]
    assert a["reverb"].shape == (8000,) and torch.equal(a["reverb"], b["reverb"])


def test_dry_prob_gives_identical_pairs_at_that_rate(corpus):
    ds = data.build_train_dataset(config(corpus, dry_prob=0.5), StftConfig(), seed=3)
    items = take(ds, 40)
    same = [torch.equal(it["reverb"], it["clean"]) for it in items]
    assert 10 <= sum(same) <= 30  # Binomial(40, 0.5): far inside these bounds for this seed
    never = take(data.build_train_dataset(config(corpus), StftConfig(), seed=3), 20)
    assert not any(torch.equal(it["reverb"], it["clean"]) for it in never)


def test_dataset_stream_same_with_and_without_the_cache(corpus):
    kw = dict(drr_prob=0.5, dry_prob=0.2, measured_prob=1.0)
    plain = data.build_train_dataset(config(corpus, **kw), StftConfig(), seed=5)
    cached = data.build_train_dataset(config(corpus, rir_cache_mb=16, **kw), StftConfig(), seed=5)
    assert plain.convolver is None and cached.convolver is not None
    r1, r2 = np.random.default_rng(9), np.random.default_rng(9)
    for _ in range(12):
        (a_rev, a_tgt), (b_rev, b_tgt) = plain.example(r1), cached.example(r2)
        np.testing.assert_allclose(b_rev, a_rev, atol=1e-5 * np.abs(a_rev).max())
        np.testing.assert_allclose(b_tgt, a_tgt, atol=1e-5 * np.abs(a_tgt).max())
    assert cached.convolver.cache  # spectra were cached and reused


def test_noise_goes_to_the_input_only_at_a_drawn_snr(corpus, monkeypatch):
    calls = []
    monkeypatch.setattr(data.noise, "mix_at_snr", lambda s, n, snr: calls.append((n, snr)) or s + np.float32(1.0))
    ds = data.build_train_dataset(config(corpus, noise_prob=0.5, snr_range=(3.0, 7.0)), STFT, seed=2)
    rng = np.random.default_rng(0)
    pairs = [ds.example(rng) for _ in range(40)]
    assert 10 <= len(calls) <= 30 and all(3.0 <= snr <= 7.0 for _, snr in calls)
    for n, _ in calls:  # generated noise (no files given): unit RMS, one crop long
        assert n.shape == (ds.length,) and np.sqrt(np.mean(n**2)) == pytest.approx(1.0, rel=1e-3)
    def dc(x):  # the +1 marks a noisy input: then the mean dominates the RMS
        return abs(x.mean()) / np.sqrt(np.mean(x**2))

    assert sum(dc(rev) > 0.5 for rev, _ in pairs) == len(calls)
    assert all(dc(clean) < 0.2 for _, clean in pairs)
    assert all(np.isfinite(r).all() and np.isfinite(c).all() for r, c in pairs)


def test_noise_files_are_cropped_and_looped(corpus, tmp_path, monkeypatch):
    t = np.arange(SR // 10) / SR  # 0.1 s of a 1 kHz tone: shorter than a crop, so looped
    audio.write(tmp_path / "hum.wav", (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), SR)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    crops = []
    monkeypatch.setattr(data.noise, "mix_at_snr", lambda s, n, snr: crops.append(n) or s)
    with pytest.warns(UserWarning, match="noise file"):
        ds = data.build_train_dataset(config(corpus, noise=(str(tmp_path),), noise_prob=1.0), STFT, seed=0)
    rng = np.random.default_rng(1)
    for _ in range(3):
        ds.example(rng)
    for n in crops:
        spec = np.abs(np.fft.rfft(n))
        assert n.shape == (ds.length,) and np.argmax(spec) * SR / len(n) == pytest.approx(1000, abs=5)
        assert np.abs(n[: SR // 10] - n[SR // 10 : 2 * SR // 10]).max() < 1e-6  # looped, not padded
    with pytest.raises(DereverbError, match="snr_range"):
        config(corpus, snr_range=(9.0, 3.0))
    with pytest.raises(DereverbError, match="noise_prob"):
        config(corpus, noise_prob=1.5)


def test_drr_prob_rescales_room_tails_into_range(corpus, monkeypatch):
    seen = []
    real = data.rooms.with_drr
    monkeypatch.setattr(data.rooms, "with_drr", lambda rir, drr: seen.append(drr) or real(rir, drr))
    ds = data.build_train_dataset(config(corpus, drr_prob=0.5, drr_range=(4.0, 6.0)), StftConfig(), seed=3)
    items = take(ds, 40)
    assert 10 <= len(seen) <= 30 and all(4.0 <= v <= 6.0 for v in seen)
    assert all(torch.isfinite(it["reverb"]).all() for it in items)
    with pytest.raises(DereverbError, match="drr_range"):
        config(corpus, drr_range=(6.0, 4.0))


def test_speech_cache_serves_the_same_pairs_and_stays_in_budget(corpus):
    wavs = tuple(str(corpus / "speech" / f"a{i}.wav") for i in range(3))  # at the model rate: exact
    plain = take(data.build_train_dataset(config(corpus, speech=wavs), StftConfig(), seed=5), 12)
    ds = data.build_train_dataset(config(corpus, speech=wavs, speech_cache_mb=1), StftConfig(), seed=5)
    cached = take(ds, 12)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(plain, cached) for k in ("reverb", "clean"))
    cache = ds.cache
    assert len(cache.files) == 3 and cache.bytes == sum(x.nbytes for x in cache.files.values())
    path, x = next(iter(cache.files.items()))
    np.testing.assert_array_equal(cache.segment(path, 0.0, 100), x[:100])
    assert cache.segment(path, len(x) / SR - 0.001, 100)[16:].sum() == 0  # zero padded past the end
    small = data.SpeechCache(0, SR)  # over budget: keeps only the file last read
    for p in wavs:
        small.segment(p, 0.0, 10)
    assert list(small.files) == [wavs[-1]]
