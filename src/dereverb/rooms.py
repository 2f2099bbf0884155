"""Room impulse responses: measured ones loaded and analysed, simulated ones from pyroomacoustics,
pools of simulated RIRs on disk, and the reverberant/target pairs built from them.

Every RIR becomes a :class:`Rir`: mono float32 at the working rate, trimmed to start 2.5 ms before
its direct path, scaled so the direct-path peak is +1, tail cut where the decay meets the noise
floor, with T30 (Schroeder backward integration, ISO 3382 fit from -5 to -35 dB, T20 when the
decay is too short) and DRR (direct path +-2.5 ms against everything after it) measured on it.

Targets (:func:`reverberate`): ``"direct"`` keeps the direct path +-2.5 ms of the RIR (as in
WSJ0-REVERB), ``"early"`` the direct path and the next 50 ms, ``"dry"`` the dry signal delayed to
the direct path.  Input and target share the RIR's delay, so they are aligned sample for sample.
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
from scipy import signal

from . import audio
from .config import to_dict
from .errors import DereverbError

DIRECT_MS = 2.5  # half width of the direct-path window
EARLY_MS = 50.0  # early reflections kept by the "early" target
TARGETS = ("direct", "early", "dry")
SPEED_OF_SOUND = 343.0  # m/s, as pyroomacoustics
SABINE_OVERSHOOT = 1.4  # median (measured T30 / Sabine T60) of pyroomacoustics' hybrid model
POOL_INDEX = "index.tsv"
POOL_META = "pool.json"
_INDEX_FIELDS = ("name", "t60_target", "t30", "drr", "distance", "room", "absorption",
                 "direct_index", "samples", "sample_rate")


@dataclasses.dataclass(frozen=True, eq=False)
class Rir:
    """One analysed RIR.

    ``audio``: ``(S,)`` float32 with ``audio[direct_index] == 1``; ``t30`` in s, ``drr`` in dB;
    ``meta``: provenance (file, channel, or simulated room, T60 asked for, distance, ...).
    """

    audio: np.ndarray
    sample_rate: int
    name: str
    direct_index: int
    t30: float
    drr: float
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.audio) / self.sample_rate


# --- analysis ----------------------------------------------------------------------------------


def _ms(sample_rate: int, ms: float) -> int:
    return int(round(ms * 1e-3 * sample_rate))


def find_direct(h: np.ndarray) -> int:
    """Sample index of the direct path in ``h`` ``(S,)``.

    The first local peak reaching half the global peak: a strong early reflection can exceed a
    far source's direct sound, but it never arrives before it.
    """
    mag = np.abs(h)
    first = int(np.argmax(mag >= 0.5 * mag.max()))
    stop = min(len(h), first + 16)  # the peak of that arrival lies within a millisecond
    return first + int(np.argmax(mag[first:stop]))


def tail_end(h: np.ndarray, sample_rate: int, start: int) -> tuple[int, float]:
    """Where the decay of ``h`` after ``start`` meets the noise floor (a one-pass Lundeby 1995).

    Energy in 10 ms blocks (dB); the noise floor is the mean of the last tenth; a line fitted from
    the peak down to 10 dB above that floor crosses the floor at the returned sample.
    Returns ``(end_sample, decay_range_db)``: the range from the peak block to the floor.
    """
    block = max(1, _ms(sample_rate, 10))
    n = (len(h) - start) // block
    if n < 10:
        return len(h), 0.0
    energy = (h[start : start + n * block].astype(np.float64) ** 2).reshape(n, block).mean(axis=1)
    env = 10 * np.log10(energy + 1e-30)
    noise = 10 * np.log10(energy[-max(1, n // 10) :].mean() + 1e-30)
    top = int(np.argmax(env))
    below = np.nonzero(env[top:] < noise + 10)[0]
    stop = top + (int(below[0]) if below.size else n - top)
    if stop - top < 3:
        return len(h), float(env[top] - noise)
    slope, icpt = np.polyfit(np.arange(top, stop), env[top:stop], 1)
    if slope >= 0:
        return len(h), float(env[top] - noise)
    cross = (noise - icpt) / slope
    return int(min(len(h), start + max(stop, cross) * block)), float(env[top] - noise)


def schroeder_db(h: np.ndarray) -> np.ndarray:
    """Energy decay curve (Schroeder 1965 backward integration) of ``(S,)``, dB re its start."""
    edc = np.cumsum((h.astype(np.float64) ** 2)[::-1])[::-1]
    return 10 * np.log10(edc / max(edc[0], 1e-300) + 1e-300)


def decay_time(h: np.ndarray, sample_rate: int, decay_range: float = math.inf) -> tuple[float, str]:
    """Reverberation time (s) of ``h`` ``(S,)`` starting at the direct path (ISO 3382-1).

    Least-squares line on the Schroeder curve from -5 to -35 dB, extrapolated to -60 dB (T30);
    T30 needs the decay to span ``decay_range`` >= 45 dB above the noise floor, else the fit runs
    from -5 to -25 dB (T20, needs 35 dB).  Returns ``(seconds, "T30"|"T20")``, or ``(nan, "")``.
    """
    edc = schroeder_db(h)
    for low, kind in ((-35.0, "T30"), (-25.0, "T20")):
        if edc.min() > low or decay_range < -low + 10:
            continue
        sel = np.nonzero((edc <= -5.0) & (edc >= low))[0]
        sel = sel[: np.argmax(np.diff(sel, append=sel[-1] + 2) > 1) + 1]  # first contiguous run
        if len(sel) < 4:
            continue
        step = max(1, len(sel) // 4000)
        slope = np.polyfit(sel[::step] / sample_rate, edc[sel[::step]], 1)[0]
        if slope < 0:
            return float(-60.0 / slope), kind
    return float("nan"), ""


def direct_to_reverberant(h: np.ndarray, direct_index: int, sample_rate: int) -> float:
    """DRR in dB: energy of the direct path +-2.5 ms over the energy after that window."""
    w = _ms(sample_rate, DIRECT_MS)
    e = h.astype(np.float64) ** 2
    direct = e[max(0, direct_index - w) : direct_index + w + 1].sum()
    late = e[direct_index + w + 1 :].sum()
    return float(10 * np.log10(direct / max(late, 1e-30)))


def is_clipped(h: np.ndarray) -> bool:
    """True if the peak of ``(S,)`` sits at full scale for 3 or more consecutive samples."""
    mag = np.abs(h)
    peak = mag.max()
    run = np.convolve(mag >= peak * (1 - 1e-4), np.ones(3), "valid")
    return bool(peak >= 0.99 and run.size and run.max() >= 3)


def analyze(h: np.ndarray, sample_rate: int, name: str, meta: dict | None = None) -> Rir:
    """Turn a raw mono RIR ``(S,)`` into a :class:`Rir` (trim, scale, cut, measure).

    Raises :class:`DereverbError` for silent, clipped, non-finite or too-short RIRs.
    """
    h = np.asarray(h, dtype=np.float64)
    if not np.isfinite(h).all():
        raise DereverbError(f"{name}: RIR contains NaN or infinite samples")
    peak = np.abs(h).max() if h.size else 0.0
    if peak < 1e-6:
        raise DereverbError(f"{name}: RIR is silent")
    if is_clipped(h):
        raise DereverbError(f"{name}: RIR is clipped (flat peak at full scale)")
    d = find_direct(h)
    lead = min(d, _ms(sample_rate, DIRECT_MS))
    h = h[d - lead :] / h[d]  # direct path now at `lead`, value +1
    end, decay_range = tail_end(h, sample_rate, lead)
    h = h[:end].copy()
    fade = min(_ms(sample_rate, 5), max(0, end - lead - 1))
    if fade:
        h[-fade:] *= np.hanning(2 * fade)[fade:]
    if len(h) - lead < _ms(sample_rate, 20):
        raise DereverbError(f"{name}: RIR too short (under 20 ms after the direct path)")
    t, kind = decay_time(h[lead:], sample_rate, decay_range)
    if not math.isfinite(t):
        raise DereverbError(f"{name}: RIR decays only {decay_range:.0f} dB above its noise floor (35 needed)")
    info = dict(meta or {}, decay_fit=kind, direct_in_file=d)
    drr = direct_to_reverberant(h, lead, sample_rate)
    return Rir(h.astype(np.float32), sample_rate, name, lead, t, drr, info)


# --- measured RIRs -----------------------------------------------------------------------------


def warn_skipped(bad: list[str], strict: bool, what: str) -> None:
    """Report the ``bad`` inputs (one reason each) in one warning, or one error if ``strict``."""
    if not bad:
        return
    if strict:
        raise DereverbError(f"{len(bad)} bad {what}: " + "; ".join(bad))
    warnings.warn(f"skipped {len(bad)} bad {what}: " + "; ".join(bad), stacklevel=3)


def load_rirs(
    paths: Sequence[str | Path], sample_rate: int, channels: str = "first", strict: bool = False
) -> list[Rir]:
    """Load measured RIR files (or folders of them, recursive) at ``sample_rate`` Hz.

    ``channels``: ``"first"`` (channel 0) or ``"all"`` (each channel its own RIR, named
    ``stem:chN``).  Bad files are listed in one warning and skipped (``strict``: an error).
    """
    if channels not in ("first", "all"):
        raise DereverbError(f"rir channels must be 'first' or 'all', got {channels!r}")
    files = [f for p in paths for f in audio.list_audio(p)]
    rirs, bad = [], []
    for f in files:
        try:
            x, rate = audio.read(f, channel=0 if channels == "first" else None)
        except DereverbError as e:
            bad.append(str(e))
            continue
        for c, h in enumerate(x):
            name = f.stem if len(x) == 1 else f"{f.stem}:ch{c}"
            try:
                if is_clipped(h):  # before resampling smooths the flat top away
                    raise DereverbError(f"{name}: RIR is clipped (flat peak at full scale)")
                h = audio.resample(h, rate, sample_rate)
                rirs.append(analyze(h, sample_rate, name, {"file": str(f), "channel": c}))
            except DereverbError as e:
                bad.append(f"{f}{'' if len(x) == 1 else f' ch{c}'}: {str(e).removeprefix(name + ': ')}")
    warn_skipped(bad, strict, "RIR file(s)")
    if not rirs:
        raise DereverbError(f"no usable RIR in {', '.join(map(str, paths))}")
    return rirs


# --- simulation --------------------------------------------------------------------------------


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


# --- reverberant / target pairs ----------------------------------------------------------------


def target_kernel(rir: Rir, target: str = "direct") -> tuple[np.ndarray, int]:
    """The part of the RIR a target keeps: ``(kernel, offset)`` with ``kernel = h[offset:...]``."""
    d, sr = rir.direct_index, rir.sample_rate
    w = _ms(sr, DIRECT_MS)
    if target == "direct":
        return rir.audio[max(0, d - w) : d + w + 1], max(0, d - w)
    if target == "early":
        return rir.audio[max(0, d - w) : d + _ms(sr, EARLY_MS) + 1], max(0, d - w)
    if target == "dry":
        return np.ones(1, dtype=np.float32), d
    raise DereverbError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")


def with_drr(rir: Rir, drr_db: float) -> Rir:
    """The RIR rescaled outside its direct-path window (+-2.5 ms) so its DRR is ``drr_db``.

    Data augmentation after Bryan (ICASSP 2020, "Impulse response data augmentation"): a room's
    tail with a louder direct path is the same room heard from closer, so a pool simulated at
    0.5-4 m (DRR mostly below 0 dB) also teaches near-field input (DRR +5 to +15 dB), the case
    where an untaught model over-processes.  The direct path stays at 1, so the target does not
    change, nor does the tail's decay rate (T30).
    """
    d, w = rir.direct_index, _ms(rir.sample_rate, DIRECT_MS)
    now = direct_to_reverberant(rir.audio, d, rir.sample_rate)
    if now > 200:  # no tail to rescale (an anechoic RIR)
        return rir
    gain = 10.0 ** ((now - drr_db) / 20.0)
    h = rir.audio.copy()
    h[: max(0, d - w)] *= gain
    h[d + w + 1 :] *= gain
    return dataclasses.replace(rir, audio=h, drr=float(drr_db),
                               meta={**rir.meta, "drr_from": now})


def reverberate(dry: np.ndarray, rir: Rir, target: str = "direct") -> tuple[np.ndarray, np.ndarray]:
    """Convolve ``dry`` ``(S,)`` with the RIR: returns ``(reverberant, target)``, both ``(S,)``.

    Both carry the delay of the direct path (``rir.direct_index`` samples), so they line up sample
    for sample; the reverberant tail past ``S`` is dropped.
    """
    x = np.asarray(dry, dtype=np.float32)
    n = len(x)
    kernel, offset = target_kernel(rir, target)
    rev = signal.oaconvolve(x, rir.audio)[:n]
    tgt = np.zeros(n, dtype=np.float32)
    if offset < n:
        tgt[offset:] = signal.oaconvolve(x, kernel)[: n - offset]
    return rev.astype(np.float32), tgt
