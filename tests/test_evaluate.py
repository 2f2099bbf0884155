"""Baselines and ``dereverb evaluate``: pairing, bad input, parallel scoring, the model path."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal as ss
import torch

from dereverb import audio, baselines, checkpoint, metrics
from dereverb.cli import main
from dereverb.config import FeatureConfig, StftConfig
from dereverb.errors import DereverbError
from dereverb.evaluate import EvalConfig, evaluate, pair_files, read_csv
from dereverb.model import DereverbModel, model_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SR = 16000
CHEAP = ("si_sdr", "cd", "fwsegsnr", "t60_est")


@pytest.fixture(scope="module")
def clean_speech() -> np.ndarray:
    return audio.read(EXAMPLES / "speech_1688-142285-0003.flac", SR)[0][0]


@pytest.fixture(scope="module")
def church(clean_speech) -> np.ndarray:
    h = audio.read(EXAMPLES / "rir_st_margarets_church.wav", SR, channel=0)[0][0]
    d = int(np.argmax(np.abs(h)))
    y = ss.fftconvolve(clean_speech, h)[d : d + clean_speech.size]
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def _rir(t60: float, rng: np.random.Generator) -> np.ndarray:
    n = int(t60 * SR)
    h = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * 0.3
    h[0] = 1.0
    return h


@pytest.fixture()
def testset(tmp_path, clean_speech) -> Path:
    """reverb/{near,far}/u{0,1}.wav + clean/ (1.5 s each, aligned)."""
    rng = np.random.default_rng(0)
    for cond, t60 in (("near", 0.3), ("far", 0.8)):
        for i in range(2):
            x = clean_speech[int((0.3 + 1.6 * i) * SR) :][: int(1.5 * SR)]
            y = ss.fftconvolve(x, _rir(t60, rng))[: x.size]
            g = 0.5 / np.abs(y).max()
            for kind, sig in (("reverb", y * g), ("clean", x * g)):
                (tmp_path / kind / cond).mkdir(parents=True, exist_ok=True)
                audio.write(tmp_path / kind / cond / f"u{i}.wav", sig, SR)
    return tmp_path


# --- baselines -----------------------------------------------------------------------------------


def test_oracle_magnitude_of_clean_is_identity(clean_speech):
    x = clean_speech[: 2 * SR]
    np.testing.assert_allclose(baselines.oracle_magnitude(x, x), x, atol=1e-5)


def test_oracle_magnitude_restores_the_clean_spectrum(clean_speech, church):
    x, y = clean_speech[: 2 * SR], church[: 2 * SR]
    oracle = baselines.oracle_magnitude(y, x)
    assert metrics.cepstral_distance(x, oracle, SR) < 0.5 * metrics.cepstral_distance(x, y, SR)


@pytest.mark.slow
def test_wpe_removes_some_reverberation(clean_speech, church):
    x, y = clean_speech[: 2 * SR], church[: 2 * SR]
    out = baselines.wpe(y)
    assert out.shape == y.shape and out.dtype == np.float32
    assert metrics.cepstral_distance(x, out, SR) < metrics.cepstral_distance(x, y, SR) - 0.2
    assert metrics.srmr(out, SR) > metrics.srmr(y, SR) + 0.3


def test_baseline_errors():
    with pytest.raises(DereverbError, match="clean"):
        baselines.run_baseline("oracle-magnitude", np.zeros(100))
    with pytest.raises(DereverbError, match="unknown baseline"):
        baselines.run_baseline("nope", np.zeros(100))
    with pytest.raises(DereverbError, match="taps"):
        baselines.WpeConfig(taps=0)


# --- pairing and bad input -------------------------------------------------------------------------


def test_pairing_reports_missing_partners_and_reads_conditions(testset):
    (testset / "clean" / "far" / "u1.wav").unlink()
    audio.write(testset / "clean" / "far" / "extra.wav", np.zeros(100), SR)
    items, notes = pair_files(testset / "reverb", testset / "clean", {})
    assert [it.key for it in items] == ["far/u0", "near/u0", "near/u1"]
    assert [it.condition for it in items] == ["far", "near", "near"]
    assert any("u1.wav: no clean file" in n for n in notes)
    assert any("extra.wav: no reverberant file" in n for n in notes)
    with open(testset / "conditions.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "condition"], ["near/u0.wav", "room A"]])
    items, _ = pair_files(testset / "reverb", testset / "clean", {})
    assert [it.condition for it in items] == ["far", "room A", "near"]


@pytest.mark.slow
def test_evaluate_parallel_with_bad_files(testset):
    """Two workers; a clean file at 22.05 kHz, a clean file of another length, a silent system
    output, a system with a missing file: all reported, the rest evaluated."""
    x, _ = audio.read(testset / "clean" / "near" / "u0.wav")
    audio.write(testset / "clean" / "near" / "u0.wav", audio.resample(x, SR, 22050), 22050)
    audio.write(testset / "clean" / "far" / "u1.wav", np.full(SR // 2, 0.1), SR)
    mine = testset / "mine"
    for key in ("near/u0", "near/u1", "far/u0"):
        (mine / key).parent.mkdir(parents=True, exist_ok=True)
        y, _ = audio.read(testset / "reverb" / f"{key}.wav")
        audio.write(mine / f"{key}.wav", y * (0.0 if key == "near/u1" else 0.9), SR)
    cfg = EvalConfig(baselines=("unprocessed", "oracle-magnitude"), metrics=CHEAP, workers=2, examples=1)
    res = evaluate(testset / "reverb", testset / "out", testset / "clean", {"mine": mine}, cfg=cfg,
                   progress=False)
    notes = "\n".join(res.notes)
    assert "22050 Hz, resampled to 16000 Hz" in notes
    assert "far/u1.wav: 24000 samples but its clean file has 8000; skipped" in notes
    assert "mine: no output for far/u1; system mine skips it" in notes
    assert "near/u1 [mine]: si_sdr: silent estimate" in notes
    rows, names = read_csv(testset / "out" / "per_file.csv")
    assert names == CHEAP
    assert sorted({r["file"] for r in rows}) == ["far/u0", "near/u0", "near/u1"]
    assert {r["system"] for r in rows} == {"unprocessed", "oracle-magnitude", "mine"}
    silent = next(r for r in rows if r["file"] == "near/u1" and r["system"] == "mine")
    assert math.isnan(silent["si_sdr"]) and math.isnan(silent["cd"])
    by = {(r["file"], r["system"]): r for r in rows}
    for f in ("far/u0", "near/u0"):
        assert by[(f, "oracle-magnitude")]["cd"] < by[(f, "unprocessed")]["cd"]
        assert by[(f, "mine")]["si_sdr"] == pytest.approx(by[(f, "unprocessed")]["si_sdr"], abs=0.05)
    assert (testset / "out" / "report.html").is_file()


def test_evaluate_without_clean_is_non_intrusive(testset):
    cfg = EvalConfig(metrics=("t60_est", "drr_est", "si_sdr"), workers=1, examples=0,
                     wpe=baselines.WpeConfig(taps=8, iterations=1))
    res = evaluate(testset / "reverb", testset / "out", cfg=cfg, progress=False)
    assert res.metrics == ("t60_est", "drr_est")
    assert res.systems == ("unprocessed", "wpe")
    t60 = {r["file"]: r["t60_est"] for r in res.rows if r["system"] == "unprocessed"}
    assert t60["far/u0"] > t60["near/u0"]


def test_system_label_clash_and_bad_flags(testset):
    with pytest.raises(DereverbError, match="label is taken"):
        evaluate(testset / "reverb", testset / "out", systems={"wpe": testset / "clean"},
                 cfg=EvalConfig(workers=1), progress=False)
    with pytest.raises(DereverbError, match="unknown 'pesk'"):
        EvalConfig(metrics=("pesk",))
    assert main(["evaluate", "--reverb", str(testset / "reverb"), "--system", "nolabel",
                 "-o", str(testset / "o")]) == 2


@pytest.mark.slow
def test_cli_with_a_model(testset, capsys):
    """``--model PATH`` enhances every file (outputs kept) and scores them as system model:NAME."""
    torch.manual_seed(0)
    checkpoint.save(testset / "tiny.safetensors", DereverbModel(StftConfig(), FeatureConfig(), model_config("tiny")))
    code = main(["evaluate", "--reverb", str(testset / "reverb"), "--clean", str(testset / "clean"),
                 "--model", str(testset / "tiny.safetensors"), "--baselines", "unprocessed",
                 "--metrics", "si_sdr,cd", "--workers", "1", "--examples", "1", "-o", str(testset / "out")])
    assert code == 0
    assert "| all | model:tiny | 4 |" in capsys.readouterr().out
    assert len(list((testset / "out" / "enhanced" / "model_tiny").rglob("*.wav"))) == 4


# --- make-testset ----------------------------------------------------------------------------------


def test_make_testset_simulated_is_seeded_and_feeds_evaluate(tmp_path, clean_speech):
    speech = tmp_path / "speech"
    speech.mkdir()
    for i in range(3):
        audio.write(speech / f"s{i}.wav", clean_speech[i * SR : (i + 1) * SR + SR // 2], SR)
    out = tmp_path / "set"
    args = ["make-testset", "--speech", str(speech), "--rirs", "simulate", "--t60", "0.3",
            "--distances", "near=0.5,far=2", "--per-condition", "2", "--seed", "3", "-o", str(out)]
    assert main(args) == 0
    with open(out / "conditions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["condition"] for r in rows] == ["t60_0.30_near"] * 2 + ["t60_0.30_far"] * 2
    assert float(rows[0]["drr"]) > float(rows[2]["drr"])  # near has more direct sound than far
    first = {p: p.read_bytes() for p in sorted(out.rglob("*.wav"))}
    assert len(first) == 2 * 4 + 2  # reverb + clean pairs, and the two RIRs
    for r in rows:
        rev, _ = audio.read(out / "reverb" / r["file"])
        tgt, _ = audio.read(out / "clean" / r["file"])
        assert rev.shape == tgt.shape and np.abs(rev).max() <= 0.9 + 1e-4
        lag = np.argmax(ss.correlate(rev[0], tgt[0], "full")) - (tgt.shape[1] - 1)
        assert abs(lag) <= 2  # aligned sample for sample
    assert main(args) == 0  # rerun: saved RIRs reused, every file identical
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.wav"))} == first
    cfg = EvalConfig(baselines=("unprocessed",), metrics=("cd",), workers=1, examples=0)
    res = evaluate(out / "reverb", tmp_path / "report", out / "clean", cfg=cfg, progress=False)
    assert {r["condition"] for r in res.rows} == {"t60_0.30_near", "t60_0.30_far"}


def test_make_testset_measured_rirs(tmp_path, clean_speech):
    speech, rirs = tmp_path / "speech", tmp_path / "rirs"
    speech.mkdir()
    rirs.mkdir()
    audio.write(speech / "a.wav", clean_speech[: SR], SR)
    h, rate = audio.read(EXAMPLES / "rir_st_margarets_church.wav", channel=0)
    audio.write(rirs / "church.wav", h, rate)
    assert main(["make-testset", "--speech", str(speech), "--rirs", str(rirs), "-o", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "reverb" / "church" / "a.wav").is_file()
    with open(tmp_path / "o" / "conditions.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["condition"] == "church" and 1.0 < float(row["t30"]) < 1.5  # measured T30 1.26 s
    assert main(["make-testset", "--speech", str(speech), "--rirs", "simulate", "--distances", "near",
                 "-o", str(tmp_path / "p")]) == 2


def test_make_testset_spreads_few_utterances_over_the_conditions(tmp_path, clean_speech):
    """4 utterances over 6 one-utterance conditions: each is used once or twice (independent draws
    per condition used one of them for 5 of the 6 pairs)."""
    speech, rirs = tmp_path / "speech", tmp_path / "rirs"
    speech.mkdir()
    rirs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        audio.write(speech / f"s{i}.wav", clean_speech[i * SR // 2 :][: SR // 2], SR)
    for i in range(6):
        audio.write(rirs / f"room{i}.wav", _rir(0.2 + 0.1 * i, rng), SR, subtype="FLOAT")
    for seed in range(4):
        out = tmp_path / f"set{seed}"
        assert main(["make-testset", "--speech", str(speech), "--rirs", str(rirs), "--per-condition", "1",
                     "--seed", str(seed), "-o", str(out)]) == 0
        with open(out / "conditions.csv", newline="") as f:
            used = [Path(r["speech"]).name for r in csv.DictReader(f)]
        assert len(used) == 6 and sorted({used.count(u) for u in set(used)}) == [1, 2] and len(set(used)) == 4, used
