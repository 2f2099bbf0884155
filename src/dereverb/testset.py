"""``dereverb make-testset``: a paired reverberant/clean test set with one condition per room.

Layout written to ``OUT``::

    reverb/<condition>/<utterance>.wav   the reverberant input
    clean/<condition>/<utterance>.wav    the target (direct path by default), aligned sample for sample
    rirs/<condition>.wav                 the RIR of that condition (float WAV)
    conditions.csv                       file, condition, t60_target, distance, rir, t30, drr, speech
    testset.json                         the settings, for the record

Conditions are either REVERB-challenge-like simulated rooms (Kinoshita et al. 2016: T60 0.25 /
0.5 / 0.7 s x a near 0.5 m and a far 2 m source, by default), or one per measured RIR file.
Everything is drawn from ``seed`` (utterances, rooms, positions, and through
``simulate.simulate_rir`` pyroomacoustics' own generators).  Simulated RIRs are also saved in
``rirs/`` and a rerun into the same folder reuses them, so a rerun is fast and rebuilds the set
identically even under another pyroomacoustics version.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np

from . import audio
from .config import to_dict
from .errors import DereverbError
from .outputs import removed_on_failure

PEAK = 0.9  # each pair is scaled by one gain so the louder of the two peaks here


@dataclasses.dataclass(frozen=True)
class TestsetConfig:
    """``t60s`` (s) x ``distances`` (name, m) for simulated rooms; ``per_condition``: utterances
    drawn for each condition (0: all); ``max_seconds``: crop longer utterances (0: keep)."""

    t60s: tuple[float, ...] = (0.25, 0.5, 0.7)
    distances: tuple[tuple[str, float], ...] = (("near", 0.5), ("far", 2.0))
    per_condition: int = 0
    max_seconds: float = 0.0
    sample_rate: int = 16000
    target: str = "direct"
    seed: int = 0


def _simulated(cfg: TestsetConfig, out: Path, rng: np.random.Generator) -> list[tuple[str, object]]:
    from . import rooms, simulate

    conditions = []
    for t60 in cfg.t60s:
        for name, distance in cfg.distances:
            cond = f"t60_{t60:.2f}_{name}"
            saved = out / "rirs" / f"{cond}.wav"
            room_rng = np.random.default_rng(rng.integers(2**63))  # drawn even when reused
            if not saved.is_file():
                sim = simulate.simulate_rir(t60, distance, cfg.sample_rate, room_rng)
                audio.write(saved, sim.audio, cfg.sample_rate, subtype="FLOAT")
            # first run and reruns both build the set from the saved file: identical results
            h, _ = audio.read(saved, cfg.sample_rate)
            rir = rooms.analyze(h[0], cfg.sample_rate, cond, {"t60_target": t60, "distance": distance})
            conditions.append((cond, rir))
    return conditions


def _measured(folder: Path, cfg: TestsetConfig, out: Path) -> list[tuple[str, object]]:
    from . import rooms

    conditions = []
    for rir in rooms.load_rirs([folder], cfg.sample_rate):
        cond = "".join(c if c.isalnum() or c in "-_." else "_" for c in rir.name)
        audio.write(out / "rirs" / f"{cond}.wav", rir.audio, cfg.sample_rate, subtype="FLOAT")
        conditions.append((cond, rir))
    return conditions


def make_testset(speech: str | Path, rirs: str | Path, out: str | Path,
                 cfg: TestsetConfig = TestsetConfig(), progress: bool = True) -> list[dict]:
    """Build the test set in ``out`` from the speech files under ``speech`` and either measured
    RIRs (a file or folder) or ``rirs="simulate"``; returns the rows of ``conditions.csv``.  A run
    that fails removes the folders it created, with what they hold."""
    out = Path(out)
    utterances = audio.list_audio(speech, audio.READ_SUFFIXES, warn_foreign=True)
    if not utterances:
        raise DereverbError(f"{speech}: no speech files (make-testset reads {', '.join(audio.READ_SUFFIXES)})")
    with removed_on_failure([out / "rirs", out / "reverb", out / "clean"], everything=True):
        return _make(utterances, speech, rirs, out, cfg, progress)


def _make(utterances: list[Path], speech, rirs, out: Path, cfg: TestsetConfig, progress: bool) -> list[dict]:
    from tqdm import tqdm

    from . import rooms

    rng = np.random.default_rng(cfg.seed)
    (out / "rirs").mkdir(parents=True, exist_ok=True)
    conditions = (_simulated(cfg, out, rng) if str(rirs) == "simulate"
                  else _measured(Path(rirs), cfg, out))
    draws = _draws(utterances, len(conditions), cfg, rng)
    jobs = [(cond, rir, path) for (cond, rir), drawn in zip(conditions, draws) for path in drawn]
    for path in dict.fromkeys(p for _, _, p in jobs):  # every header checked before a pair is written
        if truncated := audio.info(path).truncated:
            warnings.warn(truncated, stacklevel=3)
    rows = []
    for cond, rir, path in tqdm(jobs, unit="file", desc="make-testset", disable=None if progress else True):
        dry = audio.to_mono(audio.read(path, cfg.sample_rate)[0])[0]
        if cfg.max_seconds > 0:
            dry = dry[: int(cfg.max_seconds * cfg.sample_rate)]
        rev, tgt = rooms.reverberate(dry, rir, cfg.target)
        peak = max(float(np.abs(rev).max()), float(np.abs(tgt).max()))
        gain = PEAK / peak if peak > 0 else 1.0
        rel = f"{cond}/{path.stem}.wav"
        for kind, sig in (("reverb", rev), ("clean", tgt)):
            (out / kind / cond).mkdir(parents=True, exist_ok=True)
            audio.write(out / kind / rel, sig * gain, cfg.sample_rate, subtype="PCM_24")
        rows.append({"file": rel, "condition": cond, "t60_target": rir.meta.get("t60_target", ""),
                     "distance": rir.meta.get("distance", ""), "rir": rir.name, "t30": round(rir.t30, 3),
                     "drr": round(rir.drr, 2), "speech": str(path), "seconds": round(dry.size / cfg.sample_rate, 3)})
    _write_csv(out / "conditions.csv", rows)
    meta = {"config": to_dict(cfg), "speech": str(speech), "rirs": str(rirs), "files": len(rows)}
    with audio.atomic_path(out / "testset.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return rows


def _draws(utterances: list[Path], conditions: int, cfg: TestsetConfig,
           rng: np.random.Generator) -> list[list[Path]]:
    """The utterances of each condition: all, or ``per_condition`` each, dealt in turn from one
    shuffled order, so no utterance is used twice in a condition and each is used as often as
    any other, give or take one (4 files over 6 one-file conditions: each once or twice)."""
    n, k = len(utterances), cfg.per_condition
    if k <= 0 or k >= n:
        return [list(utterances)] * conditions
    order = rng.permutation(n)
    return [[utterances[i] for i in sorted(order[(c * k + np.arange(k)) % n])] for c in range(conditions)]


def _write_csv(path: Path, rows: list[dict]) -> None:
    with audio.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["file", "condition"])
        w.writeheader()
        w.writerows(rows)
