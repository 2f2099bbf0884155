"""Corpus runs (``dereverb enhance`` over many files): shards, launcher environments, --keep-going,
the manifest and resuming after a SIGKILL, worker processes and batched network calls, progress.

Outputs are compared by their samples (float WAVs: libsndfile stamps the time into their PEAK
chunk, so their bytes differ run to run)."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dereverb import checkpoint
from dereverb.cli import main
from dereverb.corpus import MANIFEST, CorpusConfig, Manifest, Progress, Shard, enhance_corpus, shard_from_env
from dereverb.enhance import Dereverberator
from dereverb.errors import DereverbError
from dereverb.workers import Engine, FileWarnings, NetBatcher, Task, serve
from tiny import one_thread, tiny_model  # noqa: F401  (one_thread: autouse fixture)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    checkpoint.save(path, tiny_model(seed=3))
    return path


def write_corpus(root: Path, speech: np.ndarray, seconds: list[float], rate: int = 16000) -> list[Path]:
    """Float WAVs of real speech, ``seconds`` long each, in ``root`` and ``root/sub``; different
    pieces of the clip so no two files are the same."""
    paths = []
    for i, s in enumerate(seconds):
        path = root / ("sub" if i % 2 else "") / f"f{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        x = np.roll(np.tile(speech, 4), -2000 * i)[: int(s * rate)]
        sf.write(path, 0.5 * x, rate, subtype="FLOAT")
        paths.append(path)
    return paths


@pytest.fixture
def corpus(tmp_path, speech) -> Path:
    write_corpus(tmp_path / "in", speech[0], [1.0, 0.4, 1.7, 0.7, 1.0, 1.2, 0.3])
    return tmp_path / "in"


def enhance(*args, model) -> int:
    return main(["enhance", *map(str, args), "--model", str(model)])


def samples(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): sf.read(p, dtype="float32")[0] for p in sorted(root.rglob("*.wav"))}


def rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- shards ----------------------------------------------------------------------------------------


def test_shards_partition_any_list():
    items = list(range(23))
    for n in (1, 2, 5, 30):
        parts = [Shard(k, n).pick(items) for k in range(n)]
        assert sorted(x for p in parts for x in p) == items  # union, each once: disjoint
        assert parts == [Shard(k, n).pick(items) for k in range(n)]  # deterministic
    assert Shard.parse("2/5") == Shard(2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(DereverbError):
            Shard.parse(bad)


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "4",
      "SLURM_ARRAY_TASK_MAX": "7"}, (1, 4)),  # --array=4-7
    ({"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
      "SLURM_ARRAY_TASK_MAX": "6", "SLURM_ARRAY_TASK_STEP": "2"}, (3, 4)),  # --array=0-6:2
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_MAX": "8"}, DereverbError),  # --array=1,8: not a range
    ({"RANK": "2", "WORLD_SIZE": "3", "LOCAL_RANK": "0"}, (2, 3)),  # torchrun
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2", "RANK": "1", "WORLD_SIZE": "2"}, (0, 2)),
    ({"JOB_COMPLETION_INDEX": "3", "DEREVERB_SHARDS": "8"}, (3, 8)),  # Kubernetes indexed job
    ({"JOB_COMPLETION_INDEX": "3"}, DereverbError),  # the count is not in Kubernetes' environment
    ({"RANK": "3", "WORLD_SIZE": "3"}, DereverbError),
])
def test_shard_from_launcher_environment(env, expected):
    if expected is DereverbError:
        with pytest.raises(DereverbError):
            shard_from_env(env)
    else:
        shard = shard_from_env(env)
        assert (None if shard is None else (shard.index, shard.count)) == expected


def test_shards_write_disjoint_outputs_whose_union_is_one_job_bit_for_bit(corpus, tmp_path, model_file, capsys):
    assert enhance(corpus, "-o", tmp_path / "one", model=model_file) == 0
    one = samples(tmp_path / "one")
    out = tmp_path / "sharded"
    seen: set[str] = set()
    for k in range(3):
        assert enhance(corpus, "-o", out, "--shard", f"{k}/3", model=model_file) == 0
        mine = {str(Path(r["output"]).relative_to(out)) for r in records(out / f"{MANIFEST}.shard-{k}-of-3.jsonl")}
        assert mine == set(samples(out)) - seen and mine  # this shard wrote these, and only these
        seen |= mine
    got = samples(out)
    assert got.keys() == one.keys() and all(np.array_equal(got[f], one[f]) for f in one)
    capsys.readouterr()
    assert enhance(corpus, "-o", out, model=model_file) == 0  # an unsharded rerun reads every shard's manifest
    assert "skipped 7 existing" in capsys.readouterr().out


def test_shard_comes_from_the_environment(corpus, tmp_path, model_file, monkeypatch, capsys):
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("DEREVERB_SHARDS", "2")
    out = tmp_path / "out"
    assert enhance(corpus, "-o", out, model=model_file) == 0
    assert "shard 1/2 (from JOB_COMPLETION_INDEX)" in capsys.readouterr().err
    names = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*.wav"))
    assert sorted(samples(out)) == Shard(1, 2).pick(names)  # sorted by output path, every 2nd from the 2nd
    assert (out / f"{MANIFEST}.shard-1-of-2.jsonl").is_file()


# --- failures --------------------------------------------------------------------------------------


@pytest.fixture
def with_bad_files(tmp_path, speech) -> Path:
    """long.wav 2 s, nan.wav 1 s (a NaN inside), text.wav (not audio), short.wav 0.5 s: longest
    first, the NaN comes in the middle."""
    root = tmp_path / "bad"
    root.mkdir()
    sf.write(root / "long.wav", speech[0][:32000], 16000, subtype="FLOAT")
    nan = speech[0][:16000].copy()
    nan[8000] = np.nan
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(root / "short.wav", speech[0][:8000], 16000, subtype="FLOAT")
    return root


def test_keep_going_records_failures_and_finishes(with_bad_files, tmp_path, model_file, capsys):
    (with_bad_files / "text.wav").write_text("not audio")
    out = tmp_path / "out"
    assert enhance(with_bad_files, "-o", out, "--keep-going", model=model_file) == 3
    assert sorted(samples(out)) == ["long.wav", "short.wav"]
    recs = {Path(r["input"]).name: r for r in records(out / f"{MANIFEST}.jsonl")}
    assert {n: r["status"] for n, r in recs.items()} == {"long.wav": "done", "nan.wav": "failed",
                                                         "short.wav": "done", "text.wav": "failed"}
    assert "NaN" in recs["nan.wav"]["error"] and "not a readable audio file" in recs["text.wav"]["error"]
    assert recs["long.wav"]["error"] is None and recs["long.wav"]["duration"] == 2.0
    captured = capsys.readouterr()
    assert "0.001 h of audio (2.5 s), 2 failed" in captured.out
    assert captured.err.count("dereverb: warning: failed: ") == 2 and "2 file(s) failed" in captured.err
    capsys.readouterr()
    # a rerun retries the failed files only (and they fail again)
    assert enhance(with_bad_files, "-o", out, "--keep-going", model=model_file) == 3
    assert "skipped 2 existing" in capsys.readouterr().out


def test_without_keep_going_the_first_failure_stops_the_run(with_bad_files, tmp_path, model_file, capsys):
    out = tmp_path / "out"
    assert enhance(with_bad_files, "-o", out, model=model_file) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nan.wav: contains NaN" in err[0]
    assert sorted(samples(out)) == ["long.wav"]  # done before the NaN; short.wav never started
    assert [Path(r["input"]).name for r in records(out / f"{MANIFEST}.jsonl")] == ["long.wav"]
    (with_bad_files / "text.wav").write_text("not audio")  # a bad header: found before any work
    assert enhance(with_bad_files, "-o", tmp_path / "out2", model=model_file) == 2
    assert not (tmp_path / "out2").exists()


# --- the manifest ----------------------------------------------------------------------------------


def test_manifest_skips_a_torn_line_and_appends_after_it(tmp_path):
    path = tmp_path / "m.jsonl"
    m = Manifest(path, [path])
    m.append({"output": "a.wav", "status": "done"})
    m.close()
    with open(path, "ab") as f:
        f.write(b'{"output": "b.wav", "sta')  # a crash mid-line
    m = Manifest(path, [path])
    assert [r["output"] for r in m.records()] == ["a.wav"]
    m.append({"output": "c.wav", "status": "done"})
    m.close()
    assert [r["output"] for r in m.records()] == ["a.wav", "c.wav"]
    assert path.read_bytes().endswith(b'"sta\n{"output": "c.wav", "status": "done"}\n')


def test_rerun_with_other_options_is_refused_unless_overwrite(corpus, tmp_path, model_file, capsys):
    out = tmp_path / "out"
    assert enhance(corpus, "-o", out, model=model_file) == 0
    before = samples(out)
    assert enhance(corpus, "-o", out, "--strength", "0.5", model=model_file) == 2
    assert "made with another model or options" in capsys.readouterr().err
    assert enhance(corpus, "-o", out, "--jobs", "1", "--batch-size", "1", model=model_file) == 0  # not options
    assert enhance(corpus, "-o", out, "--strength", "0.5", "--overwrite", model=model_file) == 0
    after = samples(out)
    assert all(not np.array_equal(after[f], before[f]) for f in before)
    latest = {r["output"]: r for r in records(out / f"{MANIFEST}.jsonl")}
    assert len(latest) == 7 and {r["options"]["strength"] for r in latest.values()} == {0.5}
    named = tmp_path / "elsewhere" / "run.jsonl"
    assert enhance(corpus, "-o", tmp_path / "out2", "--manifest", named, model=model_file) == 0
    assert len(records(named)) == 7 and not (tmp_path / "out2" / f"{MANIFEST}.jsonl").exists()


@pytest.mark.slow
def test_sigkill_mid_run_loses_no_record_and_a_rerun_finishes(tmp_path, speech, model_file, capsys):
    root = tmp_path / "in"
    write_corpus(root, speech[0], [1.0] * 30)
    out = tmp_path / "out"
    manifest = out / f"{MANIFEST}.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "dereverb", "enhance", str(root), "-o", str(out),
                             "--model", str(model_file)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (manifest.exists() and manifest.read_bytes().count(b"\n") >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = [r for r in Manifest(manifest, [manifest]).records()]
    existing = set(samples(out))
    assert 3 <= len(done) < 30 and {str(Path(r["output"]).relative_to(out)) for r in done} <= existing
    capsys.readouterr()
    assert main(["enhance", str(root), "-o", str(out), "--model", str(model_file)]) == 0
    text = capsys.readouterr().out
    assert f"skipped {len(existing)} existing" in text and text.splitlines()[-1].startswith(f"{30 - len(existing)} files")
    assert len({r["output"] for r in Manifest(manifest, [manifest]).records()}) >= 30 - len(existing) + len(done)
    assert len(samples(out)) == 30 and not list(out.rglob("*.tmp"))  # the killed file's scratch file is gone


# --- workers and batches -----------------------------------------------------------------------------


@pytest.mark.slow
def test_jobs_and_batches_give_one_jobs_outputs(corpus, tmp_path, model_file, capsys):
    """Worker processes: the same samples as one job (each worker runs fewer threads: measured equal
    here, and thread counts change oneDNN's sums by float rounding at most elsewhere); batched
    network calls within 1e-4 relative RMS."""
    assert enhance(corpus, "-o", tmp_path / "one", model=model_file) == 0
    assert enhance(corpus, "-o", tmp_path / "jobs", "--jobs", "2", model=model_file) == 0
    assert enhance(corpus, "-o", tmp_path / "batch", "--jobs", "2", "--batch-size", "3", model=model_file) == 0
    one, jobs, batch = (samples(tmp_path / name) for name in ("one", "jobs", "batch"))
    assert one.keys() == jobs.keys() == batch.keys() and len(one) == 7
    assert max(float(np.abs(jobs[f] - one[f]).max()) for f in one) <= 1e-6
    assert max(rel_rms(batch[f], one[f]) for f in one) < 1e-4
    assert len(records(tmp_path / "jobs" / f"{MANIFEST}.jsonl")) == 7


def test_thread_count_moves_outputs_by_rounding_at_most(speech, model_file):
    d = Dereverberator.from_pretrained(model_file, device="cpu")
    x = speech[0][:40000]
    outs = []
    for n in (1, 2, 3):
        torch.set_num_threads(n)
        outs.append(d(x, 16000))
    torch.set_num_threads(1)
    assert all(float(np.abs(y - outs[0]).max()) <= 1e-6 for y in outs)


def test_batched_network_calls_equal_unbatched(tmp_path, speech, model_file):
    """Threads enhancing files of equal and unequal lengths, their network calls batched by shape."""
    paths = write_corpus(tmp_path / "in", speech[0], [1.0, 1.0, 0.6, 1.0, 1.3, 0.6, 1.0, 1.0, 1.0])
    tasks = [Task(p, tmp_path / "batched" / p.name, 0.0) for p in paths]
    d = Dereverberator.from_pretrained(model_file, device="cpu")
    inbox: queue.Queue = queue.Queue()
    for t in tasks + [None] * 3:
        inbox.put(t)
    done: list[dict] = []
    notes = FileWarnings()
    with notes.installed():
        batcher = serve(d, {}, 3, notes, inbox.get, done.append)
    assert sorted(r["status"] for r in done) == ["done"] * 9
    assert batcher.calls > 0  # how many ran together depends on the threads' timing: see the next test
    plain = Dereverberator.from_pretrained(model_file, device="cpu")
    for t in tasks:
        plain.enhance_file(t.src, tmp_path / "plain" / t.src.name)
    for t in tasks:
        a, b = sf.read(t.dst)[0], sf.read(tmp_path / "plain" / t.src.name)[0]
        assert rel_rms(a, b) < 1e-4


def test_batcher_runs_calls_of_waiting_members_as_one_batch():
    """Members that all wait on the network run as one batch per shape, each getting its own rows."""
    calls: list[tuple] = []

    def net(x):
        calls.append(tuple(x.shape))
        return x * 2

    batcher = NetBatcher(net, size=8)
    barrier = threading.Barrier(4)
    inputs = [torch.full((1, 1, 4, 6 if i < 3 else 5), float(i)) for i in range(4)]
    outs: dict[int, torch.Tensor] = {}

    def member(i):
        with batcher.member():
            barrier.wait()  # every member is inside before any calls: nothing can run alone
            outs[i] = batcher(inputs[i])

    threads = [threading.Thread(target=member, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == [(1, 1, 4, 5), (3, 1, 4, 6)]  # one batch per shape
    assert batcher.calls == 2 and batcher.batched == 3  # network runs; requests that shared one
    assert all(torch.equal(outs[i], 2 * inputs[i]) for i in range(4))


class DyingEngine(Engine):
    """In a spawned worker, kills its own process (SIGKILL, as the out-of-memory killer does) on
    files named kill*."""

    def build(self, worker=0, device=None):
        d = super().build(worker, device)
        real = d.enhance_file

        def enhance_file(src, dst, **kw):
            if Path(src).name.startswith("kill") and multiprocessing.parent_process() is not None:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, **kw)

        d.enhance_file = enhance_file
        return d


@pytest.mark.slow
def test_a_worker_that_dies_fails_its_file_and_is_replaced(corpus, tmp_path, speech, model_file):
    """kill.wav, the longest file, goes first to a spawned worker (this process, worker 0, takes ties last)."""
    sf.write(corpus / "kill.wav", speech[0][:32000], 16000, subtype="FLOAT")
    engine = DyingEngine(str(model_file), device="cpu")
    with pytest.warns(UserWarning, match="failed: .*kill.wav"):
        s = enhance_corpus(engine, [corpus], tmp_path / "out", CorpusConfig(jobs=3, keep_going=True, progress=False))
    assert s.files == 7 and s.failures == ((str(corpus / "kill.wav"), s.failures[0][1]),)
    assert "worker process enhancing it died (killed by signal 9" in s.failures[0][1]
    with pytest.raises(DereverbError, match="kill.wav: the worker process"):
        enhance_corpus(engine, [corpus], tmp_path / "out2", CorpusConfig(jobs=2, progress=False))
    assert len(samples(tmp_path / "out2")) >= 1  # the files in flight finished before it stopped


# --- progress --------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_in_a_log_is_plain_lines_at_intervals():
    stream, clock = io.StringIO(), Clock()
    p = Progress(4, 4 * 3600.0, stream=stream, every=60, clock=clock)
    for t, failed in ((10, False), (100, True), (130, False), (200, False)):
        clock.t = t
        p.update(3600.0, failed)
    p.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 2  # at 100 s and 200 s, not at 10 or 130
    assert lines[0] == "enhance: 2/4 files, 2.00/4.00 h of audio, 1 failed, ETA 0:01:40"
    assert lines[1].startswith("enhance: 4/4 files, 4.00/4.00 h of audio, 1 failed, ETA 0:00:00")


def test_progress_on_a_terminal_redraws_one_line():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream, clock = Tty(), Clock()
    p = Progress(2, 20.0, stream=stream, clock=clock)
    clock.t = 1
    p.update(10.0, False)
    with p.above():
        stream.write("a warning\n")
    clock.t = 2
    p.update(10.0, False)
    p.close()
    text = stream.getvalue()
    assert text.startswith("\renhance: 1/2 files") and "\r\x1b[Ka warning\n\renhance: 1/2" in text
    assert text.endswith("enhance: 2/2 files, 0.01/0.01 h of audio, 0 failed, ETA 0:00:00\x1b[K\n")


def test_one_output_file_gets_no_manifest_beside_it(corpus, tmp_path, model_file):
    assert enhance(corpus / "f00.wav", "-o", tmp_path / "x.wav", model=model_file) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "x.wav"]
    assert enhance(corpus / "f00.wav", "-o", tmp_path / "y.wav", "--manifest", tmp_path / "m.jsonl", model=model_file) == 0
    assert [Path(r["output"]).name for r in records(tmp_path / "m.jsonl")] == ["y.wav"]


def test_each_rank_and_worker_takes_its_own_gpu(monkeypatch, corpus, tmp_path):
    """Worker ``w`` of rank ``LOCAL_RANK`` (``--jobs J``) runs on GPU ``(LOCAL_RANK * J + w) % count``
    (CUDA faked: the device string is what is checked)."""
    import dereverb.corpus
    import dereverb.workers

    built = []
    monkeypatch.setattr(dereverb.workers, "resolve_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(Dereverberator, "from_pretrained", lambda *a, device, **k: built.append(device))
    Engine(gpu=2).build(worker=3)
    Engine(gpu=2, backend="onnx").build(worker=3)  # onnxruntime runs on the CPU
    Engine(device="cpu").build(worker=1)
    assert built == ["cuda:1", "auto", "cpu"]
    class Called(Exception):
        pass

    def enhance_corpus(engine, *args):
        raise Called(engine.gpu)

    monkeypatch.setattr(dereverb.corpus, "enhance_corpus", enhance_corpus)
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(Called) as called:
        main(["enhance", str(corpus), "-o", str(tmp_path / "out"), "--jobs", "2", "--shard", "0/1"])
    assert called.value.args == (6,)
