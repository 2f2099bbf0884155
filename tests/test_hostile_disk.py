"""Unreadable inputs, unwritable output folders and disks that fill up mid-write, for ``enhance``,
``evaluate``, ``prepare`` and ``train`` (issue 8).

Tests run as root in CI, where ``chmod 000`` does not bite: unreadable files are simulated by
fault injection (``hostile_cases.deny_read``), the real permission test runs only as a user.  A
full disk is made three ways: RLIMIT_FSIZE (real EFBIG from the kernel for every writer),
ENOSPC raised from soundfile's writes, and a real 96 kB tmpfs where mounting is allowed.  Every
case: one ``dereverb: error:`` line naming the file, no ``*.tmp`` left, no partial output, inputs
unchanged, and a rerun with room to write completes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dereverb import checkpoint
from dereverb.store import FeatureStore
from hostile_cases import (RIR, SPEECH, assert_one_line_error, cli, copy_files, deny_read, enospc_after,
                           file_size_limit, hashes, make_library, small_tmpfs, temp_files, tiny_model_file)

TRAIN = ["--set", f"data.speech=[{SPEECH}]", "--set", f"data.rirs=[{RIR}]", "--set", "train.steps=2",
         "--set", "train.norm_batches=1", "--set", "train.valid_count=1", "--set", "train.checkpoint_every=2",
         "--set", "train.valid_every=2", "--set", "train.progress=false"]
EVAL = ["--baselines", "unprocessed", "--metrics", "si_sdr,t60_est", "--workers", "1", "--examples", "1"]


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> Path:
    root = make_library(tmp_path_factory.mktemp("hostile") / "lib")
    rng = np.random.default_rng(0)
    x = 0.1 * rng.standard_normal(160000)  # 10 s at 16 kHz: 320 kB as 16-bit, 1.28 MB as float64
    sf.write(root / "long.wav", x, 16000, subtype="PCM_16")
    sf.write(root / "long64.wav", x, 16000, subtype="DOUBLE")
    return root


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def commands(src: Path, out: Path, model_file: Path) -> dict[str, list]:
    """Each command reading ``src`` (a folder of speech) and writing under ``out``."""
    return {
        "enhance": ["enhance", src, "-o", out / "enhanced", "--model", model_file],
        "evaluate": ["evaluate", "--reverb", src, *EVAL, "-o", out / "report"],
        "prepare": ["prepare", "--speech", src, "--rirs", RIR, "-o", out / "store"],
        "train": ["train", "--config", Path(__file__).parents[1] / "recipes" / "smoke.yaml", *TRAIN,
                  "--set", f"data.speech=[{src}]", "--run-dir", out / "run"],
    }


# --- unreadable input ------------------------------------------------------------------------------


def test_unreadable_input_by_fault_injection(lib, model_file, tmp_path, capsys, monkeypatch):
    """An unreadable file alone stops every command with one line; beside a readable file,
    prepare and train skip it with a warning (enhance and evaluate refuse: their outputs are per file)."""
    alone = copy_files(lib, ["good.wav"], tmp_path / "alone")
    mixed = copy_files(lib, ["good.wav", "8k.wav"], tmp_path / "mixed")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((Path(__file__).parents[1] / "recipes" / "smoke.yaml").read_text())
    before = hashes(tmp_path)
    deny_read(monkeypatch, alone / "good.wav", mixed / "8k.wav", recipe)
    expect = {"enhance": "permission denied", "evaluate": "permission denied", "prepare": "no usable speech",
              "train": "no usable speech"}
    for name, args in commands(alone, tmp_path / "o1", model_file).items():
        code, _, err = cli(capsys, *args)
        assert_one_line_error(code, err, expect[name])
    for name, args in commands(mixed, tmp_path / "o2", model_file).items():
        code, _, err = cli(capsys, *args)
        if name in ("enhance", "evaluate"):
            assert_one_line_error(code, err, str(mixed / "8k.wav"), "permission denied")
        else:
            assert code == 0, (name, err)
    assert len(FeatureStore(tmp_path / "o2" / "store", verify=True)) == 1
    assert files(tmp_path / "o1") == [] and files(tmp_path / "o2" / "enhanced") == []
    code, _, err = cli(capsys, "train", "--config", recipe, "--run-dir", tmp_path / "run")
    assert_one_line_error(code, err, str(recipe), "Permission denied")  # an unreadable recipe
    monkeypatch.undo()
    assert {k: v for k, v in hashes(tmp_path).items() if k in before} == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions; "
                    "test_unreadable_input_by_fault_injection covers this case")
def test_unreadable_input_by_permissions(lib, model_file, tmp_path, capsys):
    alone = copy_files(lib, ["good.wav"], tmp_path / "alone")
    (alone / "good.wav").chmod(0)
    for args in commands(alone, tmp_path / "out", model_file).values():
        code, _, err = cli(capsys, *args)
        assert_one_line_error(code, err)
    assert files(tmp_path / "out") == []


# --- unwritable output -----------------------------------------------------------------------------


def test_output_under_a_regular_file(lib, model_file, tmp_path, capsys):
    """OUT = some_file/sub fails for root too (ENOTDIR)."""
    src = copy_files(lib, ["good.wav"], tmp_path / "in")
    (tmp_path / "afile").write_text("x")
    for name, args in commands(src, tmp_path / "afile", model_file).items():
        code, _, err = cli(capsys, *args)
        assert_one_line_error(code, err, str(tmp_path / "afile"))
    assert (tmp_path / "afile").read_text() == "x" and temp_files(tmp_path) == []


def test_read_only_output_folder(lib, model_file, tmp_path, capsys):
    src = copy_files(lib, ["good.wav"], tmp_path / "in")
    with small_tmpfs(tmp_path / "ro", read_only=True) as ro:
        for name, args in commands(src, ro, model_file).items():
            code, _, err = cli(capsys, *args)
            assert_one_line_error(code, err, str(ro))
        assert files(ro) == []


# --- full disk -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_enhance_file_size_limit_in_both_passes(lib, model_file, tmp_path, capsys):
    """100 kB: the float scratch pass fails; 1 MB with a float64 input: the final write fails."""
    src = copy_files(lib, ["long.wav", "long64.wav"], tmp_path / "in")
    before = hashes(src)
    for name, limit in (("long.wav", 100_000), ("long64.wav", 1_000_000)):
        with file_size_limit(limit):
            code, _, err = cli(capsys, "enhance", src / name, "-o", tmp_path / "out", "--model", model_file)
        assert_one_line_error(code, err, str(tmp_path / "out" / name), "write failed")
        assert files(tmp_path / "out") == []
    code, _, err = cli(capsys, "enhance", src, "-o", tmp_path / "out", "--model", model_file)
    assert code == 0 and sf.info(tmp_path / "out" / "long64.wav").frames == 160000, err
    assert hashes(src) == before and temp_files(tmp_path) == []


def test_enhance_evaluate_train_enospc_from_soundfile(lib, model_file, tmp_path, capsys, monkeypatch):
    src = copy_files(lib, ["long.wav"], tmp_path / "in")
    cmds = commands(src, tmp_path / "out", model_file)
    cmds["train"] += ["--set", "train.samples=1"]  # samples are WAVs written by soundfile
    for name in ("enhance", "evaluate", "train"):
        with monkeypatch.context() as m:
            enospc_after(m, frames=8000)
            code, _, err = cli(capsys, *cmds[name])
        assert_one_line_error(code, err, "write failed", "No space left on device")
    assert files(tmp_path / "out" / "enhanced") == [] and temp_files(tmp_path) == []


def test_prepare_file_size_limit_then_resume(lib, tmp_path, capsys):
    out = tmp_path / "store"
    with file_size_limit(100_000):
        code, _, err = cli(capsys, "prepare", "--speech", SPEECH, "--rirs", RIR, "-o", out)
    assert_one_line_error(code, err, str(out / "shard-00000.dvs"), "write failed")
    assert files(out) == []
    code, _, err = cli(capsys, "prepare", "--speech", SPEECH, "--rirs", RIR, "-o", out)
    assert code == 0, err
    assert len(FeatureStore(out, verify=True)) == 1


@pytest.mark.parametrize("writer", ["safetensors", "torch.save"])
def test_train_file_size_limit_then_resume(writer, tmp_path, capsys):
    """A limit that stops the first model file (safetensors), or only the larger resume state
    (torch.save); the rerun completes and every checkpoint on disk loads and verifies."""
    model_bytes = tiny_model_file(tmp_path / "probe.safetensors").stat().st_size
    limit = model_bytes // 2 if writer == "safetensors" else model_bytes + 64_000
    args = ["train", "--config", Path(__file__).parents[1] / "recipes" / "smoke.yaml", *TRAIN,
            "--set", "train.samples=0", "--run-dir", tmp_path / "run"]
    with file_size_limit(limit):
        code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, ".safetensors: write failed" if writer == "safetensors" else
                          "state.pt: write failed")
    assert temp_files(tmp_path) == []
    for f in (tmp_path / "run").glob("*.safetensors"):
        checkpoint.load(f)  # what a failed run leaves is whole
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    assert checkpoint.read_meta(tmp_path / "run")["step"] == 2
    assert checkpoint.load_state(tmp_path / "run" / "state.pt")["step"] == 2


@pytest.mark.slow
def test_real_full_filesystem(lib, model_file, tmp_path, capsys):
    """A 96 kB tmpfs: every command fails naming the file (libsndfile says only "System error"),
    and the filesystem holds no temporary file afterwards."""
    src = copy_files(lib, ["long.wav"], tmp_path / "in")
    before = hashes(src)
    with small_tmpfs(tmp_path / "small") as small:
        for name, args in commands(src, small, model_file).items():
            code, _, err = cli(capsys, *args)
            line = assert_one_line_error(code, err, str(small), "write failed")
            assert "No space left on device" in line or "System error" in line, line  # libsndfile's words
        assert temp_files(small) == []
        assert "enhanced/long.wav" not in files(small)
        assert not any(f.endswith((".safetensors", ".dvs", "state.pt")) for f in files(small))
    assert hashes(src) == before
