"""Simulated rooms: shoebox RIRs from pyroomacoustics' hybrid model (image sources + ray
tracing), the ranges rooms are drawn from, and resumable pools of simulated RIRs on disk.

Every simulated RIR is analysed like a measured one (:func:`dereverb.rooms.analyze`), so it is a
:class:`~dereverb.rooms.Rir` with its measured T30 and DRR; ``meta`` records the room asked for.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import audio
from .config import to_dict
from .errors import DereverbError
from .rooms import Rir, analyze, warn_skipped

SPEED_OF_SOUND = 343.0  # m/s, as pyroomacoustics
SABINE_OVERSHOOT = 1.4  # median (measured T30 / Sabine T60) of pyroomacoustics' hybrid model
POOL_INDEX = "index.tsv"
POOL_META = "pool.json"
_INDEX_FIELDS = ("name", "t60_target", "t30", "drr", "distance", "room", "absorption",
                 "direct_index", "samples", "sample_rate")


# --- one room ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RoomSampler:
    """Ranges simulated rooms are drawn from (uniformly): T60 (s), source-mic distance (m), room
    length/width/height (m).  A room is kept only if the inverse-Sabine absorption it needs for
    the drawn T60 lies in ``absorption`` (above 0.5 the hybrid model turns nearly anechoic once
    calibrated, T30 under 0.1 s for a 0.25 s target) and the distance fits 0.5 m from the walls."""

    t60: tuple[float, float] = (0.2, 2.0)
    distance: tuple[float, float] = (0.5, 4.0)
    length: tuple[float, float] = (3.0, 20.0)
    width: tuple[float, float] = (3.0, 15.0)
    height: tuple[float, float] = (2.4, 6.0)
    absorption: tuple[float, float] = (0.03, 0.5)

    def room_for(self, t60: float, distance: float, rng: np.random.Generator) -> tuple[float, ...]:
        """Room dimensions (m) that can have ``t60`` and hold ``distance``.

        A drawn room whose Sabine absorption falls outside ``absorption`` is scaled (absorption
        is proportional to size) to a random absorption inside it, and kept if still in range.
        """
        lo, hi = np.array([self.length, self.width, self.height]).T
        for _ in range(1000):
            dims = rng.uniform(lo, hi)
            a = sabine_absorption(t60, dims)
            if not self.absorption[0] <= a <= self.absorption[1]:
                dims *= rng.uniform(*self.absorption) / a
            fits = math.hypot(dims[0] - 1.0, dims[1] - 1.0) >= distance * 1.05
            if fits and np.all(dims >= lo) and np.all(dims <= hi):
                return tuple(float(v) for v in dims)
        raise DereverbError(f"no room in the sampler's ranges has T60 {t60:.2f} s and fits {distance:.2f} m")

    def draw(self, rng: np.random.Generator) -> tuple[float, float, tuple[float, ...]]:
        """``(t60, distance, room_size)``."""
        t60 = float(rng.uniform(*self.t60))
        distance = float(rng.uniform(*self.distance))
        return t60, distance, self.room_for(t60, distance, rng)


def sabine_absorption(t60: float, room: Sequence[float]) -> float:
    """Wall absorption coefficient giving ``t60`` s in a shoebox ``room`` (m) by Sabine's formula."""
    lx, ly, lz = room
    volume, surface = lx * ly * lz, 2 * (lx * ly + lx * lz + ly * lz)
    return 24 * math.log(10) * volume / (SPEED_OF_SOUND * surface * t60)


def _place(room: np.ndarray, distance: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Microphone and source positions ``distance`` m apart, 0.5 m from every wall."""
    margin = 0.5
    for _ in range(1000):
        mic = rng.uniform(margin, room - margin)
        mic[2] = rng.uniform(1.0, max(1.0, min(2.0, room[2] - margin)))
        az, el = rng.uniform(0, 2 * math.pi), rng.uniform(-0.35, 0.35)
        src = mic + distance * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        if np.all(src >= margin) and np.all(src <= room - margin):
            return mic, src
    raise DereverbError(f"distance {distance:.2f} m does not fit in room {room.round(2).tolist()}")


def simulate_rir(
    t60: float,
    distance: float,
    sample_rate: int,
    rng: np.random.Generator,
    room_size: tuple | None = None,
    ism_order: int = 3,
    calibrate: int = 2,
) -> Rir:
    """Simulate one shoebox RIR with pyroomacoustics' hybrid model.

    Image sources up to ``ism_order`` give the exact early reflections; ray tracing gives the
    late tail to its full length at a cost that grows with T60, not with order**3 (0.1-0.9 s per
    RIR on one core).  Inverse Sabine overshoots here (measured T30 1.1-2.2x the target, median
    1.45x, over 30 rooms of the default sampler), so absorption starts at
    ``SABINE_OVERSHOOT`` x Sabine's and up to ``calibrate`` reruns rescale it by measured/target
    (at most 2x per rerun) until T30 is within 10 %; the closest attempt is returned.
    ``Rir.t30`` is always the measured value, ``meta["t60_target"]`` what was asked.  Everything
    random (positions, pyroomacoustics' ray noise) comes from ``rng``: same rng state, same RIR.
    """
    room = np.array(room_size or RoomSampler().room_for(t60, distance, rng), dtype=float)
    absorption = sabine_absorption(t60, room)
    if not 0 < absorption < 1:
        raise DereverbError(f"T60 {t60} s is impossible in a {room.tolist()} m room (absorption {absorption:.2f})")
    absorption = min(0.99, absorption * SABINE_OVERSHOOT)
    mic, src = _place(room, distance, rng)
    meta = {"t60_target": t60, "distance": distance, "room": [round(v, 3) for v in room.tolist()],
            "mic": mic.round(3).tolist(), "source": src.round(3).tolist()}
    best = None
    for _ in range(calibrate + 1):
        h = _shoebox(room, absorption, mic, src, sample_rate, ism_order, int(rng.integers(2**63)))
        rir = analyze(h, sample_rate, f"sim_t{t60:.2f}_d{distance:.2f}", dict(meta, absorption=absorption))
        miss = abs(math.log(rir.t30 / t60))
        if best is None or miss < best[0]:
            best = (miss, rir)
        if miss <= math.log(1.1):
            break
        # one noisy estimate must not swing the absorption far: at most x2 per rerun
        absorption = min(0.99, absorption * min(2.0, max(0.5, rir.t30 / t60)))
    return best[1]


def _shoebox(room, absorption, mic, src, sample_rate: int, ism_order: int, seed: int) -> np.ndarray:
    """One pyroomacoustics hybrid (image sources + ray tracing) RIR ``(S,)``.

    Seeds pyroomacoustics' global generators (numpy and its C++ ray tracer) with ``seed``.
    """
    import pyroomacoustics as pra

    pra.random.seed(numpy=seed, libroom=seed)
    sim = pra.ShoeBox(room, fs=sample_rate, materials=pra.Material(absorption), max_order=ism_order,
                      ray_tracing=True, air_absorption=False)
    sim.set_ray_tracing(receiver_radius=0.5)
    sim.add_source(src)
    sim.add_microphone(mic)
    sim.compute_rir()
    return np.asarray(sim.rir[0][0])


# --- pools of simulated RIRs on disk -----------------------------------------------------------


def _read_index(folder: Path) -> dict[str, dict]:
    path = folder / POOL_INDEX
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f, delimiter="\t")}


def _write_index(folder: Path, rows: dict[str, dict]) -> None:
    with audio.atomic_path(folder / POOL_INDEX) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, _INDEX_FIELDS, delimiter="\t", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows[k] for k in sorted(rows))


def _index_row(name: str, rir: Rir) -> dict[str, Any]:
    m = rir.meta
    return {"name": name, "t60_target": f"{m['t60_target']:.4f}", "t30": f"{rir.t30:.4f}",
            "drr": f"{rir.drr:.3f}", "distance": f"{m['distance']:.3f}",
            "room": "x".join(f"{v:.2f}" for v in m["room"]), "absorption": f"{m['absorption']:.4f}",
            "direct_index": rir.direct_index, "samples": len(rir.audio), "sample_rate": rir.sample_rate}


def simulate_pool(
    count: int,
    out_dir: str | Path,
    seed: int,
    sample_rate: int = 16000,
    sampler: RoomSampler = RoomSampler(),
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Simulate ``count`` RIRs into ``out_dir``: ``sim_NNNNN.wav`` (float) + ``index.tsv``.

    Resumable: RIR ``i`` draws its room from ``default_rng([seed, i])``; a rerun skips RIRs already
    in the index, so an interrupted run continues and a larger ``count`` extends the pool.  Each
    file and the index are written atomically, the index after each file.  ``pool.json`` records
    the settings; a rerun with other settings is refused.  ``progress(done, count)`` is called
    after each RIR.  Returns the index rows.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"seed": seed, "sample_rate": sample_rate, "sampler": to_dict(sampler)}
    meta_path = out / POOL_META
    old = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if old and {k: old.get(k) for k in settings} != settings:
        raise DereverbError(f"{out}: pool made with other settings ({old}); use another folder")
    if not old or old.get("count", 0) < count:  # the size this pool is meant to reach
        with audio.atomic_path(meta_path) as tmp:
            tmp.write_text(json.dumps({**settings, "count": count}, indent=1))
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    rows = _read_index(out)
    for i in range(count):
        name = f"sim_{i:05d}"
        if name not in rows or not (out / f"{name}.wav").is_file():
            rng = np.random.default_rng([seed, i])
            t60, distance, room = sampler.draw(rng)
            rir = simulate_rir(t60, distance, sample_rate, rng, room)
            audio.write(out / f"{name}.wav", rir.audio, sample_rate, subtype="FLOAT")
            rows[name] = _index_row(name, rir)
            _write_index(out, rows)
        if progress:
            progress(i + 1, count)
    return [rows[f"sim_{i:05d}"] for i in range(count)]


def pool_size(folder: str | Path) -> int:
    """RIRs in the pool's index (0 where there is no pool)."""
    return len(_read_index(Path(folder)))


def load_pool(folder: str | Path, sample_rate: int | None = None, strict: bool = False) -> list[Rir]:
    """Load a pool written by :func:`simulate_pool`, resampled to ``sample_rate`` if given."""
    folder = Path(folder)
    rows = _read_index(folder)
    if not rows:
        raise DereverbError(f"{folder}: no RIR pool here (no {POOL_INDEX}); create one with `dereverb rirs simulate`")
    meta_path = folder / POOL_META
    planned = json.loads(meta_path.read_text()).get("count", 0) if meta_path.is_file() else 0
    if len(rows) < planned:
        warnings.warn(f"{folder}: RIR pool incomplete ({len(rows)} of {planned}): still being simulated or "
                      "interrupted; rerun `dereverb rirs simulate` to finish it", stacklevel=2)
    rirs, bad = [], []
    for name, row in rows.items():
        try:
            x, rate = audio.read(folder / f"{name}.wav")
        except DereverbError as e:
            bad.append(str(e))
            continue
        d, h = int(row["direct_index"]), x[0]
        if sample_rate and sample_rate != rate:
            d, h = int(round(d * sample_rate / rate)), audio.resample(h, rate, sample_rate)
            lo = max(0, min(d, len(h) - 1) - 2)
            d = lo + int(np.argmax(np.abs(h[lo : lo + 5])))  # the peak moves by a sample at most
            h, rate = h / h[d], sample_rate
        meta = {k: row[k] for k in ("t60_target", "distance", "room", "absorption")}
        rirs.append(Rir(h.astype(np.float32), rate, name, d, float(row["t30"]), float(row["drr"]), meta))
    warn_skipped(bad, strict, f"RIR file(s) in pool {folder}")
    return rirs
