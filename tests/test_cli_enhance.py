"""``dereverb enhance`` end to end: folder trees, reruns, options, and every bad input ending in one
line, exit code 2, no output file and untouched inputs (checked by hashing)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dereverb import checkpoint
from dereverb.cli import main
from dereverb.config import FeatureConfig, StftConfig
from dereverb.enhance import Dereverberator
from dereverb.model import DereverbModel, model_config
from tiny import one_thread, tiny_model  # noqa: F401  (one_thread: autouse fixture)

MANIFEST = "dereverb-manifest.jsonl"
SUMMARY = re.compile(r"^(\d+) files, ([\d.]+) h of audio \(([\d.]+) s\), (\d+) failed, real-time factor ([\d.]+)$")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(2)
    model = DereverbModel(StftConfig(), FeatureConfig(), model_config("tiny"))
    with torch.no_grad():
        model.normalizer.mean.fill_(-45.0)
        model.normalizer.std.fill_(18.0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    checkpoint.save(path, model)
    return path


@pytest.fixture
def tree(tmp_path, speech) -> Path:
    """in/a.wav (16-bit, 16 kHz mono), in/sub/b.flac (24-bit, 44.1 kHz stereo), in/notes.txt."""
    x = speech[0][:24000]
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", x, 16000, subtype="PCM_16")
    sf.write(root / "sub" / "b.flac", np.stack([x, -x], 1)[:20000], 44100, subtype="PCM_24")
    (root / "notes.txt").write_text("not audio")
    return root


def hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def enhance(*args, model=None) -> int:
    return main(["enhance", *map(str, args), *(["--model", str(model)] if model else [])])


def test_folder_tree_is_mirrored_and_a_rerun_skips_finished_outputs(tree, tmp_path, model_file, capsys):
    before = hashes(tree)
    out = tmp_path / "out"
    assert enhance(tree, tree / "a.wav", "-o", out, model=model_file) == 0  # a.wav named twice runs once
    m = SUMMARY.match(capsys.readouterr().out.strip().splitlines()[-1])
    assert m and m.group(1) == "2" and float(m.group(3)) == pytest.approx(1.5 + 20000 / 44100, abs=0.05)
    assert float(m.group(2)) == pytest.approx(float(m.group(3)) / 3600, abs=1e-3) and m.group(4) == "0"
    a, b = sf.info(out / "a.wav"), sf.info(out / "sub" / "b.flac")
    assert (a.frames, a.samplerate, a.channels, a.subtype) == (24000, 16000, 1, "PCM_16")
    assert (b.frames, b.samplerate, b.channels, b.subtype) == (20000, 44100, 2, "PCM_24")
    assert sorted(p.name for p in out.rglob("*")) == ["a.wav", "b.flac", MANIFEST, "sub"]
    stamp = (out / "a.wav").stat().st_mtime_ns
    assert enhance(tree, "-o", out, model=model_file) == 0
    text = capsys.readouterr().out
    assert "skipped 2 existing" in text and text.strip().endswith("real-time factor 0.000")
    assert (out / "a.wav").stat().st_mtime_ns == stamp
    assert enhance(tree, "-o", out, "--overwrite", "--suffix", "_dry", model=model_file) == 0
    assert (out / "sub" / "b_dry.flac").is_file()
    assert hashes(tree) == before


def test_output_folder_inside_the_input_folder(tree, model_file, capsys):
    assert enhance(tree, "-o", tree / "dry", model=model_file) == 0
    assert enhance(tree, "-o", tree / "dry", model=model_file) == 0  # outputs are not new inputs
    assert "skipped 2 existing" in capsys.readouterr().out
    dry = tree / "dry"
    assert sorted(str(p.relative_to(dry)) for p in dry.rglob("*") if p.is_file()) == ["a.wav", MANIFEST, "sub/b.flac"]


def test_in_place_with_a_suffix_reruns_and_skips_its_own_outputs(tree, model_file, capsys):
    """``-o`` the input folder itself with ``--suffix``: outputs land beside their inputs, and a
    rerun takes them for what they are (done work), not for new inputs or inputs to protect."""
    before = hashes(tree)
    assert enhance(tree, "-o", tree, "--suffix", "_dry", model=model_file) == 0
    done = {p: hashes(tree)[p] for p in (str(tree / "a_dry.wav"), str(tree / "sub" / "b_dry.flac"), str(tree / MANIFEST))}
    capsys.readouterr()
    assert enhance(tree, "-o", tree, "--suffix", "_dry", model=model_file) == 0
    out = capsys.readouterr().out
    assert "skipped 2 existing output(s)" in out and out.strip().splitlines()[-1].startswith("0 files")
    assert hashes(tree) == {**before, **done}  # no a_dry_dry.wav, nothing rewritten, nothing recorded
    assert enhance(tree, "-o", tree, "--suffix", "_dry", "--overwrite", model=model_file) == 0
    assert sorted(hashes(tree)) == sorted({**before, **done})
    assert enhance(tree, "-o", tree, model=model_file) == 2  # no suffix: each output would be its input
    assert "is an input file" in capsys.readouterr().err


def test_options_mono_model_rate_strength_and_onnx(tree, tmp_path, model_file):
    out = tmp_path / "out"
    args = ["--mono", "--output-rate", "model", "--strength", "0.5", "--backend", "onnx", "--phase", "griffinlim"]
    assert enhance(tree / "sub" / "b.flac", "-o", out, *args, model=model_file) == 0
    info = sf.info(out / "b.flac")
    assert (info.channels, info.samplerate, info.frames) == (1, 16000, round(20000 * 16000 / 44100))
    assert enhance(tree / "a.wav", "-o", tmp_path / "one.wav", model=model_file) == 0  # -o names a file
    assert sf.info(tmp_path / "one.wav").frames == 24000
    assert enhance(tree / "a.wav", "-o", tmp_path / "wpe.wav", "--wpe", model=model_file) == 0
    plain, cascade = sf.read(tmp_path / "one.wav")[0], sf.read(tmp_path / "wpe.wav")[0]
    assert plain.shape == cascade.shape and not np.array_equal(plain, cascade)
    assert enhance(tree / "a.wav", "-o", tmp_path / "s1.wav", "--shifts", "1", model=model_file) == 0
    single = sf.read(tmp_path / "s1.wav")[0]
    assert single.shape == plain.shape and not np.array_equal(single, plain)  # the default averages 2


def test_interrupted_folder_run_leaves_no_partial_file_and_rerun_finishes(tree, tmp_path, model_file, monkeypatch):
    out = tmp_path / "out"
    calls = {"n": 0}
    real = Dereverberator._rows

    def dies_in_second_file(self, x):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(Dereverberator, "_rows", dies_in_second_file)
    assert enhance(tree, "-o", out, model=model_file) == 130
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["a.wav", MANIFEST]
    assert not (out / "sub").exists()  # the folder made for b.flac is removed with its scratch file
    (out / "sub").mkdir()
    (out / "sub" / ".b.flac.k1ll3d.f32.tmp").write_bytes(b"\0" * 64)  # what a SIGKILL leaves
    monkeypatch.setattr(Dereverberator, "_rows", real)
    assert enhance(tree, "-o", out, model=model_file) == 0
    assert sf.info(out / "sub" / "b.flac").frames == 20000
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["a.wav", "b.flac", MANIFEST]


def _bad_cases(tmp_path: Path, tree: Path, model_file: Path) -> dict[str, list]:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "text.wav").write_text("not audio")
    sf.write(bad / "empty.wav", np.zeros(0), 16000)
    nan = np.full(8000, 0.1)
    nan[4000] = np.nan
    sf.write(bad / "nan.wav", nan, 16000, subtype="FLOAT")
    (bad / "empty_dir").mkdir()
    (tmp_path / "other").mkdir()
    sf.write(tmp_path / "other" / "a.wav", np.full(800, 0.1), 16000)
    (tmp_path / "afile").write_text("x")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(model_file.read_bytes()[:-100])
    out = tmp_path / "out"
    return {
        "nonexistent": [tmp_path / "missing.wav", "-o", out],
        "folder without audio": [bad / "empty_dir", "-o", out],
        "output is a file": [tree, tree / "a.wav", "-o", tmp_path / "afile"],
        "text named .wav": [bad / "text.wav", "-o", out],
        "zero length": [bad / "empty.wav", "-o", out],
        "nan": [bad / "nan.wav", "-o", out],
        "one bad file in a folder": [tree, bad / "text.wav", "-o", out],
        "unwritable output folder": [tree, "-o", tmp_path / "afile" / "out"],
        "output onto the input": [tree, "-o", tree],
        "two inputs, one output": [tree, tmp_path / "other", "-o", out],
        "missing model": [tree, "-o", out, "--model", tmp_path / "none.safetensors"],
        "corrupt model": [tree, "-o", out, "--model", corrupt],
        "phase the model lacks": [tree, "-o", out, "--phase", "model"],
        "strength out of range": [tree, "-o", out, "--strength", "1.5"],
        "no network pass": [tree, "-o", out, "--shifts", "0"],
    }


@pytest.mark.parametrize("case", ["nonexistent", "folder without audio", "output is a file", "text named .wav",
                                  "zero length", "nan", "one bad file in a folder", "unwritable output folder",
                                  "output onto the input", "two inputs, one output", "missing model", "corrupt model",
                                  "phase the model lacks", "strength out of range", "no network pass"])
def test_bad_input_is_one_line_exit_2_nothing_written(case, tree, tmp_path, model_file, capsys):
    args = _bad_cases(tmp_path, tree, model_file)[case]
    before = hashes(tmp_path)
    model = None if "--model" in args else model_file
    assert enhance(*args, model=model) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dereverb: error: ") and "Traceback" not in err[0]
    assert hashes(tmp_path) == before  # no output, no scratch file, inputs untouched


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_input(tree, tmp_path, model_file, capsys):
    (tree / "a.wav").chmod(0)
    assert enhance(tree / "a.wav", "-o", tmp_path / "out", model=model_file) == 2
    assert "permission denied" in capsys.readouterr().err


def test_awkward_but_valid_inputs_give_correct_outputs(tmp_path, model_file):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    cases = {  # name: (samples (S,) or (S, C), rate, subtype)
        "one_sample.wav": (np.array([0.5]), 16000, "PCM_16"),
        "one_sample_44k.wav": (np.array([0.5]), 44100, "PCM_16"),
        "zeros.wav": (np.zeros(8000), 16000, "PCM_16"),
        "dc.wav": (0.3 + 0.05 * rng.standard_normal(8000), 16000, "PCM_16"),
        "clipped.wav": (np.clip(3 * rng.standard_normal(8000), -1, 1), 16000, "PCM_16"),
        "8k.wav": (0.1 * rng.standard_normal(4000), 8000, "PCM_16"),
        "192k.wav": (0.1 * rng.standard_normal(96000), 192000, "PCM_24"),
        "16ch.wav": (0.1 * rng.standard_normal((8000, 16)), 16000, "PCM_16"),
        "double.wav": (0.1 * rng.standard_normal(8000), 16000, "DOUBLE"),
        "vorbis.ogg": (0.1 * rng.standard_normal(8000), 16000, "VORBIS"),
    }
    for name, (x, rate, subtype) in cases.items():
        sf.write(src / name, x, rate, subtype=subtype)
    (src / "loop").symlink_to("..")  # a symlink loop inside the input folder
    before = hashes(src)
    assert enhance(src, "-o", tmp_path / "out", model=model_file) == 0
    for name, (x, rate, subtype) in cases.items():
        y, r = sf.read(tmp_path / "out" / name, always_2d=True)
        info = sf.info(tmp_path / "out" / name)
        assert (r, info.subtype, y.shape) == (rate, subtype, x.reshape(len(x), -1).shape), name
        assert np.isfinite(y).all() and np.abs(y).max() < 1.0, name
    assert not sf.read(tmp_path / "out" / "zeros.wav")[0].any()
    assert hashes(src) == before
