"""The CLI as a user meets it: subprocess runs, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from dereverb.cli import build_parser, command_parsers, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dereverb", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_subcommands():
    r = run_cli("--help")
    assert r.returncode == 0 and "info" in r.stdout


@pytest.mark.slow
def test_info_prints_header(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros((4410, 3)), 44100, subtype="PCM_24")
    r = run_cli("info", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "44100 Hz\t3 ch\t0.10 s\tWAV/PCM_24" in r.stdout


@pytest.mark.slow
def test_bad_input_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "fake.wav"
    bad.write_text("not audio")
    for target in (bad, tmp_path / "missing.wav"):
        r = run_cli("info", str(target))
        assert r.returncode == 2
        assert "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(target) in lines[0]


@pytest.mark.slow
def test_debug_shows_traceback(tmp_path):
    r = run_cli("info", "--debug", str(tmp_path / "missing.wav"))
    assert r.returncode == 2 and "Traceback" in r.stderr


# --- flags and help (in process: the parser alone) ----------------------------------------------


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, and each action's parser of a command with actions (rirs)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a.choices, dict))
    return {q.prog: q for p in sub.choices.values() for q in command_parsers(p)}


def test_every_option_has_a_help_line_and_every_command_a_description():
    for prog, parser in commands().items():
        assert parser.description, prog
        for action in parser._actions:
            if isinstance(action.choices, dict):  # a command's list of actions
                continue
            assert action.help and action.help != argparse.SUPPRESS, (prog, action.option_strings or action.dest)


def test_o_is_output_in_every_command_and_out_a_hidden_alias():
    writers = {prog: p for prog, p in commands().items() if "-o" in p._option_string_actions}
    assert {"dereverb enhance", "dereverb evaluate", "dereverb make-testset", "dereverb compare",
            "dereverb export", "dereverb prepare", "dereverb rirs simulate", "dereverb demo"} <= set(writers)
    for prog, p in writers.items():
        action = p._option_string_actions["-o"]
        assert action.option_strings == ["-o", "--output"] and action.dest == "output", prog
        assert p._option_string_actions["--out"] is action, prog  # the old spelling still parses
        assert "--out " not in p.format_help() and "--out," not in p.format_help(), prog
    args = build_parser().parse_args(["evaluate", "--reverb", "r", "--out", "REPORT"])
    assert args.output == "REPORT"
    args = build_parser().parse_args(["make-testset", "--speech", "s", "--rirs", "simulate", "--out", "SET"])
    assert args.output == "SET"


def test_missing_output_names_the_shown_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--reverb", "r"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "required: -o/--output" in err and "--out" not in err.replace("--output", "")


def test_rirs_actions_take_debug_and_describe_themselves(tmp_path, capsys):
    args = build_parser().parse_args(["rirs", "analyze", "x.wav", "--debug"])
    assert args.debug is True
    code = main(["rirs", "analyze", str(tmp_path / "missing.wav"), "--debug"])
    assert code == 2 and "Traceback" in capsys.readouterr().err
    for action in ("simulate", "analyze"):
        assert commands()[f"dereverb rirs {action}"].description


def test_unknown_flag_prints_the_commands_usage(capsys):
    for argv, usage in ((["enhance", "a.wav", "-o", "out", "--bogus"], "usage: dereverb enhance "),
                        (["rirs", "simulate", "--count", "2", "-o", "x", "--bogus"], "usage: dereverb rirs simulate ")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(usage) and err.strip().endswith("unrecognized arguments: --bogus")


def test_enhance_phase_says_which_models_can_use_model_phase():
    text = " ".join(commands()["dereverb enhance"].format_help().split())
    assert "model only for models that predict phase (model.output complex)" in text
