"""``dereverb evaluate``: systems x files -> per-file CSV, summary table, HTML report.

A *system* is anything that turns the reverberant files into outputs: the baselines
(:mod:`dereverb.baselines`), a model (run here with :class:`~dereverb.enhance.Dereverberator`,
outputs kept under ``OUT/enhanced/``) or a folder of precomputed outputs.  Files are matched by
their path relative to each folder, without the suffix (a flat folder also matches by file
stem).  Everything is scored at one rate (16 kHz by default; other files are resampled, with a
note).  Problems never stop the run: missing partners and lengths that disagree by more than
``max_length_diff_s`` are listed in the notes and that file (or that system's output) is left
out; metrics undefined on a file (silence) are NaN and noted.  A run that fails removes the
folders it created (with what they hold).

Outputs in ``OUT``: ``per_file.csv`` (one row per file x system), ``summary.md`` and
``summary.json`` (means with 95% t-intervals per condition x system; ``summary.md`` and
``report.html`` also hold the paired per-file gains over ``unprocessed`` and ``wpe`` when those
were scored), ``notes.txt``, ``report.html`` with its ``assets/``.  A file's condition is its
``condition`` column in a ``conditions.csv`` (as ``make-testset`` writes) found in the
reverberant folder or its parent, else its first sub-folder, else ``all``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import multiprocessing
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from . import audio, report
from .baselines import BASELINES, NEEDS_CLEAN, WpeConfig, run_baseline
from .errors import DereverbError
from .outputs import removed_on_failure
from .report import LOWER_IS_BETTER, read_csv, safe_name, write_csv  # noqa: F401  (the per-file CSV's format)

INTRUSIVE = ("pesq", "stoi", "estoi", "si_sdr", "cd", "llr", "fwsegsnr")
NON_INTRUSIVE = ("srmr", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "t60_est", "drr_est")
ALL_METRICS = INTRUSIVE + NON_INTRUSIVE
CONDITIONS_CSV = "conditions.csv"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
OUTPUT_AUDIO = ("assets", "enhanced")  # sub-folders of OUT that hold audio evaluate wrote
MIN_SECONDS = 0.05  # shorter files are noted and skipped: STOI needs a few 25.6 ms frames


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how.  ``metrics`` empty: every metric that applies (intrusive ones
    only with a clean reference).  ``examples``: files shown with spectrograms and players.
    ``shifts``: the model's network passes per segment (``None``: the Dereverberator's default)."""

    baselines: tuple[str, ...] = BASELINES
    metrics: tuple[str, ...] = ()
    sample_rate: int = 16000
    workers: int = 2
    max_length_diff_s: float = 0.01
    examples: int = 3
    seed: int = 0
    wpe: WpeConfig = WpeConfig()
    shifts: int | None = None

    def __post_init__(self) -> None:
        for b in self.baselines:
            if b not in BASELINES:
                raise DereverbError(f"--baselines: unknown {b!r}; choose from {', '.join(BASELINES)}")
        for m in self.metrics:
            if m not in ALL_METRICS:
                raise DereverbError(f"--metrics: unknown {m!r}; choose from {', '.join(ALL_METRICS)}")


@dataclasses.dataclass(frozen=True)
class Item:
    """One reverberant file with its partners: clean reference and each system's output."""

    key: str
    condition: str
    reverb: Path
    clean: Path | None
    outputs: dict[str, Path]


@dataclasses.dataclass
class EvalResult:
    rows: list[dict]
    metrics: tuple[str, ...]
    systems: tuple[str, ...]
    notes: list[str]
    out_dir: Path


# --- pairing -----------------------------------------------------------------------------------


def _keys(root: Path, exclude: Sequence[Path] = ()) -> dict[str, Path]:
    """``relative/path/without_suffix -> file`` for every audio file under ``root``, except those
    under the folders ``exclude`` (evaluate's own outputs when ``-o`` lies in an input folder)."""
    if not root.is_dir():
        raise DereverbError(f"{root}: not a folder of audio files")
    files = audio.list_audio(root, audio.READ_SUFFIXES, warn_foreign=True)
    skip = [e.resolve() for e in exclude if not root.resolve().is_relative_to(e.resolve())]
    files = [p for p in files if not any(p.resolve().is_relative_to(e) for e in skip)]
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in files}


def _match(keys: list[str], folder: dict[str, Path]) -> dict[str, Path]:
    """Partners in ``folder`` by relative key, else (a flat folder) by unique file stem."""
    by_stem: dict[str, list[Path]] = {}
    flat = all("/" not in k for k in folder)
    for k, p in folder.items() if flat else ():
        by_stem.setdefault(k.rsplit("/", 1)[-1], []).append(p)
    found = {}
    for k in keys:
        if k in folder:
            found[k] = folder[k]
        elif len(by_stem.get(k.rsplit("/", 1)[-1], [])) == 1:
            found[k] = by_stem[k.rsplit("/", 1)[-1]][0]
    return found


def read_conditions(reverb_dir: Path) -> dict[str, str]:
    """``key -> condition`` from a ``conditions.csv`` beside or above the reverberant files."""
    for folder in (reverb_dir, reverb_dir.parent):
        path = folder / CONDITIONS_CSV
        if path.is_file():
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows and not {"file", "condition"} <= set(rows[0]):
                raise DereverbError(f"{path}: needs the columns 'file' and 'condition'")
            return {str(Path(r["file"]).with_suffix("").as_posix()): r["condition"] for r in rows}
    return {}


def _condition(key: str, table: dict[str, str]) -> str:
    if key in table:
        return table[key]
    if key.removeprefix("reverb/") in table:
        return table[key.removeprefix("reverb/")]
    return key.split("/", 1)[0] if "/" in key else "all"


def pair_files(reverb_dir: Path, clean_dir: Path | None, system_dirs: dict[str, Path],
               exclude: Sequence[Path] = ()) -> tuple[list[Item], list[str]]:
    """Match every reverberant file with its clean reference and system outputs; returns the
    items to evaluate and notes on what did not match.  Files under ``exclude`` are ignored."""
    reverb = _keys(reverb_dir, exclude)
    if not reverb:
        raise DereverbError(f"{reverb_dir}: no audio files found (evaluate reads {', '.join(audio.READ_SUFFIXES)})")
    notes: list[str] = []
    keys = sorted(reverb)
    clean: dict[str, Path] = {}
    if clean_dir is not None:
        all_clean = _keys(clean_dir, exclude)
        clean = _match(keys, all_clean)
        notes += [f"{reverb[k]}: no clean file of that name in {clean_dir}; skipped"
                  for k in keys if k not in clean]
        used = set(clean.values())
        notes += [f"{p}: no reverberant file of that name in {reverb_dir}; ignored"
                  for p in all_clean.values() if p not in used]
        keys = [k for k in keys if k in clean]
    outputs = {label: _match(keys, _keys(d, exclude)) for label, d in system_dirs.items()}
    for label, found in outputs.items():
        notes += [f"{system_dirs[label]}: no output for {k}; system {label} skips it"
                  for k in keys if k not in found]
    table = read_conditions(reverb_dir)
    items = [Item(k, _condition(k, table), reverb[k], clean.get(k),
                  {label: found[k] for label, found in outputs.items() if k in found}) for k in keys]
    return items, notes


# --- scoring one file (runs in a worker process) -------------------------------------------------


def _load(path: Path, rate: int, notes: list[str]) -> np.ndarray:
    x, file_rate = audio.read(path)
    if truncated := audio.info(path).truncated:
        notes.append(truncated)
    if x.shape[0] > 1:
        notes.append(f"{path}: {x.shape[0]} channels, scored on the first")
    if file_rate != rate:
        notes.append(f"{path}: {file_rate} Hz, resampled to {rate} Hz")
        x = audio.resample(x[:1], file_rate, rate)
    return x[0].astype(np.float64)


def _length_ok(a: np.ndarray, b: np.ndarray, rate: int, limit_s: float) -> bool:
    return abs(a.size - b.size) <= limit_s * rate


def score(est: np.ndarray, clean: np.ndarray | None, rate: int, names: tuple[str, ...]) -> dict:
    """Metric values ``{name: float}`` of one output ``est (S,)`` (``clean`` aligned or None)."""
    from . import metrics as m

    intrusive = {"pesq": lambda: m.pesq(clean, est, rate), "stoi": lambda: m.stoi(clean, est, rate),
                 "estoi": lambda: m.estoi(clean, est, rate), "si_sdr": lambda: m.si_sdr(clean, est),
                 "cd": lambda: m.cepstral_distance(clean, est, rate),
                 "llr": lambda: m.llr(clean, est, rate), "fwsegsnr": lambda: m.fwsegsnr(clean, est, rate)}
    blind = {"srmr": lambda: m.srmr(est, rate), "t60_est": lambda: m.estimate_t60(est, rate),
             "drr_est": lambda: m.estimate_drr(est, rate)}
    out: dict[str, float] = {}
    for name in names:
        if name in intrusive:
            out[name] = intrusive[name]() if clean is not None else math.nan
        elif name in blind:
            out[name] = blind[name]()
    if any(n.startswith("dnsmos_") for n in names):
        d = m.dnsmos(est, rate)
        out.update({f"dnsmos_{k}": v for k, v in d.items() if f"dnsmos_{k}" in names})
    return out


def score_item(item: Item, cfg: EvalConfig, names: tuple[str, ...],
               save_dir: Path | None = None) -> tuple[list[dict], list[str]]:
    """Rows (one per system) and notes for one file; ``save_dir``: also write every signal there
    (for the report's examples)."""
    rate, notes = cfg.sample_rate, []
    reverb = _load(item.reverb, rate, notes)
    clean = _load(item.clean, rate, notes) if item.clean else None
    if clean is not None:
        if not _length_ok(clean, reverb, rate, cfg.max_length_diff_s):
            notes.append(f"{item.reverb}: {reverb.size} samples but its clean file has {clean.size}; skipped")
            return [], notes
        n = min(clean.size, reverb.size)
        clean, reverb = clean[:n], reverb[:n]
    shortest = max(cfg.wpe.n_fft, math.ceil(MIN_SECONDS * rate))  # the baselines' STFT needs a frame
    if reverb.size < shortest:
        notes.append(f"{item.reverb}: {reverb.size} samples at {rate} Hz, too short to score "
                     f"(at least {shortest}); skipped")
        return [], notes
    signals = {}
    for name in cfg.baselines:
        if name in NEEDS_CLEAN and clean is None:
            continue
        signals[name] = run_baseline(name, reverb, clean, cfg.wpe).astype(np.float64)
    for label, path in item.outputs.items():
        est = _load(path, rate, notes)
        if not _length_ok(est, reverb, rate, cfg.max_length_diff_s):
            notes.append(f"{path}: {est.size} samples, the reverberant file {reverb.size}; {label} skips it")
            continue
        signals[label] = np.pad(est[: reverb.size], (0, max(0, reverb.size - est.size)))
    rows = []
    for label, est in signals.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = score(est, clean, rate, names)
        notes += [f"{item.key} [{label}]: {w.message}" for w in caught if "undefined" in str(w.message)]
        rows.append({"file": item.key, "condition": item.condition, "system": label, **values})
    if save_dir is not None:
        _save_example(save_dir, reverb, clean, signals, rate)
    return rows, notes


def _save_example(folder: Path, reverb, clean, signals: dict, rate: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    peak = max(float(np.abs(s).max()) for s in [reverb, *signals.values()] + ([clean] if clean is not None else []))
    gain = 0.9 / peak if peak > 0.9 else 1.0  # one gain for all: loudness stays comparable
    audio.write(folder / "reverb.wav", reverb * gain, rate)
    if clean is not None:
        audio.write(folder / "clean.wav", clean * gain, rate)
    for label, sig in signals.items():
        if label != "unprocessed":
            audio.write(folder / f"{safe_name(label)}.wav", sig * gain, rate)


# --- the whole run -------------------------------------------------------------------------------


def run_model(model: str, items: list[Item], reverb_dir: Path, out_dir: Path,
              shifts: int | None = None) -> tuple[str, Path]:
    """Enhance every reverberant file with ``model`` into ``OUT/enhanced/<label>/``."""
    from .enhance import DEFAULT_SHIFTS, Dereverberator  # lazy: torch and the model only when asked for

    label = "model" if model in ("", "default") else f"model:{Path(model).stem}"
    enhancer = Dereverberator.from_pretrained(model, device="auto", shifts=DEFAULT_SHIFTS if shifts is None else shifts)
    folder = out_dir / "enhanced" / safe_name(label)
    from tqdm import tqdm

    for item in tqdm(items, unit="file", desc=f"enhance ({label})", disable=None):
        dst = folder / Path(item.reverb.relative_to(reverb_dir)).with_suffix(".wav")
        enhancer.enhance_file(item.reverb, dst, overwrite=True)
    return label, folder


def evaluate(reverb_dir: str | Path, out_dir: str | Path, clean_dir: str | Path | None = None,
             systems: dict[str, str | Path] | None = None, model: str | None = None,
             cfg: EvalConfig = EvalConfig(), progress: bool = True) -> EvalResult:
    """Score the baselines, ``model`` and precomputed ``systems`` (label -> folder) on the files of
    ``reverb_dir`` (against ``clean_dir`` when given) and write CSV, markdown and HTML to
    ``out_dir``."""
    reverb_dir, out_dir = Path(reverb_dir), Path(out_dir)
    clean = Path(clean_dir) if clean_dir is not None else None
    dirs = {label: Path(d) for label, d in (systems or {}).items()}
    for label in dirs:
        if label in cfg.baselines or label in ("", "file", "condition"):
            raise DereverbError(f"--system {label}=...: the label is taken; choose another")
    with removed_on_failure([out_dir, *(out_dir / d for d in OUTPUT_AUDIO)], everything=True):
        out_dir.mkdir(parents=True, exist_ok=True)
        items, notes = pair_files(reverb_dir, clean, dirs, exclude=[out_dir / d for d in OUTPUT_AUDIO])
        if model is not None:
            label, folder = run_model(model, items, reverb_dir, out_dir, cfg.shifts)
            items = [dataclasses.replace(it, outputs={**it.outputs, label: folder / Path(
                it.reverb.relative_to(reverb_dir)).with_suffix(".wav")}) for it in items]
            dirs[label] = folder
        names = cfg.metrics or (ALL_METRICS if clean is not None else NON_INTRUSIVE)
        names = tuple(n for n in names if clean is not None or n not in INTRUSIVE)
        examples = _pick_examples(items, cfg)
        rows, more = _run(items, cfg, names, out_dir, examples, progress)
        notes += more
        order = [b for b in cfg.baselines if clean is not None or b not in NEEDS_CLEAN] + list(dirs)
        systems_seen = tuple(s for s in order if any(r["system"] == s for r in rows))
        write_csv(out_dir / "per_file.csv", rows, names)
        result = EvalResult(rows, names, systems_seen, notes, out_dir)
        report.write_all(result, examples)
    return result


def _pick_examples(items: list[Item], cfg: EvalConfig) -> list[str]:
    """Keys of the files shown in the report: one per condition first, seeded."""
    rng = np.random.default_rng(cfg.seed)
    order = [items[i] for i in rng.permutation(len(items))]
    seen: set[str] = set()
    picked: list[str] = []
    for it in order:  # one per condition, then fill up
        if it.condition not in seen:
            seen.add(it.condition)
            picked.append(it.key)
    picked += [it.key for it in order if it.key not in set(picked)]
    return picked[: cfg.examples]


def _run(items, cfg, names, out_dir, examples, progress) -> tuple[list[dict], list[str]]:
    from tqdm import tqdm

    def save(it: Item) -> Path | None:
        return out_dir / "assets" / safe_name(it.key) if it.key in examples else None

    rows, notes = [], []
    bar = tqdm(total=len(items), unit="file", desc="evaluate", disable=None if progress else True)
    if cfg.workers <= 1:
        for it in items:
            r, n = score_item(it, cfg, names, save(it))
            rows += r
            notes += n
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")  # torch/onnxruntime threads do not survive fork
        with ProcessPoolExecutor(cfg.workers, mp_context=ctx) as pool:
            with _one_thread_each():  # workers start inside submit() and read their env then
                futures = [pool.submit(score_item, it, cfg, names, save(it)) for it in items]
            for fut in as_completed(futures):
                r, n = fut.result()
                rows += r
                notes += n
                bar.update()
    bar.close()
    rank = {it.key: i for i, it in enumerate(items)}
    rows.sort(key=lambda r: rank[r["file"]])
    return rows, notes


@contextlib.contextmanager
def _one_thread_each():
    """One BLAS/OpenMP thread per worker process: with a pool already using every core, threaded
    BLAS (nara_wpe's einsums) oversubscribes and runs up to 8x slower."""
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    os.environ.update({k: "1" for k in THREAD_VARS if saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
