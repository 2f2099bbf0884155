"""The demo behind ``make demo``: dereverberate the bundled examples and show the result.

Two cases, both real audio shipped in ``examples/`` (see examples/ATTRIBUTION.md):

1. ``church``: LibriSpeech speech convolved with a measured church RIR (St. Margaret's, York,
   T30 ~1.3 s, held out from training); the clean reference is its direct path.
2. ``room``: a real 44.1 kHz 8-microphone recording of a loudspeaker in a room (with a noise masker),
   processed at its own rate and channel count through resampling; the reference is the dry
   source, aligned by cross-correlation.

For each, the unprocessed input, single-channel WPE (nara_wpe), dereverb and the WPE + dereverb
cascade (`dereverb enhance --wpe`) are scored with the metrics of
:mod:`dereverb.metrics`; WAVs and a before/after spectrogram PNG are written to the output folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import audio, baselines, metrics, rooms
from .errors import DereverbError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RATE = 16000
INTRUSIVE = ("pesq", "estoi", "cepstral_distance", "llr", "fwsegsnr", "si_sdr")
COLUMNS = INTRUSIVE + ("srmr",)


def score(est: np.ndarray, ref: np.ndarray, rate: int) -> dict[str, float]:
    """Every demo metric of ``est (S,)`` against ``ref (S,)`` at ``rate`` Hz."""
    out = {name: float(getattr(metrics, name)(ref, est, rate)) for name in INTRUSIVE if name != "si_sdr"}
    out["si_sdr"] = float(metrics.si_sdr(ref, est))
    out["srmr"] = float(metrics.srmr(est, rate))
    return out


def church_case(examples: Path = EXAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """``(reverberant, clean)`` ``(S,)`` at 16 kHz: bundled speech x the bundled church RIR."""
    dry, _ = audio.read(examples / "speech_1688-142285-0003.flac", sample_rate=RATE, channel=0)
    (rir,) = rooms.load_rirs([examples / "rir_st_margarets_church.wav"], RATE, channels="first")
    return rooms.reverberate(dry[0], rir, target="direct")


def _xcorr(ref: np.ndarray, x: np.ndarray, max_lag: int) -> np.ndarray:
    """``|xcorr|`` of ``x`` against ``ref`` at lags ``0..max_lag`` (playback only delays)."""
    from scipy import signal

    corr = signal.correlate(x, ref, mode="full", method="fft")
    return np.abs(corr[len(ref) - 1 : len(ref) + max_lag])


def correlations(ref: np.ndarray, x: np.ndarray, max_lag: int) -> list[float]:
    """Peak normalised cross-correlation of each channel of ``x (C, S)`` with ``ref (S,)``."""
    return [float(_xcorr(ref, ch, max_lag).max() / (np.linalg.norm(ch) * np.linalg.norm(ref) + 1e-12)) for ch in x]


def best_channel(ref: np.ndarray, x: np.ndarray, max_lag: int) -> int:
    """The channel of ``x (C, S)`` most correlated with ``ref (S,)`` (skips dead microphones)."""
    return int(np.argmax(correlations(ref, x, max_lag)))


def align(ref: np.ndarray, x: np.ndarray, max_lag: int) -> np.ndarray:
    """``ref`` shifted (zero filled) to line up with ``x`` by the cross-correlation peak."""
    lag = int(np.argmax(_xcorr(ref, x, max_lag)))
    out = np.zeros_like(x)
    n = min(len(x) - lag, len(ref))
    out[lag : lag + n] = ref[:n]
    return out


def room_case(examples: Path = EXAMPLES) -> tuple[Path, np.ndarray]:
    """The real 8-channel recording's path and its dry source ``(S,)`` at the recording's rate."""
    path = examples / "xmas_room_recording_8ch.wav"
    dry, _ = audio.read(examples / "xmas_dry_source.wav", channel=0)
    return path, dry[0]


def run(out_dir: str | Path, enhancer: Callable | None = None, log: Callable[[str], None] = print) -> dict:
    """Run both demo cases into ``out_dir``; returns ``{case: {system: metrics}}``.

    ``enhancer`` is a :class:`dereverb.Dereverberator` (default: the bundled model).
    """
    from .enhance import Dereverberator

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = enhancer or Dereverberator.from_pretrained()
    cascade = (Dereverberator(d.model, d.device, chunk=d.chunk, wpe=baselines.WpeConfig(), shifts=d.shifts)
               if d.backend == "torch" and d.model.feature_config.frontend == "none" else None)  # enhance --wpe
    results: dict[str, dict[str, dict[str, float]]] = {}

    reverb, clean = church_case()
    systems = {"unprocessed": reverb, "wpe": baselines.wpe(reverb), "dereverb": d(reverb, RATE)}
    if cascade is not None:
        systems["wpe+dereverb"] = cascade(reverb, RATE)
    for name, y in {**systems, "clean": clean}.items():
        audio.write(out / f"church_{name}.wav", y, RATE, subtype="PCM_16")
    results["church (measured RIR, held out)"] = {k: score(y, clean, RATE) for k, y in systems.items()}
    spectrogram_figure(out / "church_spectrograms.png", {**systems, "clean (direct path)": clean}, RATE)

    path, dry = room_case()
    rate = audio.info(path).sample_rate
    enhanced = out / "room_dereverb.wav"
    d.enhance_file(path, enhanced, overwrite=True)
    log(f"wrote {enhanced} ({audio.info(enhanced).channels} channels at {rate} Hz, as the input)")
    mics, _ = audio.read(path, sample_rate=RATE)
    dry = audio.resample(dry, rate, RATE)
    ch = best_channel(dry, mics, max_lag=RATE // 2)  # two of the eight microphones are dead
    ours, _ = audio.read(enhanced, sample_rate=RATE, channel=ch)
    ref = align(dry, mics[ch], max_lag=RATE // 2)
    room = {"unprocessed": mics[ch], "wpe": baselines.wpe(mics[ch]), "dereverb": ours[0]}
    if cascade is not None:
        room["wpe+dereverb"] = cascade(mics[ch], RATE)
    audio.write(out / f"room_mic{ch}_wpe.wav", room["wpe"], RATE, subtype="PCM_16")
    results[f"room (real 8-mic recording, mic {ch})"] = {k: score(y, ref, RATE) for k, y in room.items()}
    spectrogram_figure(out / "room_spectrograms.png", {**room, "dry source (aligned)": ref}, RATE)
    log(table(results))
    return results


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Plain-text table of the demo metrics, one block per case."""
    lines = []
    head = f"{'system':<12}" + "".join(f"{c:>19}" for c in COLUMNS)
    for case, rows in results.items():
        lines += ["", case, head]
        for system, m in rows.items():
            lines.append(f"{system:<12}" + "".join(f"{m[c]:>19.3f}" for c in COLUMNS))
    lines.append("\nbetter: pesq, estoi, fwsegsnr, si_sdr, srmr higher; cepstral_distance, llr lower")
    return "\n".join(lines)


def spectrogram_figure(path: Path, signals: dict[str, np.ndarray], rate: int) -> None:
    """One PNG with the dB spectrograms of ``signals`` (each ``(S,)``) stacked, same colour scale."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import stft_db

    specs = {k: stft_db(v, rate) for k, v in signals.items()}
    fig, axes = plt.subplots(len(specs), 1, figsize=(8, 2.0 * len(specs)), sharex=True)
    for ax, (name, (f, t, db)) in zip(np.atleast_1d(axes), specs.items()):
        vmax = float(db.max())  # each panel on its own 80 dB range: levels differ
        ax.pcolormesh(t, f / 1000, db, vmin=vmax - 80, vmax=vmax, shading="auto", cmap="magma")
        ax.set_ylabel("kHz")
        ax.set_title(name, fontsize=10, loc="left")
    np.atleast_1d(axes)[-1].set_xlabel("seconds")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    with audio.atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def check_examples(examples: Path = EXAMPLES) -> None:
    """Fail clearly if the bundled example files are missing (e.g. an installed wheel)."""
    if not (examples / "speech_1688-142285-0003.flac").is_file():
        raise DereverbError(f"{examples}: the bundled examples are missing; run the demo from a clone")
