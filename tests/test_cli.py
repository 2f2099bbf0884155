"""The CLI as a user meets it: subprocess runs, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf


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
