"""Crash safety (issue 8): ``train``, ``prepare`` and ``enhance`` killed with SIGKILL at seeded
random moments, some of them while a checkpoint, shard or output is being written.

After every kill, whatever sits on disk under a final name is whole: each model file loads and
passes its checksum, the resume state loads, each shard decodes (and matches ``store.json``'s
sha256 when listed), each enhanced file has its input's length.  The rerun finishes the job and
leaves no temporary file; the store equals one made without interruption.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dereverb import audio, checkpoint, store
from dereverb.config import StftConfig
from dereverb.data import DataConfig
from hostile_cases import REPO, RIR, SPEECH, speechlike, temp_files, tiny_model_file

pytestmark = pytest.mark.slow
TIMEOUT = 600  # s, generous for a busy 2-core CI machine; never an assertion on speed


def spawn(args: list, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "dereverb", *map(str, args)], cwd=REPO, env=env,
                                stdout=f, stderr=subprocess.STDOUT)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` s after ``ready()`` first holds; False if it finished first."""
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the command never reached the moment to kill it")
        time.sleep(0.002)
    time.sleep(delay)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(TIMEOUT)
    return killed


def kill_at(moments, args: list, log: Path, check) -> int:
    """Start ``args`` once per ``(ready, delay)`` moment and SIGKILL it then; ``check`` the folder
    after each kill.  Returns how many runs were killed (a run may finish before its moment)."""
    kills = 0
    for ready, delay in moments:
        kills += kill_when(spawn(args, log), ready, float(delay))
        check()
    return kills


def finish(args: list, log: Path) -> None:
    proc = spawn(args, log)
    assert proc.wait(TIMEOUT) == 0, log.read_text()[-3000:]


def has_temp(folder: Path) -> Callable[[], bool]:
    return lambda: folder.is_dir() and any(n.endswith(".tmp") for n in os.listdir(folder))


def exists(path: Path) -> Callable[[], bool]:
    return path.exists


# --- train -----------------------------------------------------------------------------------------


def check_run(run: Path) -> None:
    """Every model file in ``run`` loads with a valid checksum, the resume state loads and pairs
    with a step a model file was saved at."""
    for f in run.glob("*.safetensors"):
        checkpoint.load(f)
    if (run / "state.pt").exists():
        step = checkpoint.load_state(run / "state.pt")["step"]
        assert step % 2 == 0 and step <= checkpoint.read_meta(run / "last.safetensors")["step"]


def test_train_killed_at_random_moments_resumes_to_the_end(tmp_path):
    rng = np.random.default_rng(80)
    run, log = tmp_path / "run", tmp_path / "train.log"
    args = ["train", "--config", REPO / "recipes" / "smoke.yaml", "--run-dir", run]
    for s in (f"data.speech=[{SPEECH}]", f"data.rirs=[{RIR}]", "train.steps=10", "train.checkpoint_every=2",
              "train.valid_every=4", "train.valid_count=1", "train.samples=0", "train.norm_batches=1",
              "train.pesq=false", "train.progress=false"):
        args += ["--set", s]
    # the first kill lands while a checkpoint is being written (its temp file exists)
    moments = [(has_temp(run), 0.0), (exists(run / "state.pt"), rng.uniform(0.0, 0.4)),
               (exists(run / "train.log"), rng.uniform(0.0, 0.4))]
    kills = kill_at(moments, args, log, lambda: check_run(run))
    assert kills >= 2, log.read_text()[-3000:]
    finish(args, log)
    check_run(run)
    assert checkpoint.read_meta(run / "last.safetensors")["step"] == 10
    assert checkpoint.load_state(run / "state.pt")["step"] == 10
    assert temp_files(run) == []


# --- prepare ---------------------------------------------------------------------------------------


def check_store(out: Path) -> None:
    """Every shard file decodes whole; those listed in store.json match their sha256."""
    listed = {}
    if (out / store.META).exists():
        listed = {e["file"]: e["sha256"] for e in store.read_meta(out)["shards"] if e}
    for f in out.glob("shard-*.dvs"):
        store.Shard(f).check()
        if f.name in listed:
            assert audio.sha256_file(f) == listed[f.name], f


def test_prepare_killed_at_random_moments_resumes_to_the_same_store(tmp_path):
    rng = np.random.default_rng(81)
    out, log = tmp_path / "store", tmp_path / "prepare.log"
    args = ["prepare", "--speech", SPEECH, "--rirs", RIR, "--copies", "6", "--items-per-shard", "1", "-o", out]
    moments = [(has_temp(out), 0.0), (exists(out / "shard-00002.dvs"), rng.uniform(0.0, 0.3)),
               (exists(out / store.META), rng.uniform(0.0, 0.3))]
    kills = kill_at(moments, args, log, lambda: check_store(out))
    assert kills >= 2, log.read_text()[-3000:]
    finish(args, log)
    check_store(out)
    assert temp_files(out) == []
    reference = tmp_path / "reference"
    cfg = store.StoreConfig(data=DataConfig(speech=(str(SPEECH),), rirs=(str(RIR),)), copies=6, items_per_shard=1)
    store.prepare(cfg, StftConfig(), reference)
    mine, theirs = store.read_meta(out), store.read_meta(reference)
    assert [e["sha256"] for e in mine["shards"]] == [e["sha256"] for e in theirs["shards"]]
    assert len(store.FeatureStore(out, verify=True)) == 6


# --- enhance ---------------------------------------------------------------------------------------


def test_enhance_killed_mid_folder_rerun_finishes_the_rest(tmp_path):
    rng = np.random.default_rng(82)
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "enhance.log"
    src.mkdir()
    for i in range(12):  # 30 s each: long enough that a kill lands mid-folder
        sf.write(src / f"f{i}.wav", speechlike(480000, 16000, rng), 16000, subtype="PCM_16")
    model = tiny_model_file(tmp_path / "tiny.safetensors")
    args = ["enhance", src, "-o", out, "--model", model]

    def done() -> list[Path]:
        return sorted(out.glob("f*.wav")) if out.exists() else []

    kills = 0
    for ready in (lambda: len(done()) >= 2, has_temp(out)):
        kills += kill_when(spawn(args, log), ready, float(rng.uniform(0.0, 0.1)))
        for f in done():  # a file under its final name is whole
            assert sf.info(f).frames == 480000 and sf.read(f)[0].shape == (480000,), f
    assert kills >= 1 and len(done()) < 12, log.read_text()[-3000:]
    finish(args, log)
    assert sorted(f.name for f in done()) == sorted(f"f{i}.wav" for i in range(12))
    assert all(sf.info(f).frames == 480000 for f in done())
    assert temp_files(out) == []
