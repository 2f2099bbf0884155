"""Where enhanced files go: ``(src, dst)`` plans for files and folders (mirrored trees, suffixes,
no collisions, never onto an input), output folders created and probed before any work (and
removed again when a run fails), and scratch files beside a target for its two-pass atomic write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from . import audio
from .errors import DereverbError


def plan_outputs(inputs: Sequence[str | Path], out: str | Path, suffix: str = "") -> list[tuple[Path, Path]]:
    """``(src, dst)`` for every audio file under ``inputs`` (files or folders, recursive).

    A folder's files land under ``out`` at the same relative path; a file lands in ``out``.  With
    one input file, ``out`` may name the output file itself (it then has an audio suffix).
    ``suffix`` is added to each output's stem.  Files under ``out`` are not inputs (``-o`` may lie
    inside an input folder, and a rerun must not enhance the outputs), nor, when ``out`` is an input
    folder itself, are files where another input's output goes (``a_dry.wav`` beside ``a.wav``
    with ``--suffix _dry``: a rerun skips it as done).  Refuses outputs that collide or hit an
    input.
    """
    out = Path(out)
    first = Path(inputs[0]) if inputs else None
    to_file = (len(inputs) == 1 and first.is_file() and not out.is_dir()
               and out.suffix.lower() in audio.FORMATS)
    if out.exists() and not out.is_dir() and not to_file:
        raise DereverbError(f"{out}: is a file; -o needs an output folder")
    jobs: list[tuple[Path, Path]] = []
    out_root = None if to_file else out.resolve()
    for root in map(Path, inputs):
        files = audio.list_audio(root, audio.READ_SUFFIXES, warn_foreign=True)
        if root.is_dir() and out_root is not None and not root.resolve().is_relative_to(out_root):
            files = [f for f in files if not f.resolve().is_relative_to(out_root)]  # earlier outputs
        if not files:
            raise DereverbError(f"{root}: no audio files in this folder (dereverb reads "
                                f"{', '.join(audio.READ_SUFFIXES)})")
        for f in files:
            rel = Path(f.name) if root.is_file() else f.relative_to(root)
            dst = out if to_file else out / rel.with_name(f"{rel.stem}{suffix}{rel.suffix}")
            audio.format_for(dst)
            jobs.append((f, dst))
    jobs = _without_own_outputs(jobs)
    seen: dict[Path, Path] = {}
    for src, dst in jobs:
        if dst in seen and seen[dst].resolve() != src.resolve():
            raise DereverbError(f"{dst}: two inputs would write here ({seen[dst]} and {src}); use separate runs")
        seen[dst] = src
    jobs = [(src, dst) for dst, src in seen.items()]  # the same file named twice runs once
    sources = [s for s, _ in jobs]
    for _, dst in jobs:
        check_target(dst, sources, overwrite=True)
    return jobs


def _without_own_outputs(jobs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """``jobs`` less those whose source is where another job writes: an earlier run's output."""
    writes = {dst.resolve(): src.resolve() for src, dst in jobs}
    return [(src, dst) for src, dst in jobs if writes.get(src.resolve(), src.resolve()) == src.resolve()]


def check_target(dst: Path, sources: Sequence[Path], overwrite: bool) -> None:
    """Refuse a ``dst`` that is one of ``sources`` (whatever ``overwrite`` says), or exists."""
    if dst.is_dir():
        raise DereverbError(f"{dst}: is a folder, expected an output file name")
    resolved = dst.resolve()
    for src in sources:
        if resolved == src.resolve() or (dst.exists() and os.path.samefile(dst, src)):
            raise DereverbError(f"{dst}: is an input file; choose another output folder or a --suffix")
    if dst.exists() and not overwrite:
        raise DereverbError(f"{dst}: already exists; pass --overwrite to replace it")


@contextlib.contextmanager
def removed_on_failure(folders: Iterable[str | Path], everything: bool = False) -> Iterator[None]:
    """On an exception inside, remove what this run created of ``folders`` and their parents: the
    folders that did not exist on entry, when they are empty (``everything``: with all they hold,
    for a command whose partial output is of no use).  A failed command leaves no empty folders."""
    new: set[Path] = set()
    for folder in folders:
        for f in (Path(folder).absolute(), *Path(folder).absolute().parents):
            if f.exists():
                break
            new.add(f)
    try:
        yield
    except BaseException:
        for f in sorted(new, key=lambda p: len(p.parts), reverse=True):  # deepest first
            if everything and f.is_dir() and f.parent not in new:
                shutil.rmtree(f, ignore_errors=True)
            with contextlib.suppress(OSError):
                f.rmdir()  # only when empty
        raise


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DereverbError(f"{folder}: cannot create the output folder ({e.strerror or e})") from e


def probe_writable(folder: Path) -> None:
    """Create ``folder`` if needed and check a file can be created in it."""
    make_folder(folder)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise DereverbError(f"{folder}: cannot write to the output folder ({e.strerror or e})") from e


@contextlib.contextmanager
def scratch_file(dst: Path) -> Iterator[Path]:
    """A temporary file beside ``dst``, removed on exit whatever happens."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".f32.tmp", dir=dst.parent)
    except OSError as e:
        raise DereverbError(f"{dst.parent}: cannot write to the output folder ({e.strerror})") from e
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
