"""Worker processes and threads that enhance files for :mod:`dereverb.corpus`.

A worker process (spawned: torch and fork do not mix) builds its model once from an
:class:`Engine` and enhances the :class:`Task` s it is handed, one at a time or, with a batch size
above 1, several at once in threads whose network calls a :class:`NetBatcher` runs together.
Each file comes back as a record (a dict: the manifest's line less the run's stamp), its warnings
and error included, so the parent alone writes the manifest.  ``jobs`` 1 and batch size 1 run in
the calling process instead (:class:`Serial`), where an error that stops the run is raised as is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .chunking import ChunkConfig
from .enhance import DEFAULT_SHIFTS, Dereverberator, resolve_device
from .errors import DereverbError
from .wpe import WpeConfig


@dataclasses.dataclass(frozen=True)
class Engine:
    """The :meth:`Dereverberator.from_pretrained` arguments each worker builds its model from,
    once.  ``gpu``: the first CUDA device of this process's workers (worker ``w`` takes device
    ``(gpu + w) % count``; the CLI passes torchrun's ``LOCAL_RANK`` times ``jobs``)."""

    model: str | None = None
    device: str = "auto"
    phase: str | None = None
    strength: float = 1.0
    backend: str = "torch"
    wpe: WpeConfig | None = None
    shifts: int = DEFAULT_SHIFTS
    autocast: bool = False
    chunk: ChunkConfig = ChunkConfig()
    gpu: int = 0

    def build(self, worker: int = 0, device: str | None = None) -> Dereverberator:
        device = device or self.device
        if self.backend == "torch" and device in ("auto", "cuda") and resolve_device(device).type == "cuda":
            device = f"cuda:{(self.gpu + worker) % torch.cuda.device_count()}"
        return Dereverberator.from_pretrained(self.model, device=device, phase=self.phase, strength=self.strength,
                                              backend=self.backend, chunk=self.chunk, wpe=self.wpe,
                                              shifts=self.shifts, autocast=self.autocast)


@dataclasses.dataclass(frozen=True)
class Task:
    """One file to enhance: ``duration`` in seconds, from its header."""

    src: Path
    dst: Path
    duration: float


class FileWarnings:
    """Warnings raised while a file is enhanced, kept per thread (``warnings.catch_warnings`` is
    process-wide) so they travel with the file's record from any worker; others pass on."""

    def __init__(self) -> None:
        self.local = threading.local()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        with warnings.catch_warnings():
            previous = warnings.showwarning
            warnings.simplefilter("always")

            def show(message, category, filename, lineno, file=None, line=None):
                sink = getattr(self.local, "sink", None)
                if sink is None:
                    previous(message, category, filename, lineno, file, line)
                else:
                    sink.append(str(message))

            warnings.showwarning = show
            yield

    @contextlib.contextmanager
    def file(self) -> Iterator[list[str]]:
        self.local.sink = []
        try:
            yield self.local.sink
        finally:
            self.local.sink = None


# --- batching across files -------------------------------------------------------------------------


class _Request:
    def __init__(self, x: torch.Tensor):
        self.x, self.out, self.error, self.done = x, None, None, False


class NetBatcher:
    """The network for several threads at once, each enhancing its own file: a call waits until
    every member thread is waiting too (no more inputs can come) or ``size`` calls are pending,
    then runs inputs of the same shape as one batch of at most ``size`` calls.

    The inputs are the network's: features mirror-padded onto its frame grid per segment, so a
    segment batched with others is padded exactly as alone, and rows of a batch never interact;
    each output equals the unbatched one up to float rounding.  ``calls`` and ``batched`` (calls
    that ran together with another) say how much batching happened.
    """

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], size: int):
        self.run, self.size = run, size
        self.cond = threading.Condition()
        self.pending: list[_Request] = []
        self.members = self.in_flight = self.calls = self.batched = 0

    @contextlib.contextmanager
    def member(self) -> Iterator[None]:
        """Around each file a thread enhances: while inside, the thread may call the network."""
        with self.cond:
            self.members += 1
        try:
            yield
        finally:
            with self.cond:
                self.members -= 1
                batch = self._take()
            self._run(batch)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, C, F, T)`` -> the network's output ``(B, C_out, F, T)``."""
        req = _Request(x)
        with self.cond:
            self.pending.append(req)
            batch = self._take()
        self._run(batch)
        with self.cond:
            while not req.done:
                self.cond.wait()
        if req.error is not None:
            raise req.error
        return req.out

    def _take(self) -> list[_Request]:
        """(Under the lock.) The pending calls, when no member can add one or ``size`` are pending."""
        if self.pending and (len(self.pending) >= self.size or len(self.pending) + self.in_flight >= self.members):
            batch, self.pending = self.pending, []
            self.in_flight += len(batch)
            return batch
        return []

    def _run(self, batch: list[_Request]) -> None:
        if not batch:
            return
        groups: dict[tuple, list[_Request]] = {}
        for req in batch:
            groups.setdefault((tuple(req.x.shape[1:]), req.x.dtype, req.x.device), []).append(req)
        parts = [reqs[i : i + self.size] for reqs in groups.values() for i in range(0, len(reqs), self.size)]
        for part in parts:
            try:
                out = self.run(torch.cat([r.x for r in part]))  # (sum B, C_out, F, T)
                for r, y in zip(part, out.split([r.x.shape[0] for r in part])):
                    r.out = y
            except BaseException as e:  # each waiting file fails with it (CUDA out of memory, ...)
                for r in part:
                    r.error = e
        with self.cond:
            self.calls += len(parts)
            self.batched += sum(len(part) for part in parts if len(part) > 1)
            self.in_flight -= len(batch)
            for r in batch:
                r.done = True
            self.cond.notify_all()


# --- files in this process or in worker processes ---------------------------------------------


def _error_text(e: BaseException) -> str:
    if isinstance(e, DereverbError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return f"{type(e).__name__}: {e}"


def record(task: Task, start: float, error: BaseException | None = None, said: Sequence[str] = ()) -> dict:
    rec = {"input": os.path.abspath(task.src), "output": os.path.abspath(task.dst),
           "status": "failed" if error else "done", "error": _error_text(error) if error else None,
           "duration": round(task.duration, 3), "seconds": round(time.perf_counter() - start, 3),
           "warnings": list(said)}
    if error is not None and not isinstance(error, (DereverbError, OSError)):
        rec["traceback"] = "".join(traceback.format_exception(error))
    return rec


def enhance_one(d: Dereverberator, task: Task, file_args: dict[str, Any], notes: FileWarnings, catch: bool) -> dict:
    """Enhance one file (``file_args``: keywords of :meth:`Dereverberator.enhance_file`) -> its
    record; an error is recorded (``catch``) or raised."""
    start, error = time.perf_counter(), None
    with notes.file() as said:
        try:
            d.enhance_file(task.src, task.dst, **file_args)
        except Exception as e:
            error = e
    if error is not None and not catch:
        for text in said:
            warnings.warn(text, stacklevel=2)
        raise error
    return record(task, start, error, said)


class Serial:
    """Files enhanced one at a time in this process, each when its record is asked for; without
    ``catch`` an error is raised as it is."""

    def __init__(self, d: Dereverberator, file_args: dict[str, Any], notes: FileWarnings, catch: bool):
        self.d, self.file_args, self.notes, self.catch, self.task = d, file_args, notes, catch, None

    def put(self, task: Task) -> None:
        self.task = task

    def get(self) -> dict:
        return enhance_one(self.d, self.task, self.file_args, self.notes, self.catch)

    def close(self) -> None:
        pass

    kill = close


def serve(d: Dereverberator, file_args: dict[str, Any], batch_size: int, notes: FileWarnings,
          get: Callable[[], Task | None], put: Callable[[dict], None],
          stop: threading.Event | None = None) -> NetBatcher | None:
    """Enhance the tasks ``get`` returns until None, ``batch_size`` files at a time (threads whose
    network calls a :class:`NetBatcher` runs together), each record to ``put``.  Once ``stop`` is
    set, files in flight fail at their next network call and, with threads, this returns when
    none is left in flight."""
    if stop is not None:
        d.network = _stoppable(d.network, stop)
    batcher = NetBatcher(d.network, batch_size) if batch_size > 1 else None
    if batcher is not None:
        d.network = batcher

    def loop() -> None:
        while (task := get()) is not None:
            with batcher.member() if batcher is not None else contextlib.nullcontext():
                rec = enhance_one(d, task, file_args, notes, catch=True)
            put(rec)

    if batcher is None:
        loop()  # in this thread: a SIGTERM's SystemExit unwinds the file and removes its scratch file
        return None
    threads = [threading.Thread(target=loop, daemon=True) for _ in range(batch_size)]
    for t in threads:
        t.start()
    while threads:
        threads[0].join(timeout=0.1)
        threads = [t for t in threads if t.is_alive()]
        if stop is not None and stop.is_set() and not batcher.members:
            break  # the threads wait for tasks that will not come
    return batcher


def _worker_main(engine: Engine, file_args: dict[str, Any], worker: int, threads: int, batch_size: int,
                 inbox, results, parent: int) -> None:
    """A worker process: build the model once, then enhance what ``inbox`` hands it."""
    with contextlib.suppress(Exception):  # Linux: a SIGKILLed run leaves no orphan at work
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        return
    stop = threading.Event()  # SIGTERM: unwind the files in flight (their scratch files removed), then end
    signal.signal(signal.SIGTERM, lambda *_: stop.set() if batch_size > 1 else sys.exit(143))
    torch.set_num_threads(threads)
    try:
        d = engine.build(worker)
    except Exception as e:
        results.put(("failed-to-start", worker, _error_text(e)))
        return
    results.put(("ready", worker, None))
    notes = FileWarnings()
    with notes.installed():
        serve(d, file_args, batch_size, notes, inbox.get, lambda rec: results.put(("done", worker, rec)), stop)


class Workers:
    """``jobs`` workers, each with ``batch_size`` files in flight and ``threads`` torch threads:
    the calling process's own ``local`` model in a thread when given (it starts at once and saves a
    model in memory), and spawned processes for the rest.  A process that dies fails its files in
    flight and is replaced."""

    def __init__(self, engine: Engine, file_args: dict[str, Any], jobs: int, batch_size: int, threads: int,
                 local: Dereverberator | None = None, notes: FileWarnings | None = None):
        self.ctx = multiprocessing.get_context("spawn")
        self.engine, self.file_args, self.batch, self.threads = engine, file_args, batch_size, threads
        self.results = self.ctx.SimpleQueue()  # put() writes through: a record sent is not lost if its sender is killed
        self.procs: dict[int, Any] = {}
        self.inbox: dict[int, Any] = {}
        self.busy: dict[int, dict[str, Task]] = {}
        self.ready: set[int] = set()
        self.queued: list[dict] = []  # records to hand out before reading more: a dead worker's
        self.local, self.stop = None, threading.Event()
        for w in range(local is not None, jobs):
            self._start(w)
        if local is not None:  # worker 0, after the spawned ones: ties in put() go to them
            self.inbox[0], self.busy[0] = queue.Queue(), {}
            self.local = threading.Thread(target=self._serve_here, args=(local, notes or FileWarnings()), daemon=True)
            self.local.start()

    def _serve_here(self, d: Dereverberator, notes: FileWarnings) -> None:
        torch.set_num_threads(self.threads)
        try:
            serve(d, self.file_args, self.batch, notes, self.inbox[0].get,
                  lambda rec: self.results.put(("done", 0, rec)), self.stop)
        except BaseException as e:  # not a file's error (those are records): the run cannot go on
            self.results.put(("failed", 0, "".join(traceback.format_exception(e))))

    def _start(self, w: int) -> None:
        self.inbox[w], self.busy[w] = self.ctx.Queue(), {}
        self.procs[w] = self.ctx.Process(target=_worker_main, name=f"dereverb-worker-{w}", daemon=True, args=(
            self.engine, self.file_args, w, self.threads, self.batch, self.inbox[w], self.results, os.getpid()))
        # Ctrl-C reaches the whole process group; the parent stops the workers.  Ignored from the
        # start (a child keeps an ignored SIGINT through exec), so not even an import is interrupted.
        here = threading.current_thread() is threading.main_thread()
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if here else None
        try:
            self.procs[w].start()
        finally:
            if here:
                signal.signal(signal.SIGINT, handler)

    def put(self, task: Task) -> None:
        w = min(self.busy, key=lambda i: len(self.busy[i]))  # the caller keeps at most jobs x batch in flight
        self.busy[w][os.path.abspath(task.dst)] = task
        self.inbox[w].put(task)

    def get(self) -> dict:
        """The next file's record (in the order they finish)."""
        idle = 0.0
        while not self.queued:
            if self.results.empty():
                time.sleep(0.01)
                idle += 0.01
                if idle >= 0.5:
                    self._check()
                    idle = 0.0
                continue
            rec = self._handle(self.results.get())
            if rec is not None:
                return rec
        return self.queued.pop(0)

    def _handle(self, message: tuple) -> dict | None:
        kind, w, value = message
        if kind == "failed-to-start":
            raise DereverbError(value)
        if kind == "failed":
            raise RuntimeError(f"the worker thread failed:\n{value}")
        if kind == "ready":
            self.ready.add(w)
            return None
        self.busy[w].pop(value["output"], None)
        return value

    def _check(self) -> None:
        """Replace workers that died, after the records they sent; fail their files in flight."""
        for w, p in list(self.procs.items()):
            if p.exitcode is None:
                continue
            while not self.results.empty():
                rec = self._handle(self.results.get())
                if rec is not None:
                    self.queued.append(rec)
            how = f"killed by signal {-p.exitcode}" if p.exitcode < 0 else f"exit code {p.exitcode}"
            if w not in self.ready:
                raise DereverbError(f"a worker process ended ({how}) while loading the model")
            for task in self.busy[w].values():
                error = DereverbError(f"{task.src}: the worker process enhancing it died ({how}"
                                      f"{'; out of memory?' if p.exitcode == -signal.SIGKILL else ''})")
                self.queued.append(record(task, time.perf_counter(), error))
            self.ready.discard(w)
            self.inbox[w].cancel_join_thread()
            self._start(w)

    def close(self) -> None:
        for inbox in self.inbox.values():
            for _ in range(self.batch):
                inbox.put(None)
        for p in self.procs.values():
            p.join(timeout=30)
        if self.local is not None:
            self.local.join()
        self.kill()

    def kill(self) -> None:
        """Stop now: processes are sent SIGTERM, the thread here stops at its next network call; each
        unwinds its files (their scratch files removed)."""
        self.stop.set()
        if self.local is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    self.inbox[0].get_nowait()
            for _ in range(self.batch):
                self.inbox[0].put(None)
        for p in self.procs.values():
            if p.exitcode is None:
                p.terminate()  # SIGTERM: the worker unwinds its file
        for p in self.procs.values():
            p.join(timeout=10)
            if p.exitcode is None:
                p.kill()
                p.join()
        for w in self.procs:
            self.inbox[w].cancel_join_thread()
        if self.local is not None:
            self.local.join(timeout=60)


class Stopped(Exception):
    """The run was stopped (Ctrl-C, an error) while this file was in flight."""


def _stoppable(network: Callable[[torch.Tensor], torch.Tensor], stop: threading.Event):
    def run(x: torch.Tensor) -> torch.Tensor:
        if stop.is_set():
            raise Stopped("stopped")
        return network(x)

    return run


