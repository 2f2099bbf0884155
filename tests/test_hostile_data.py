"""Hostile input for ``dereverb prepare`` and ``dereverb train`` (issue 8): speech and RIR files of
every awkward kind, wrong paths, symlink loops, outputs on top of inputs.

Bad files among good ones are skipped with a warning (``--strict``: an error); with no usable
file left the run stops with one ``dereverb: error:`` line.  Inputs are hashed before and after.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dereverb import checkpoint
from dereverb.store import FeatureStore
from hostile_cases import (INVALID, REPO, RIR, SPEECH, VALID, assert_one_line_error, cli, copy_files, hashes,
                           make_library, rir_variants, temp_files)

SMOKE = REPO / "recipes" / "smoke.yaml"
SHORT = ["--set", f"data.speech=[{SPEECH}]", "--set", f"data.rirs=[{RIR}]", "--set", "train.steps=2", "--set", "train.norm_batches=1", "--set", "train.valid_count=1",
         "--set", "train.checkpoint_every=2", "--set", "train.valid_every=2", "--set", "train.progress=false"]


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> Path:
    return make_library(tmp_path_factory.mktemp("hostile") / "lib")


def prepare(capsys, out: Path, *args) -> tuple[int, str, str]:
    return cli(capsys, "prepare", *args, "-o", out)


def train(capsys, run_dir: Path, *sets: str) -> tuple[int, str, str]:
    return cli(capsys, "train", "--config", SMOKE, *SHORT, *sum((["--set", s] for s in sets), []),
               "--run-dir", run_dir)


# --- prepare ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_prepare_awkward_speech_and_rirs_make_a_verified_finite_store(lib, tmp_path, capsys):
    speech = copy_files(lib, sorted(VALID), tmp_path / "speech")
    rirs = rir_variants(tmp_path / "rirs")
    before = hashes(tmp_path)
    code, _, err = prepare(capsys, tmp_path / "store", "--speech", speech, "--rirs", rirs)
    assert code == 0, err
    assert "dereverb: warning: skipped 1 bad speech file(s): " in err and "one_sample.wav: too short" in err
    store = FeatureStore(tmp_path / "store", frames=None, verify=True)
    assert sorted(store.name(i).split("@")[0] for i in range(len(store))) == sorted(
        Path(n).stem for n in VALID if n != "one_sample.wav")
    for i in range(len(store)):
        assert np.isfinite(store.read(i).astype(np.float32)).all(), store.name(i)
    assert hashes(tmp_path / "speech") | hashes(tmp_path / "rirs") == before and temp_files(tmp_path) == []


@pytest.mark.parametrize("name", sorted(INVALID))
def test_prepare_broken_speech_is_skipped_or_one_line(name, lib, tmp_path, capsys):
    """Alone: one error line.  Beside a good file: a warning naming it, a store of the good file.
    ``--strict``: one error line naming it."""
    alone = copy_files(lib, [name], tmp_path / "alone")
    code, _, err = prepare(capsys, tmp_path / "s1", "--speech", alone, "--rirs", RIR)
    assert_one_line_error(code, err, "no usable speech" if name not in ("nan.wav", "inf.wav") else "every item was skipped")
    mixed = copy_files(lib, ["good.wav", name], tmp_path / "mixed")
    before = hashes(mixed)
    code, _, err = prepare(capsys, tmp_path / "s2", "--speech", mixed, "--rirs", RIR)
    warning = next(line for line in err.splitlines() if "dereverb: warning: " in line)
    assert code == 0 and f"{mixed / name}: " in warning and INVALID[name] in warning, err
    assert len(FeatureStore(tmp_path / "s2", verify=True)) == 1
    code, _, err = prepare(capsys, tmp_path / "s3", "--speech", mixed, "--rirs", RIR, "--strict")
    assert_one_line_error(code, err, name)
    assert hashes(mixed) == before and temp_files(tmp_path) == []


def test_prepare_broken_rirs_are_skipped_or_one_line(lib, tmp_path, capsys):
    bad = copy_files(lib, ["zeros.wav", "one_sample.wav", "clipped.wav", "nan.wav", "text.wav",
                           "truncated_header.wav", "zero_samples.wav"], tmp_path / "rirs")
    code, _, err = prepare(capsys, tmp_path / "s1", "--speech", lib / "good.wav", "--rirs", bad)
    assert_one_line_error(code, err, "no usable RIR")
    reasons = ("RIR is silent", "RIR too short", "RIR is clipped", "NaN or infinite", "not a readable audio file",
               "contains no audio samples")
    assert all(r in err for r in reasons), err
    shutil.copy(RIR, bad / "church.wav")
    code, _, err = prepare(capsys, tmp_path / "s2", "--speech", lib / "good.wav", "--rirs", bad)
    assert code == 0 and "dereverb: warning: skipped 7 bad RIR file(s)" in err, err


def test_prepare_reads_formats_named_by_the_user(lib, tmp_path, capsys):
    """An AIFF file and a WAV named .mp3 given by name are read (only folder scans filter suffixes)."""
    for name in ("aiff.aiff", "wav_named.mp3"):
        code, _, err = prepare(capsys, tmp_path / name, "--speech", lib / name, "--rirs", RIR)
        assert code == 0 and len(FeatureStore(tmp_path / name)) == 1, err


def test_prepare_wrong_kinds_of_path(lib, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    speech = copy_files(lib, ["good.wav"], tmp_path / "speech")
    cases = {
        ("--speech", tmp_path / "missing", "--rirs", RIR): "no such file or folder",
        ("--speech", speech, "--rirs", tmp_path / "missing.wav"): "no such file or folder",
        ("--speech", speech, "--rirs", RIR, "--config", speech): "config file not found",
        ("--speech", speech, "--rirs", RIR, "--config", speech / "good.wav"): "not a text file",
        ("--clean", speech / "good.wav", "--reverb", speech / "good.wav"): "is a file; paired clean/reverb",
        ("--clean", speech, "--reverb", tmp_path / "missing"): "no such file or folder",
    }
    before = hashes(tmp_path)
    for args, message in cases.items():
        code, _, err = prepare(capsys, tmp_path / "store", *args)
        assert_one_line_error(code, err, message)
    for out, message in ((tmp_path / "afile", "File exists"), (tmp_path / "afile" / "sub", "Not a directory"),
                         (speech / "good.wav", "File exists")):  # the last: output onto the input
        code, _, err = prepare(capsys, out, "--speech", speech, "--rirs", RIR)
        assert_one_line_error(code, err, str(out), message)
    assert hashes(tmp_path) == before


def test_prepare_symlink_loop_and_store_inside_the_speech_folder(lib, tmp_path, capsys):
    """A symlink loop is walked once, a dangling link skipped; a store written inside the speech
    folder adds no audio, so the same command resumes it (finds it complete)."""
    speech = copy_files(lib, ["good.wav", "8k.wav"], tmp_path / "speech")
    (speech / "loop").symlink_to(".")
    (speech / "dangling.wav").symlink_to("nowhere.wav")
    before = hashes(speech)
    for _ in range(2):
        code, _, err = prepare(capsys, speech / "store", "--speech", speech, "--rirs", RIR)
        assert code == 0 and "dangling.wav: no such file" in err, err
        assert len(FeatureStore(speech / "store", verify=True)) == 2
    assert {k: v for k, v in hashes(speech).items() if k in before} == before


# --- train -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_on_awkward_speech_and_rirs(lib, tmp_path, capsys):
    speech = copy_files(lib, sorted(VALID), tmp_path / "speech")
    rirs = rir_variants(tmp_path / "rirs")
    before = hashes(tmp_path)
    code, _, err = train(capsys, tmp_path / "run", f"data.speech=[{speech}]", f"data.rirs=[{rirs}]")
    assert code == 0, err
    model = checkpoint.load(tmp_path / "run")
    wave = np.random.default_rng(0).standard_normal((1, 8000)).astype(np.float32)
    with torch.no_grad():
        assert torch.isfinite(model.enhance_wave(torch.from_numpy(wave))).all()
    assert hashes(tmp_path / "speech") | hashes(tmp_path / "rirs") == before and temp_files(tmp_path) == []


@pytest.mark.parametrize("names, message", [
    (["nan.wav", "inf.wav", "zeros.wav"], "100 crops in a row were silent"),
    (["text.wav", "truncated_header.wav", "zero_samples.wav", "one_sample.wav", "mp4_named.wav"], "no usable speech"),
])
def test_train_on_unusable_speech_is_one_line(names, message, lib, tmp_path, capsys):
    speech = copy_files(lib, names, tmp_path / "speech")
    code, _, err = train(capsys, tmp_path / "run", f"data.speech=[{speech}]")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "run").exists()


def test_train_wrong_kinds_of_path(lib, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    speech = copy_files(lib, ["good.wav"], tmp_path / "speech")
    recipe = tmp_path / "recipe.yaml"
    shutil.copy(SMOKE, recipe)
    cases = {
        ("--config", tmp_path / "missing.yaml", "--run-dir", tmp_path / "run"): "config file not found",
        ("--config", tmp_path, "--run-dir", tmp_path / "run"): "config file not found",
        ("--config", speech / "good.wav", "--run-dir", tmp_path / "run"): "not a text file",
        ("--config", recipe, "--run-dir", tmp_path / "afile"): "cannot create the run folder",
        ("--config", recipe, "--run-dir", tmp_path / "afile" / "sub"): "cannot create the run folder",
        ("--config", recipe, "--run-dir", recipe): "cannot create the run folder",  # onto the recipe
        ("--config", recipe, "--set", f"data.speech=[{tmp_path / 'missing'}]", "--run-dir", tmp_path / "run"):
            "no such file or folder",
        ("--config", recipe, "--set", f"data.speech=[{speech}]", "--run-dir", speech / "run"):
            "inside the data folder",
    }
    before = hashes(tmp_path)
    for args, message in cases.items():
        code, _, err = cli(capsys, "train", *args[:2], *SHORT, *args[2:])
        assert_one_line_error(code, err, message)
    assert hashes(tmp_path) == before and not (tmp_path / "run").exists()


def test_train_symlink_loop_in_the_speech_folder(lib, tmp_path, capsys):
    speech = copy_files(lib, ["good.wav", "8k.wav"], tmp_path / "speech")
    (speech / "loop").symlink_to(".")
    code, _, err = train(capsys, tmp_path / "run", f"data.speech=[{speech}]")
    assert code == 0, err
    assert checkpoint.read_meta(tmp_path / "run")["step"] == 2
