"""Feature store: quantised and float16 round trips against exact dB, store-fed training batches
against on-the-fly features, format-1 stores, complex reconstruction, crops across blocks,
statistics, DataLoader workers, resumability after a crash, checksums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dereverb import audio, rooms, shards, spectral, store
from dereverb.cli import main
from dereverb.config import StftConfig
from dereverb.data import DataConfig
from dereverb.errors import DereverbError
from dereverb.train import _pairs
from tiny import tiny_model

SR = 16000
STFT = StftConfig()


@pytest.fixture(scope="module")
def folders(tmp_path_factory, speech, rir_16k):
    """clean/ + reverb/ pairs of real speech (0.6-1.4 s) through a real RIR, aligned."""
    root = tmp_path_factory.mktemp("pairs")
    rir = rooms.analyze(rir_16k, SR, "church")
    for d in ("clean", "reverb"):
        (root / d).mkdir()
    x = speech[0]
    for i, n in enumerate((9600, 22400, 16000)):
        rev, tgt = rooms.reverberate(x[i * SR : i * SR + n], rir)
        audio.write(root / "clean" / f"u{i}.wav", tgt, SR, subtype="FLOAT")
        audio.write(root / "reverb" / f"u{i}.wav", rev, SR, subtype="FLOAT")
    return root


def paired_config(folders, **kw) -> store.StoreConfig:
    base = dict(clean_dir=str(folders / "clean"), reverb_dir=str(folders / "reverb"), items_per_shard=2, block_frames=16)
    return store.StoreConfig(**{**base, **kw})


def exact_db_of(wave: np.ndarray, stft: StftConfig = STFT) -> torch.Tensor:
    return spectral.magnitude_to_db(spectral.Stft(stft)(torch.from_numpy(wave)).abs())  # (F, T) float32


def exact_db(path) -> torch.Tensor:
    return exact_db_of(audio.read(path)[0][0])


def float16_bound(ref: torch.Tensor) -> torch.Tensor:
    """float16 keeps 11 significant bits: error <= half a unit in the last place."""
    return ref.abs() * 2.0**-11 + 1e-6


def float32_stft_bound(ref: torch.Tensor) -> torch.Tensor:
    """dB error of a float32 STFT on another machine's FFT: about two float32 ulps of the frame's
    largest bin, in absolute amplitude, so it matters only far below that bin (0.1 dB at -95 dB
    on an AMD CPU for a store written on an Intel one)."""
    rel = 2.0**-23 * 10 ** ((ref.amax(0, keepdim=True) - ref) / 20)  # amplitude error / |X|
    return 20 * torch.log10(1 + rel)


@pytest.mark.parametrize(("quant_db", "codec"), [(0.05, "zstd"), (0.2, "lz4hc"), (0.0, "none")])
def test_round_trip_within_the_quantisation_step(tmp_path, folders, quant_db, codec):
    meta = store.prepare(paired_config(folders, quant_db=quant_db, codec=codec), STFT, tmp_path)
    assert meta["format"] == 2 and meta["quant_db"] == quant_db
    ds = store.FeatureStore(tmp_path, frames=None, output="db")
    mags = store.FeatureStore(tmp_path, frames=None)
    assert len(ds) == 3 and len(ds.meta["shards"]) == 2
    for i in range(3):
        item = ds[i]
        for key, sub in (("reverb_db", "reverb"), ("clean_db", "clean")):
            ref = exact_db(folders / sub / f"u{i}.wav")
            got = item[key]
            assert got.dtype == torch.float32 and got.shape == ref.shape
            bound = quant_db / 2 + 1e-4 if quant_db else float16_bound(ref)
            assert torch.all((got - ref).abs() <= bound)
            if quant_db:  # on the grid
                steps = (got.double() + 100) / quant_db
                assert torch.allclose(steps, steps.round(), atol=1e-3)
        mag = mags[i]["reverb_mag"]  # the table holds exactly 10 ** (dB / 20) of the served dB
        assert torch.allclose(mag, spectral.db_to_magnitude(item["reverb_db"]), rtol=2e-6, atol=0)


def test_quantised_store_is_smaller_and_rebuilds_audio_at_the_expected_snr(tmp_path, folders):
    sizes, snrs = {}, {}
    ref_wave = audio.read(folders / "reverb" / "u1.wav")[0][0]
    spec = spectral.Stft(STFT)(torch.from_numpy(ref_wave))
    ref = spectral.Stft(STFT).inverse(spec, len(ref_wave)).numpy()
    for q in (0.0, 0.05, 0.2):
        meta = store.prepare(paired_config(folders, quant_db=q, codec="zstd"), STFT, tmp_path / str(q))
        sizes[q] = sum(s["bytes"] for s in meta["shards"])
        mag = store.FeatureStore(tmp_path / str(q), frames=None)[1]["reverb_mag"]
        est = spectral.Stft(STFT).inverse(spectral.with_phase(mag, spec), len(ref_wave)).numpy()
        snrs[q] = 10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2))
    assert sizes[0.0] > 1.1 * sizes[0.05] > 1.1 * 1.1 * sizes[0.2]
    # uniform error of q dB: relative magnitude error q ln(10) / 20 / sqrt(12) (55.6 dB at 0.05),
    # and the iSTFT keeps 1 / (n_fft / hop) of independent errors' energy (+6 dB at 4x overlap)
    for q in (0.05, 0.2):
        expected = -20 * np.log10(q * np.log(10) / 20 / np.sqrt(12)) + 10 * np.log10(STFT.n_fft / STFT.hop_length)
        assert abs(snrs[q] - expected) < 1.5, (q, snrs[q], expected)
    assert snrs[0.0] > snrs[0.05] + 5  # float16: 11 significant bits


def test_store_batch_equals_on_the_fly_features(tmp_path, folders):
    """What training sees from a store batch (train._pairs -> model.features) against the same
    frames of the exact STFT of the audio: within half a quantisation step (in dB)."""
    store.prepare(paired_config(folders), STFT, tmp_path)
    ds = store.FeatureStore(tmp_path, frames=40, seed=5)
    ds.set_epoch(2)
    batch = next(iter(DataLoader(ds, batch_size=3, num_workers=0)))
    model = tiny_model()
    reverb, clean = _pairs(batch, model, torch.device("cpu"))
    assert reverb.shape == clean.shape == (3, 257, 40)
    for side, spec in (("reverb", reverb), ("clean", clean)):
        got = model.features(spec)[:, 0]  # (3, 256, 40) dB
        ref = torch.stack([exact_db(folders / side / f"u{i}.wav")[:, ds.crop_start(i) : ds.crop_start(i) + 40]
                           for i in range(3)])
        assert torch.all((got - ref[:, : STFT.n_freq]).abs() <= ds.quant_db / 2 + 1e-3)
    assert len({ds.crop_start(i) for i in range(3)}) > 1


def test_format1_store_still_loads():
    """A store written by format 1 (float16 dB, time-major blocks of 16 frames, lz4hc), from two
    known signals: it reads as quant_db 0, within float16 precision of their exact dB."""
    path = Path(__file__).parent / "data" / "store_format1"
    ds = store.FeatureStore(path, frames=20, verify=True)
    assert ds.meta["format"] == 1 and ds.quant_db == 0 and ds.stft.n_fft == 64
    sr = ds.stft.sample_rate
    for i, n in enumerate((1600, 960)):
        t = np.arange(n) / sr
        clean = 0.5 * np.sin(2 * np.pi * (300 * t + 20000 * t**2)) * np.exp(-20 * t)
        reverb = clean + 0.4 * np.r_[np.zeros(40), clean[:-40]]  # one echo, 2.5 ms late
        for c, wave in enumerate((reverb, clean)):
            ref = exact_db_of(wave.astype(np.float32), ds.stft)
            got = torch.from_numpy(ds.read(i)[c])
            bound = float16_bound(ref) + float32_stft_bound(ref)
            assert got.shape == ref.shape and torch.all((got - ref).abs() <= bound)
        whole = ds.read(i)
        assert np.array_equal(ds.read(i, 13, 18), whole[..., 13:31])  # across a block boundary
        start = ds.crop_start(i)
        assert np.allclose(ds[i]["clean_mag"].numpy(), 10 ** (whole[1, :, start : start + 20] / 20), rtol=2e-6)


def test_unknown_format_and_bad_quantisation_refused(tmp_path, folders):
    store.prepare(paired_config(folders), STFT, tmp_path)
    meta = (tmp_path / "store.json").read_text()
    (tmp_path / "store.json").write_text(meta.replace('"format": 2', '"format": 3'))
    with pytest.raises(DereverbError, match="store format 3 is not one this dereverb reads"):
        store.FeatureStore(tmp_path)
    for bad in (-0.1, 0.001):
        with pytest.raises(DereverbError, match="quant_db must be 0"):
            paired_config(folders, quant_db=bad)
    assert shards.quantize(np.array([-120.0, -100.0, -99.976, 1e4]), 0.05, -100.0).tolist() == [0, 0, 0, 65535]


def test_crops_across_blocks_and_padding(tmp_path, folders):
    store.prepare(paired_config(folders), STFT, tmp_path)
    ds = store.FeatureStore(tmp_path, frames=40, seed=3)
    whole = ds.read(1)  # (C, F, T), T = 22400 // 128 + 1 = 176 frames
    assert whole.shape == (2, 257, 176)
    for start in (0, 15, 16, 17, 130, 136):
        assert np.array_equal(ds.read(1, start, 40), whole[..., start : start + 40])
    tail = ds.read(0, 70, 40)  # item 0 has 76 frames: 6 real, then the dB floor
    assert np.array_equal(tail[..., :6], ds.read(0)[..., 70:]) and np.all(tail[:, :, 6:] == -100)
    a, b = ds[1], ds[1]
    assert a["reverb_mag"].shape == (257, 40) and torch.equal(a["reverb_mag"], b["reverb_mag"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["reverb_mag"], a["reverb_mag"])


def test_normalisation_statistics_match_stored_reverb(tmp_path, folders):
    store.prepare(paired_config(folders), STFT, tmp_path)
    ds = store.FeatureStore(tmp_path, frames=None)
    feats = np.concatenate([ds.read(i)[0].astype(np.float64) for i in range(len(ds))], axis=1)  # (F, sum T)
    norm = ds.normalizer("per_freq")
    assert norm.mean.shape == (256, 1)
    assert np.allclose(norm.mean[:, 0].numpy(), feats.mean(1)[:256], atol=1e-3)
    assert np.allclose(norm.std[:, 0].numpy(), feats.std(1)[:256], rtol=1e-3)
    glob = ds.normalizer("global")
    assert glob.mean.item() == pytest.approx(feats.mean(), abs=1e-3)


def test_complex_store_rebuilds_audio(tmp_path, folders):
    store.prepare(paired_config(folders, store_complex=True), STFT, tmp_path)
    item = store.FeatureStore(tmp_path, frames=None)[2]
    assert item["reverb_spec"].dtype == torch.complex64 and item["reverb_spec"].shape == (257, 126)
    wave = spectral.Stft(STFT).inverse(item["reverb_spec"], length=16000).numpy()
    ref = audio.read(folders / "reverb" / "u2.wav")[0][0]
    snr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - wave) ** 2))
    assert snr > 40


def test_workers_read_the_same_crops(tmp_path, folders):
    store.prepare(paired_config(folders), STFT, tmp_path)
    ds = store.FeatureStore(tmp_path, frames=32, seed=1)
    one = [ds[i]["clean_mag"] for i in range(len(ds))]
    two = [b["clean_mag"] for b in DataLoader(ds, batch_size=None, num_workers=2)]
    assert all(torch.equal(x, y) for x, y in zip(one, two))


def test_crash_mid_run_then_resume(tmp_path, folders, monkeypatch):
    cfg = paired_config(folders, items_per_shard=1)
    real = store._features
    calls = []

    def crash_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed while shard 2 is being written
        return real(*a, **k)

    monkeypatch.setattr(store, "_features", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        store.prepare(cfg, STFT, tmp_path / "s")
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == ["shard-00000.dvs", "shard-00001.dvs", "store.json"]  # no partial shard, no temp
    with pytest.raises(DereverbError, match="incomplete"):
        store.FeatureStore(tmp_path / "s")
    first = (tmp_path / "s" / "shard-00000.dvs").stat().st_mtime_ns
    monkeypatch.setattr(store, "_features", real)
    meta = store.prepare(cfg, STFT, tmp_path / "s")
    assert meta["complete"] and (tmp_path / "s" / "shard-00000.dvs").stat().st_mtime_ns == first
    store.FeatureStore(tmp_path / "s", verify=True)
    fresh = store.prepare(cfg, STFT, tmp_path / "fresh")  # same bytes as an uninterrupted run
    assert [s["sha256"] for s in fresh["shards"]] == [s["sha256"] for s in meta["shards"]]


def test_corrupt_shard_detected_and_rebuilt(tmp_path, folders):
    cfg = paired_config(folders)
    store.prepare(cfg, STFT, tmp_path)
    shard = tmp_path / "shard-00001.dvs"
    good = shard.read_bytes()
    shard.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    with pytest.raises(DereverbError, match="checksum mismatch"):
        store.FeatureStore(tmp_path).verify()
    store.prepare(cfg, STFT, tmp_path)
    assert shard.read_bytes() == good
    shard.write_bytes(good[:-10])
    with pytest.raises(DereverbError, match="wrong size"):
        store.FeatureStore(tmp_path)


def test_other_settings_refused(tmp_path, folders):
    store.prepare(paired_config(folders), STFT, tmp_path)
    with pytest.raises(DereverbError, match="other settings"):
        store.prepare(paired_config(folders, block_frames=32), STFT, tmp_path)


def test_not_a_store(tmp_path):
    with pytest.raises(DereverbError, match="not a feature store"):
        store.FeatureStore(tmp_path)
    (tmp_path / "x.dvs").write_bytes(b"garbage" * 10)
    with pytest.raises(DereverbError, match="not a dereverb shard"):
        store.Shard(tmp_path / "x.dvs")


def test_speech_mode_and_cli(tmp_path, folders, rir_16k, capsys):
    audio.write(tmp_path / "rir.wav", rir_16k, SR, subtype="FLOAT")
    argv = ["prepare", "-o", str(tmp_path / "s"), "--speech", str(folders / "clean"),
            "--rirs", str(tmp_path / "rir.wav"), "--copies", "2", "--items-per-shard", "4",
            "--quant-db", "0.05", "--codec", "zstd"]
    assert main(argv) == 0
    assert "6 items in 2 shard(s)" in capsys.readouterr().out
    ds = store.FeatureStore(tmp_path / "s", frames=64)
    assert len(ds) == 6 and all(s["rir"] == "rir" for s in ds.meta["shards"][0]["sources"])
    assert ds.quant_db == 0.05 and ds.meta["config"]["codec"] == "zstd"
    item = ds[5]
    assert torch.isfinite(item["reverb_mag"]).all() and item["clean_mag"].shape == (257, 64)
    assert not torch.equal(torch.from_numpy(ds.read(0)), torch.from_numpy(ds.read(1)))  # copies differ
    assert main(argv) == 0  # a rerun on a complete store is a no-op
    with pytest.raises(DereverbError):
        store.StoreConfig(data=DataConfig(), clean_dir="x")
