"""Hostile input for ``dereverb enhance`` and ``dereverb evaluate``, and hostile model files (issue 8).

Each case ends in a correct output, or in one ``dereverb: error:`` line with exit code 2 and no
traceback; never a partial output file (no ``*.tmp`` left, no output for the failed file) and
never a changed input (sha256 of every input before and after).  prepare/train:
test_hostile_data.py; permissions, full disks, unwritable folders: test_hostile_disk.py.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from dereverb import checkpoint
from hostile_cases import (INVALID, RIR, VALID, assert_one_line_error, cli, copy_files, hashes, make_library,
                           temp_files, tiny_model_file)


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> Path:
    return make_library(tmp_path_factory.mktemp("hostile") / "lib")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.safetensors")


M4A_SKIPPED = ("dereverb: warning: {}: skipped: dereverb cannot decode .m4a audio; "
               "convert it to WAV or FLAC (e.g. with ffmpeg)")


def skipped(err: str) -> list[str]:
    """The warning lines that name a file left out of a folder."""
    return [line for line in err.splitlines() if line.startswith("dereverb: warning: ") and ": skipped: " in line]


def outputs(root: Path) -> list[str]:
    """The files under ``root`` but enhance's manifest (its record of the run: tests/test_corpus.py)."""
    files = root.rglob("*") if root.exists() else []
    return sorted(str(p.relative_to(root)) for p in files if p.is_file() and not p.name.startswith("dereverb-manifest"))


# --- enhance: files --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VALID))
def test_enhance_awkward_valid_file_gives_a_correct_output(name, lib, model_file, tmp_path, capsys):
    src = copy_files(lib, [name], tmp_path / "in") / name
    before = hashes(tmp_path / "in")
    code, _, err = cli(capsys, "enhance", src, "-o", tmp_path / "out", "--model", model_file)
    assert code == 0, err
    frames, rate, channels, subtype = VALID[name]
    info = sf.info(tmp_path / "out" / name)
    assert (info.frames, info.samplerate, info.channels, info.subtype) == (frames, rate, channels, subtype)
    y = sf.read(tmp_path / "out" / name, always_2d=True)[0]
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    if name == "zeros.wav":
        assert not y.any()  # silence in, silence out
    assert hashes(tmp_path / "in") == before and temp_files(tmp_path) == []


@pytest.mark.parametrize("name", sorted(INVALID))
def test_enhance_broken_file_is_one_line_and_writes_nothing(name, lib, model_file, tmp_path, capsys):
    src = copy_files(lib, [name], tmp_path / "in") / name
    before = hashes(tmp_path / "in")
    code, _, err = cli(capsys, "enhance", src, "-o", tmp_path / "out" / "sub", "--model", model_file)
    assert_one_line_error(code, err, str(src), INVALID[name])
    assert not (tmp_path / "out").exists() and hashes(tmp_path / "in") == before  # no folder left either


def test_enhance_folder_with_a_nan_file_keeps_finished_outputs_only(lib, model_file, tmp_path, capsys):
    src = copy_files(lib, ["good.wav", "nan.wav"], tmp_path / "in")
    code, _, err = cli(capsys, "enhance", src, "-o", tmp_path / "out", "--model", model_file)
    assert_one_line_error(code, err, "nan.wav", "NaN")
    assert outputs(tmp_path / "out") == ["good.wav"] and temp_files(tmp_path) == []
    assert sf.info(tmp_path / "out" / "good.wav").frames == 16000


def test_enhance_output_format_follows_the_output_name(lib, model_file, tmp_path, capsys):
    """AIFF and a WAV named .mp3 come out as AIFF and MP3; a name no format goes with (a WAV
    named .m4a) is an error unless ``-o NAME.wav`` converts; a folder holding only that file
    has no audio, and says which file it skipped."""
    src = copy_files(lib, ["aiff.aiff", "wav_named.mp3", "wav_named.m4a"], tmp_path / "in")
    for name, fmt in (("aiff.aiff", "AIFF"), ("wav_named.mp3", "MP3")):
        if fmt not in sf.available_formats():
            continue
        code, _, err = cli(capsys, "enhance", src / name, "-o", tmp_path / "out", "--model", model_file)
        assert code == 0 and (sf.info(tmp_path / "out" / name).format, sf.info(tmp_path / "out" / name).frames) \
            == (fmt, 16000), err
    code, _, err = cli(capsys, "enhance", src / "wav_named.m4a", "-o", tmp_path / "out", "--model", model_file)
    assert_one_line_error(code, err, "unsupported output format", "'.m4a'", ".wav, .flac")
    code, _, err = cli(capsys, "enhance", src / "wav_named.m4a", "-o", tmp_path / "m4a.wav", "--model", model_file)
    assert code == 0 and sf.info(tmp_path / "m4a.wav").frames == 16000, err
    only = copy_files(lib, ["wav_named.m4a"], tmp_path / "only")
    code, _, err = cli(capsys, "enhance", only, "-o", tmp_path / "out2", "--model", model_file)
    assert_one_line_error(code, err, "no audio files")
    assert skipped(err) == [M4A_SKIPPED.format(only / "wav_named.m4a")]
    assert not (tmp_path / "out2").exists()


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="this libsndfile has no MP3")
@pytest.mark.parametrize("suffix, subtype", [(".wav", "PCM_16"), (".flac", "PCM_16"), (".ogg", "VORBIS"),
                                             (".mp3", "MPEG_LAYER_III"), (".aiff", "PCM_16")])
def test_enhance_mp3_converts_to_every_output_format(suffix, subtype, lib, model_file, tmp_path, capsys):
    """An MP3 input written as WAV or FLAC gets 16-bit PCM (the MP3 codec does not fit there, and
    more bits would hold only its noise); as Ogg, Vorbis; as MP3, MP3 again."""
    src = copy_files(lib, ["talk.mp3"], tmp_path / "in") / "talk.mp3"
    code, _, err = cli(capsys, "enhance", src, "-o", tmp_path / f"talk{suffix}", "--model", model_file)
    assert code == 0, err
    info = sf.info(tmp_path / f"talk{suffix}")
    assert (info.subtype, info.channels, info.samplerate, info.frames) == (subtype, 2, 16000, sf.info(src).frames)
    assert temp_files(tmp_path) == []


def test_enhance_folder_takes_every_format_soundfile_reads_and_names_what_it_skips(lib, model_file, tmp_path,
                                                                                  capsys):
    names = ["good.wav", "aiff.aiff", "wav_named.mp3", "wavex.wav"] + (["talk.mp3"] if (lib / "talk.mp3").exists()
                                                                      else [])
    src = copy_files(lib, names + ["wav_named.m4a"], tmp_path / "in")
    (src / "notes.txt").write_text("not audio, and not said to be")
    code, out, err = cli(capsys, "enhance", src, "-o", tmp_path / "out", "--model", model_file)
    assert code == 0, err
    assert outputs(tmp_path / "out") == sorted(names) and f"{len(names)} files" in out
    assert skipped(err) == [M4A_SKIPPED.format(src / "wav_named.m4a")]
    assert sf.info(tmp_path / "out" / "wavex.wav").format == "WAVEX"  # the container is kept
    assert sf.info(tmp_path / "out" / "wavex.wav").subtype == "PCM_24"


def test_enhance_output_format_that_cannot_hold_the_input_is_refused_before_any_work(lib, model_file, tmp_path,
                                                                                      capsys):
    src = copy_files(lib, ["192k.wav"], tmp_path / "in") / "192k.wav"
    target = tmp_path / "out" / "x.opus"  # Opus: 8 to 48 kHz only
    code, _, err = cli(capsys, "enhance", src, "-o", target, "--model", model_file)
    assert_one_line_error(code, err, str(target), "cannot hold 1-channel audio at 192000 Hz", "Opus only supports")
    assert not (tmp_path / "out").exists()
    code, _, err = cli(capsys, "enhance", src, "-o", target, "--output-rate", "model", "--model", model_file)
    assert code == 0 and (sf.info(target).subtype, sf.info(target).samplerate) == ("OPUS", 16000), err


def test_enhance_truncated_file_warns_and_uses_what_is_there(lib, model_file, tmp_path, capsys):
    src = copy_files(lib, ["truncated_data.wav"], tmp_path / "in") / "truncated_data.wav"
    code, _, err = cli(capsys, "enhance", src, "-o", tmp_path / "out", "--model", model_file)
    assert code == 0, err
    assert (f"dereverb: warning: {src}: truncated: its header promises 1.00 s, the file holds 0.50 s; "
            "only that part is used") in err.splitlines()
    assert sf.info(tmp_path / "out" / "truncated_data.wav").frames == 8000


# --- enhance: paths --------------------------------------------------------------------------------


def test_enhance_wrong_kinds_of_path(lib, model_file, tmp_path, capsys):
    src = copy_files(lib, ["good.wav"], tmp_path / "in")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = {  # args: what the error says
        (tmp_path / "missing.wav", "-o", tmp_path / "out"): "no such file",
        (src, "-o", tmp_path / "afile"): "is a file; -o needs an output folder",
        (src / "good.wav", "-o", tmp_path / "afile" / "sub"): "cannot create the output folder",
        (src, "-o", tmp_path / "out", "--model", tmp_path / "empty"): "run folder holds no checkpoint",
        (src, "-o", tmp_path / "out", "--model", src / "good.wav"): "not a readable dereverb checkpoint",
    }
    before = hashes(tmp_path)
    for args, message in cases.items():
        model = [] if "--model" in args else ["--model", model_file]
        code, _, err = cli(capsys, "enhance", *args, *model)
        assert_one_line_error(code, err, message)
    assert hashes(tmp_path) == before and not (tmp_path / "out").exists()
    (tmp_path / "out.wav").mkdir()  # a folder where a file name is expected: the output goes inside
    code, _, err = cli(capsys, "enhance", src / "good.wav", "-o", tmp_path / "out.wav", "--model", model_file)
    assert code == 0 and sf.info(tmp_path / "out.wav" / "good.wav").frames == 16000, err


def test_enhance_symlink_loop_and_dangling_link(lib, model_file, tmp_path, capsys):
    src = copy_files(lib, ["good.wav", "8k.wav"], tmp_path / "in")
    (src / "sub").mkdir()
    (src / "loop").symlink_to(".")
    (src / "sub" / "up").symlink_to("..")
    code, _, err = cli(capsys, "enhance", src, "-o", tmp_path / "out", "--model", model_file)
    assert code == 0, err
    assert outputs(tmp_path / "out") == ["8k.wav", "good.wav"]  # each file once, no endless walk
    (src / "dangling.wav").symlink_to("nowhere.wav")
    code, _, err = cli(capsys, "enhance", src, "-o", tmp_path / "out2", "--model", model_file)
    assert_one_line_error(code, err, "dangling.wav", "no such file")
    assert outputs(tmp_path / "out2") == []


def test_enhance_input_and_output_the_same_file(lib, model_file, tmp_path, capsys):
    src = copy_files(lib, ["good.wav"], tmp_path / "in")
    (tmp_path / "link.wav").symlink_to(src / "good.wav")
    before = hashes(tmp_path)
    for args in ([src / "good.wav", "-o", src / "good.wav"], [src / "good.wav", "-o", src / "good.wav", "--overwrite"],
                 [src, "-o", src, "--overwrite"], [src / "good.wav", "-o", tmp_path / "link.wav", "--overwrite"]):
        code, _, err = cli(capsys, "enhance", *args, "--model", model_file)
        assert_one_line_error(code, err, "is an input file")
    assert hashes(tmp_path) == before and temp_files(tmp_path) == []


# --- evaluate --------------------------------------------------------------------------------------

CHEAP = ["--metrics", "si_sdr,cd,fwsegsnr,t60_est", "--baselines", "unprocessed,wpe,oracle-magnitude",
         "--wpe-taps", "4", "--wpe-iterations", "1", "--workers", "1", "--examples", "1"]


@pytest.mark.slow
def test_evaluate_awkward_valid_files(lib, model_file, tmp_path, capsys):
    """Every awkward file is scored (one channel, at 16 kHz) or noted: one sample is too short,
    silence has undefined metrics; the model's outputs keep each input's length."""
    names = sorted(VALID)
    reverb, clean = copy_files(lib, names, tmp_path / "reverb"), copy_files(lib, names, tmp_path / "clean")
    before = hashes(tmp_path)
    code, out, err = cli(capsys, "evaluate", "--reverb", reverb, "--clean", clean, "--model", model_file,
                         *CHEAP, "-o", tmp_path / "out")
    assert code == 0, err
    assert hashes(tmp_path / "reverb") | hashes(tmp_path / "clean") == before
    notes = (tmp_path / "out" / "notes.txt").read_text()
    assert "one_sample.wav: 1 samples at 16000 Hz, too short to score" in notes
    assert "zeros [unprocessed]: si_sdr" in notes and "16 channels, scored on the first" in notes
    with open(tmp_path / "out" / "per_file.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scored = {Path(n).stem for n in names} - {"one_sample"}
    assert {r["file"] for r in rows} == scored
    assert {r["system"] for r in rows} == {"unprocessed", "wpe", "oracle-magnitude", "model:tiny"}
    for r in rows:  # a value, or an empty cell (NaN) explained in the notes
        for m in ("si_sdr", "cd", "fwsegsnr", "t60_est"):
            assert r[m] != "" or f"{r['file']} [{r['system']}]: " in notes, (r, m)
        if r["system"] == "unprocessed" and r["file"] != "zeros":  # clean == reverb here
            assert (float(r["si_sdr"]), float(r["cd"])) == (np.inf, 0.0), r
    for name in names:
        enhanced = tmp_path / "out" / "enhanced" / "model_tiny" / Path(name).with_suffix(".wav")
        assert sf.info(enhanced).frames == VALID[name][0], name
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("name", sorted(INVALID))
def test_evaluate_broken_file_is_one_line(name, lib, tmp_path, capsys):
    reverb = copy_files(lib, ["good.wav", name], tmp_path / "reverb")
    before = hashes(reverb)
    code, _, err = cli(capsys, "evaluate", "--reverb", reverb, *CHEAP, "-o", tmp_path / "out")
    assert_one_line_error(code, err, name, INVALID[name])
    assert hashes(reverb) == before and temp_files(tmp_path) == []
    assert not (tmp_path / "out").exists()  # a failed run leaves nothing it created


def test_evaluate_wrong_kinds_of_path(lib, model_file, tmp_path, capsys):
    reverb = copy_files(lib, ["good.wav"], tmp_path / "reverb")
    only_m4a = copy_files(lib, ["wav_named.m4a"], tmp_path / "m4a")
    (tmp_path / "empty").mkdir()
    cases = {
        ("--reverb", tmp_path / "missing", "-o", tmp_path / "out"): "not a folder of audio files",
        ("--reverb", reverb / "good.wav", "-o", tmp_path / "out"): "not a folder of audio files",
        ("--reverb", reverb, "--clean", reverb / "good.wav", "-o", tmp_path / "out"): "not a folder of audio files",
        ("--reverb", reverb, "-o", reverb / "good.wav"): "File exists",
        ("--reverb", reverb, "-o", reverb / "good.wav" / "sub"): "Not a directory",
        ("--reverb", reverb, "--model", tmp_path / "empty", "-o", tmp_path / "out"): "holds no checkpoint",
        ("--reverb", only_m4a, "-o", tmp_path / "out"): "no audio files",
    }
    before = hashes(tmp_path)
    for args, message in cases.items():
        code, _, err = cli(capsys, "evaluate", *args, *CHEAP)
        assert_one_line_error(code, err, message)
    assert hashes(tmp_path) == before


def test_evaluate_and_make_testset_read_every_format_soundfile_reads(lib, tmp_path, capsys):
    """MP3 (here a WAV named .mp3) and AIFF are scored and used as speech; an .m4a is named as
    skipped; a make-testset that fails leaves no folder behind."""
    names = ["good.wav", "aiff.aiff", "wav_named.mp3"]
    reverb = copy_files(lib, names + ["wav_named.m4a"], tmp_path / "reverb")
    code, _, err = cli(capsys, "evaluate", "--reverb", reverb, *CHEAP, "-o", tmp_path / "out")
    assert code == 0, err
    with open(tmp_path / "out" / "per_file.csv", newline="") as f:
        assert {r["file"] for r in csv.DictReader(f)} == {"good", "aiff", "wav_named"}
    assert skipped(err) == [M4A_SKIPPED.format(reverb / "wav_named.m4a")]
    code, _, err = cli(capsys, "make-testset", "--speech", reverb, "--rirs", RIR, "-o", tmp_path / "set")
    assert code == 0, err
    with open(tmp_path / "set" / "conditions.csv", newline="") as f:
        assert sorted(Path(r["speech"]).name for r in csv.DictReader(f)) == sorted(names)
    assert skipped(err) == [M4A_SKIPPED.format(reverb / "wav_named.m4a")]
    copy_files(lib, ["nan.wav"], reverb)
    code, _, err = cli(capsys, "make-testset", "--speech", reverb, "--rirs", RIR, "-o", tmp_path / "set2" / "x")
    assert_one_line_error(code, err, "nan.wav", "NaN")
    assert not (tmp_path / "set2").exists()


@pytest.mark.slow
def test_evaluate_symlink_loop_and_output_inside_the_input(lib, tmp_path, capsys):
    """``-o`` equal to ``--reverb``: evaluate's own audio (assets/) never becomes an input, so a
    rerun scores the same files; a symlink loop is walked once."""
    reverb = copy_files(lib, ["good.wav", "8k.wav"], tmp_path / "reverb")
    (reverb / "loop").symlink_to(".")
    before = hashes(reverb)
    for _ in range(2):
        code, _, err = cli(capsys, "evaluate", "--reverb", reverb, *CHEAP, "-o", reverb)
        assert code == 0, err
        with open(reverb / "per_file.csv", newline="") as f:
            assert sorted({r["file"] for r in csv.DictReader(f)}) == ["8k", "good"]
    assert {k: v for k, v in hashes(reverb).items() if k in before} == before
    (reverb / "dangling.wav").symlink_to("nowhere.wav")
    code, _, err = cli(capsys, "evaluate", "--reverb", reverb, *CHEAP, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "dangling.wav", "no such file")


# --- model files -----------------------------------------------------------------------------------


class _Payload:
    """Unpickling this would create the folder ``marker``: proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _bad_models(model_file: Path, root: Path) -> dict[str, tuple[Path, str]]:
    raw = model_file.read_bytes()
    header = 8 + int.from_bytes(raw[:8], "little")
    weight_flip, header_flip = bytearray(raw), bytearray(raw)
    weight_flip[header + (len(raw) - header) // 2] ^= 0x55
    header_flip[header // 2] ^= 0x7F
    future = root / "future.safetensors"
    save_file({"w": torch.zeros(2)}, str(future),
              metadata={checkpoint.META_KEY: json.dumps({"format_version": checkpoint.FORMAT_VERSION + 1})})
    files = {"truncated": raw[: len(raw) // 3], "weights_flipped": bytes(weight_flip),
             "header_flipped": bytes(header_flip), "empty": b"",
             "pickle": pickle.dumps({"model": _Payload(root / "PWNED")})}
    for name, data in files.items():
        (root / f"{name}.safetensors").write_bytes(data)
    (root / "garbage.onnx").write_bytes(np.random.default_rng(0).bytes(300))
    return {
        "truncated": (root / "truncated.safetensors", "truncated or corrupt"),
        "weights_flipped": (root / "weights_flipped.safetensors", "checksum mismatch"),
        "header_flipped": (root / "header_flipped.safetensors", "checkpoint"),
        "empty": (root / "empty.safetensors", "truncated or corrupt"),
        "future_version": (future, "upgrade dereverb"),
        "pickle_renamed": (root / "pickle.safetensors", "not a readable dereverb checkpoint"),
        "garbage_onnx": (root / "garbage.onnx", "not a readable ONNX model"),
    }


@pytest.mark.parametrize("case", ["truncated", "weights_flipped", "header_flipped", "empty", "future_version",
                                  "pickle_renamed", "garbage_onnx"])
def test_bad_model_file_is_one_line_naming_it(case, lib, model_file, tmp_path, capsys):
    root = tmp_path / "models"
    root.mkdir()
    path, message = _bad_models(model_file, root)[case]
    src = copy_files(lib, ["good.wav"], tmp_path / "in")
    code, _, err = cli(capsys, "enhance", src, "-o", tmp_path / "out", "--model", path)
    assert_one_line_error(code, err, str(path), message)
    assert not (root / "PWNED").exists()  # safetensors never unpickles
    assert outputs(tmp_path / "out") == []


def test_pickled_resume_state_is_refused_without_running_it(tmp_path):
    state = tmp_path / "state.pt"
    torch.save({"step": 3, "evil": _Payload(tmp_path / "PWNED")}, state)
    with pytest.raises(Exception, match="resume state is unreadable") as err:
        checkpoint.load_state(state)
    assert str(state) in str(err.value) and not (tmp_path / "PWNED").exists()
