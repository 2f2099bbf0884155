"""Dereverberate a corpus: files and folders on all cores, many machines and GPUs, with a record
of every file and no lost work.

It runs on the engines users already have, not on a scheduler of its own:

- ``jobs``: workers on one machine (this process and spawned ones: torch and fork do not mix),
  each loading the model once, torch's threads split between them; files are handed out longest
  first, so the run does not end waiting on one long file (:mod:`dereverb.workers`);
- ``shard``: part ``K`` of ``N`` of the sorted file list (every ``N``-th file from the ``K``-th),
  so ``N`` independent jobs (a SLURM array, a Kubernetes indexed job, torchrun ranks, ``N``
  shells) write disjoint outputs whose union is one job's; :func:`shard_from_env` reads it from
  the launcher;
- ``batch_size``: files in flight in each worker (threads), their network calls run together by
  a :class:`~dereverb.workers.NetBatcher`, for GPUs.

Each file finished (or, with ``keep_going``, failed) appends one JSON line to a manifest
(:class:`Manifest`; flushed and fsynced), so a killed run loses at most its files in flight.  A
rerun skips the outputs that exist, and refuses those the manifest says were made with another
model or options (the model file's SHA-256 and :func:`_options`).  Outputs do
not depend on ``jobs``, ``shard`` or the order of files; the thread count of a worker moves them by
float rounding at most (oneDNN's summation order), ``batch_size`` by float rounding of the batched
convolutions (tests/test_corpus.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from . import audio
from .config import to_dict
from .enhance import Dereverberator, resolve_device, resolve_model
from .errors import DereverbError
from .outputs import plan_outputs, probe_writable, removed_on_failure
from .workers import Engine, FileWarnings, Serial, Task, Workers, record

MANIFEST = "dereverb-manifest"  # default manifest: MANIFEST.jsonl, or MANIFEST.shard-K-of-N.jsonl
SHARDS_ENV = "DEREVERB_SHARDS"  # the shard count of a Kubernetes indexed job (its `completions`)
CUDA_BATCH = 8  # files in flight per worker on CUDA when batch_size is 0 (auto); 1 on the CPU


@dataclasses.dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count``: files ``index, index + count, ...`` of the sorted list."""

    index: int
    count: int
    source: str = "--shard"  # where it came from, for the log

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise DereverbError(f"shard {self.index}/{self.count} ({self.source}): needs 0 <= K < N")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"K/N"`` -> ``Shard(K, N)``."""
        k, _, n = text.partition("/")
        try:
            return cls(int(k), int(n))
        except ValueError:
            raise DereverbError(f"--shard {text}: expected K/N, part K (0-based) of N, e.g. 0/4") from None

    def pick(self, items: Sequence) -> list:
        return list(items[self.index :: self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_from_env(env: Mapping[str, str]) -> Shard | None:
    """The shard a launcher gives this process, or None: a SLURM job array (task ID less the
    array's minimum, over its step), torchrun (``RANK`` of ``WORLD_SIZE``), or a Kubernetes indexed
    job (``JOB_COMPLETION_INDEX``; Kubernetes does not export the completion count, so it comes from
    :data:`SHARDS_ENV`)."""
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
        low, step = int(env.get("SLURM_ARRAY_TASK_MIN", 0)), int(env.get("SLURM_ARRAY_TASK_STEP", 1) or 1)
        high = int(env.get("SLURM_ARRAY_TASK_MAX", low + (count - 1) * step))
        k, off = divmod(task - low, step)
        if off or high - low != (count - 1) * step or not 0 <= k < count:
            raise DereverbError(f"SLURM array task {task} (min {low}, max {high}, step {step}, count {count}): "
                                "not an evenly spaced range such as --array=0-15; pass --shard K/N")
        return Shard(k, count, "SLURM_ARRAY_TASK_ID")
    if "RANK" in env and "WORLD_SIZE" in env:
        return Shard(int(env["RANK"]), int(env["WORLD_SIZE"]), "RANK/WORLD_SIZE")
    if "JOB_COMPLETION_INDEX" in env:
        if SHARDS_ENV not in env:
            raise DereverbError(f"JOB_COMPLETION_INDEX is set (a Kubernetes indexed job) but not {SHARDS_ENV}: "
                                f"set {SHARDS_ENV} to the job's completions, or pass --shard K/N")
        return Shard(int(env["JOB_COMPLETION_INDEX"]), int(env[SHARDS_ENV]), "JOB_COMPLETION_INDEX")
    return None


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask: a SLURM or container limit), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Where outputs go (``suffix``, ``overwrite``, ``output_rate``, ``mono``: as for one file) and
    how a run is spread and recorded.  ``batch_size`` 0 is :data:`CUDA_BATCH` on CUDA and 1 on the
    CPU; ``manifest`` None is :data:`MANIFEST` in the output folder."""

    suffix: str = ""
    overwrite: bool = False
    output_rate: str = "input"
    mono: bool = False
    jobs: int = 1
    batch_size: int = 0
    shard: Shard | None = None
    keep_going: bool = False
    manifest: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise DereverbError(f"--jobs {self.jobs}: must be at least 1")
        if self.batch_size < 0:
            raise DereverbError(f"--batch-size {self.batch_size}: must be at least 1 (0: automatic)")


@dataclasses.dataclass(frozen=True)
class Summary:
    """What :func:`enhance_corpus` did: files enhanced, skipped (done before) and failed, the
    seconds of audio enhanced and of wall time, the manifest, and ``(input, error)`` per failure."""

    files: int
    skipped: int
    audio_seconds: float
    wall_seconds: float
    manifest: Path | None = None
    failures: tuple[tuple[str, str], ...] = ()

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def real_time_factor(self) -> float:
        """Processing time per second of audio (< 1 is faster than real time)."""
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else 0.0


# --- the manifest ------------------------------------------------------------------------------------


class Manifest:
    """A JSON-lines record of a corpus run, one line per file, appended and fsynced line by line
    (several shards may share one folder: each writes its own file).  A line torn by a crash is
    skipped on reading, and the next append starts on a new line."""

    def __init__(self, path: Path | None, read_from: Sequence[Path]):
        self.path, self.read_from = path, list(read_from)  # path None: nothing written
        self._file = None

    @classmethod
    def at(cls, folder: Path, name: str | None, shard: Shard | None, default: bool = True) -> "Manifest":
        """``name``, or (``default``) :data:`MANIFEST` in ``folder`` (per shard; read: every shard's)."""
        if name is not None:
            return cls(Path(name), [Path(name)])
        if not default:
            return cls(None, [])
        tag = "" if shard is None or shard.count == 1 else f".shard-{shard.index}-of-{shard.count}"
        return cls(folder / f"{MANIFEST}{tag}.jsonl", sorted(folder.glob(f"{MANIFEST}*.jsonl")))

    def records(self) -> Iterator[dict[str, Any]]:
        """Every whole record, oldest first."""
        for path in self.read_from:
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
                for line in f:
                    with contextlib.suppress(ValueError):
                        rec = json.loads(line)
                        if isinstance(rec, dict) and "output" in rec:
                            yield rec

    def append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
            if self._file.tell() and not _ends_with_newline(self.path):
                self._file.write(b"\n")  # after a torn line
        self._file.write(json.dumps(record).encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


# --- progress and warnings ----------------------------------------------------------------------------


class Progress:
    """Progress over the whole corpus on ``stream`` (stderr): files and hours of audio done of all,
    failures so far, and the time left at the rate so far.  A terminal gets one line redrawn in
    place; a log file (not a terminal) gets a plain line every ``every`` seconds, never a
    carriage return."""

    def __init__(self, files: int, seconds: float, stream=None, enabled: bool = True, every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        self.enabled = enabled and files > 0
        self.tty = self.enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.total_files, self.total_seconds, self.every, self.clock = files, seconds, every, clock
        self.files = self.failed = 0
        self.seconds = 0.0
        self.start = self.last = clock()
        self.drawn = False

    def update(self, seconds: float, failed: bool) -> None:
        """One more file, of ``seconds`` of audio."""
        self.files += 1
        self.seconds += seconds
        self.failed += failed
        now = self.clock()
        if self.tty and (now - self.last >= 0.2 or self.files == self.total_files):
            self._draw()
        elif self.enabled and not self.tty and now - self.last >= self.every:
            print(self.line(), file=self.stream, flush=True)
        else:
            return
        self.last = now

    def line(self) -> str:
        left = self.total_seconds - self.seconds
        eta = (self.clock() - self.start) * left / self.seconds if self.seconds else None
        return (f"enhance: {self.files}/{self.total_files} files, {self.seconds / 3600:.2f}/"
                f"{self.total_seconds / 3600:.2f} h of audio, {self.failed} failed, ETA {_hms(eta)}")

    def _draw(self) -> None:
        self.stream.write(f"\r{self.line()}\x1b[K")
        self.stream.flush()
        self.drawn = True

    @contextlib.contextmanager
    def above(self) -> Iterator[None]:
        """Lines printed inside go above the redrawn line."""
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        try:
            yield
        finally:
            if self.drawn:
                self._draw()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# --- the run ---------------------------------------------------------------------------------------------


def enhance_corpus(engine: Engine, inputs: Sequence[str | Path], out: str | Path,
                   cfg: CorpusConfig = CorpusConfig()) -> Summary:
    """Enhance files and folders (recursive) into ``out``, mirroring each input folder's tree.

    The options are checked by building the model, and every input header and output format
    before anything is written (with ``keep_going``, a file that fails here is recorded and left
    out); the output folder is probed.  An output that exists is skipped (a rerun finishes an
    interrupted run) unless ``overwrite``; one the manifest says was made with another model or
    options is an error, not silently kept.  A run that stops keeps its finished outputs and
    removes the folders it created that stayed empty.
    """
    start, threads = time.perf_counter(), torch.get_num_threads()
    device = resolve_device(engine.device)  # a missing CUDA is an error before any work
    batch = cfg.batch_size or (CUDA_BATCH if device.type == "cuda" else 1)
    serial = cfg.jobs == 1 and batch == 1
    d = engine.build()  # checks the options; worker 0
    plan = plan_outputs(inputs, out, cfg.suffix)
    top = Path(out).parent if plan[0][1] == Path(out) else Path(out)
    plan.sort(key=lambda job: str(job[1]))
    if cfg.shard is not None:
        plan = cfg.shard.pick(plan)
    manifest = Manifest.at(top, cfg.manifest, cfg.shard, default=top == Path(out))  # none beside `-o FILE`
    model_file = resolve_model(engine.model)
    stamp = {"model": str(model_file), "model_sha256": audio.sha256_file(model_file),
             "options": _options(d, engine, cfg), "shard": None if cfg.shard is None else str(cfg.shard)}
    todo, skipped = _to_do(plan, manifest, stamp, cfg.overwrite)
    tasks, bad = _read_headers(d, todo, cfg)
    tasks.sort(key=lambda t: (-t.duration, str(t.dst)))  # longest first
    run = _Run(cfg, manifest, stamp, Progress(len(todo), sum(t.duration for t in tasks), enabled=cfg.progress))
    notes = FileWarnings()
    folders = [top, *(t.dst.parent for t in tasks), *([manifest.path.parent] if manifest.path else [])]
    with removed_on_failure(folders), notes.installed():
        probe_writable(top)
        try:
            for rec in bad:
                run.add(rec)
            if tasks:
                jobs = min(cfg.jobs, len(tasks))
                file_args = {"output_rate": cfg.output_rate, "mono": cfg.mono, "overwrite": cfg.overwrite}
                pool = (Serial(d, file_args, notes, catch=cfg.keep_going) if serial else
                        Workers(engine, file_args, jobs, batch, max(1, cpu_count() // jobs), local=d, notes=notes))
                try:
                    run.drive(pool, tasks, jobs * batch)
                except BaseException:
                    pool.kill()
                    raise
                pool.close()
        finally:
            manifest.close()
            run.progress.close()
            torch.set_num_threads(threads)  # worker 0 set its own share
        run.raise_stop()
    return Summary(run.done, skipped, run.audio_seconds, time.perf_counter() - start,
                   manifest.path if manifest.path and manifest.path.exists() else None, tuple(run.failures))


def _options(d: Dereverberator, engine: Engine, cfg: CorpusConfig) -> dict[str, Any]:
    """What an output depends on besides the model and its input (not where or how fast it ran)."""
    return json.loads(json.dumps({
        "phase": d.phase, "strength": d.strength, "shifts": d.shifts, "backend": d.backend,
        "wpe": None if engine.wpe is None else to_dict(engine.wpe), "autocast": engine.autocast,
        "output_rate": cfg.output_rate, "mono": cfg.mono, "chunk": to_dict(engine.chunk)}))


def _to_do(plan: list[tuple[Path, Path]], manifest: Manifest, stamp: dict[str, Any],
           overwrite: bool) -> tuple[list[tuple[Path, Path]], int]:
    """``(jobs to run, outputs skipped)``.  An existing output is done; one whose last manifest
    record says it was made with another model or options is an error (``overwrite`` redoes it)."""
    if overwrite:
        return plan, 0
    same: dict[str, bool] = {}  # output -> made with this model and options, by its last record if done
    for rec in manifest.records():  # streamed: a million records need not sit in memory
        if rec.get("status") == "done":
            same[os.path.abspath(rec["output"])] = all(rec.get(k) == stamp[k] for k in ("model_sha256", "options"))
        else:
            same.pop(os.path.abspath(rec["output"]), None)
    todo = [(src, dst) for src, dst in plan if not dst.exists()]
    other = [dst for src, dst in plan if not same.get(os.path.abspath(dst), True) and dst.exists()]
    if other:
        more = f" (and {len(other) - 1} more)" if len(other) > 1 else ""
        raise DereverbError(f"{other[0]}{more}: made with another model or options ({manifest.path.name}); "
                            "pass --overwrite to redo, or choose another output folder")
    return todo, len(plan) - len(todo)


def _read_headers(d: Dereverberator, todo: list[tuple[Path, Path]],
                  cfg: CorpusConfig) -> tuple[list[Task], list[dict]]:
    """Tasks with their durations, and (``keep_going``) records of the files whose header or
    output format fails; without ``keep_going`` the first such file is the error."""
    tasks, bad = [], []
    for src, dst in todo:
        try:
            meta = audio.info(src)
            d.output_spec(meta, dst, cfg.output_rate, cfg.mono)
        except DereverbError as e:
            if not cfg.keep_going:
                raise
            bad.append({**record(Task(src, dst, 0.0), time.perf_counter(), e), "duration": None})
            continue
        tasks.append(Task(src, dst, meta.duration))
    return tasks, bad


class _Run:
    """The parent's side of a run: hands out files, writes their records, counts, shows progress."""

    def __init__(self, cfg: CorpusConfig, manifest: Manifest, stamp: dict[str, Any], progress: Progress):
        self.cfg, self.manifest, self.stamp, self.progress = cfg, manifest, stamp, progress
        self.done, self.audio_seconds = 0, 0.0
        self.failures: list[tuple[str, str]] = []
        self.stop: dict | None = None  # the failure that stops a run without keep_going

    def drive(self, pool, tasks: list[Task], capacity: int) -> None:
        """Keep ``capacity`` files in flight in ``pool`` (longest first) until all are recorded or
        a failure stops the run: then the files in flight finish and no more are handed out."""
        pending, in_flight = iter(tasks), 0
        for task in (t for _, t in zip(range(capacity), pending)):
            pool.put(task)
            in_flight += 1
        while in_flight:
            self.add(pool.get())
            in_flight -= 1
            task = next(pending, None) if self.stop is None else None
            if task is not None:
                pool.put(task)
                in_flight += 1

    def add(self, rec: dict) -> None:
        failed = rec["status"] != "done"
        if not failed or self.cfg.keep_going:
            self.manifest.append({**rec, **self.stamp, "finished": datetime.datetime.now(datetime.timezone.utc)
                                  .isoformat(timespec="seconds")})
        self.progress.update(rec["duration"] or 0.0, failed)
        with self.progress.above():
            for text in rec["warnings"]:
                warnings.warn(text, stacklevel=2)
            if failed and self.cfg.keep_going:
                warnings.warn(f"failed: {rec['error']}", stacklevel=2)
        if failed:
            self.failures.append((rec["input"], rec["error"]))
            if not self.cfg.keep_going and self.stop is None:
                self.stop = rec
        else:
            self.done += 1
            self.audio_seconds += rec["duration"]

    def raise_stop(self) -> None:
        if self.stop is None:
            return
        if "traceback" in self.stop:  # not an error a user can fix: a worker's bug, with its traceback
            raise RuntimeError(f"{self.stop['error']}\nin the worker process:\n{self.stop['traceback']}")
        raise DereverbError(self.stop["error"])
