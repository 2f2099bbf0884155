"""The storage question, measured: how should spectrogram pairs be kept for training?

On the same ~10 minutes of LibriSpeech (../shared/data/speech/train) reverberated with the six
training RIRs, compares
  (a) RGB PNG images of dB spectrograms through a colormap (matplotlib's magma, each image
      scaled from its own min to max: the usual "spectrogram image"),
  (b) one .npy file per spectrogram (float32 magnitude),
  (c) dereverb's feature store (``dereverb prepare``: dB in 0.1 dB steps, compressed shards),
  (d) no storage: on the fly from the FLAC speech + RIRs (the training default),
and prints for each: bytes per second of audio (against the same reverberant + clean audio as
16-bit FLAC), random 2 s crop batches per second (16 crops of 256 frames, reverb + clean
magnitudes; RGB tensors for the PNGs, as option (a) trains on them) with 0 and 2 DataLoader
workers, and fidelity: the SNR of the reverberant audio
rebuilt from the stored form with the exact reverberant phase, against the audio rebuilt from the
exact magnitude (the PNG at its best: its min/max kept beside it, which most pipelines forget).
Then the store's settings side by side (dB step ``quant_db`` x codec): size, fidelity and random
2 s crops per second served from one process (float32 magnitudes, what training consumes), and
the two targets of issue 3 (size <= 2.5x the FLAC, >= 1000 crops/s).

    python benchmarks/storage.py                 # ~2-3 minutes on 2 cores
    python benchmarks/storage.py --backends      # also HDF5 / zarr / .npy memmap layouts
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset

from dereverb import audio, data, rooms, shards, spectral, store
from dereverb.config import StftConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN_RIRS = ("openair__genesis6_live_room_pmc", "openair__toob_Genesis_6_Studio_Live_Room", "openair__qv_large_church",
              "openair__qv_medium_chamber", "openair__qv_medium_hall", "freesound__peter1955_colmar_basement_clap")
STFT = StftConfig()
FRAMES, BATCH = 256, 16
SETTINGS = ((0.0, "lz4hc"), (0.0, "zstd"), (0.05, "lz4hc"), (0.05, "zstd"), (0.1, "lz4hc"), (0.1, "zstd"))  # (quant_db, codec)
DEFAULT = (store.StoreConfig.quant_db, store.StoreConfig.codec)


def flac_bytes(x: np.ndarray) -> int:
    buf = io.BytesIO()
    sf.write(buf, x, STFT.sample_rate, format="FLAC", subtype="PCM_16")
    return len(buf.getvalue())


def make_corpus(seconds: float, work: Path):
    """Pairs (reverb, clean) of whole utterances; also written as float WAV folders for the store."""
    utts = sorted(data.scan_speech([SHARED / "speech" / "train" / "librispeech"]), key=lambda u: u.path)
    rirs = rooms.load_rirs([SHARED / "rir" / f"{n}.wav" for n in TRAIN_RIRS], STFT.sample_rate)
    rng = np.random.default_rng(0)
    pairs, total, flac = [], 0.0, {"clean": 0, "pair": 0}
    for d in ("clean", "reverb"):
        (work / "pairs" / d).mkdir(parents=True)
    for u in utts:
        x = audio.read(u.path, STFT.sample_rate)[0][0]
        reverb, clean = rooms.reverberate(x, rirs[rng.integers(len(rirs))])
        gain = np.sqrt(np.mean(x**2) / np.mean(clean**2))  # the clean target keeps the speech's level
        gain = min(gain, 0.99 / max(np.abs(reverb).max(), np.abs(clean).max()))
        reverb, clean = reverb * gain, clean * gain
        name = Path(u.path).stem
        audio.write(work / "pairs" / "clean" / f"{name}.wav", clean, STFT.sample_rate, subtype="FLOAT")
        audio.write(work / "pairs" / "reverb" / f"{name}.wav", reverb, STFT.sample_rate, subtype="FLOAT")
        pairs.append((name, reverb, clean))
        flac["clean"] += Path(u.path).stat().st_size
        flac["pair"] += flac_bytes(reverb) + flac_bytes(clean)
        total += len(x) / STFT.sample_rate
        if total >= seconds:
            break
    return pairs, total, flac, [Path(u.path) for u in utts[: len(pairs)]], rirs


def exact(wave: np.ndarray) -> torch.Tensor:
    """Complex STFT ``(F, T)`` in float64."""
    return spectral.Stft(STFT).double()(torch.from_numpy(wave.astype(np.float64)))


def fidelity_db(mag: np.ndarray, reverb: np.ndarray) -> float:
    """SNR (dB) of audio rebuilt from ``mag`` with the exact reverberant phase."""
    spec = exact(reverb)
    stft = spectral.Stft(STFT).double()
    ref = stft.inverse(spec, len(reverb))
    est = stft.inverse(spectral.with_phase(torch.from_numpy(mag.astype(np.float64)), spec), len(reverb))
    err = float(((ref - est) ** 2).sum())
    return float("inf") if err == 0 else 10 * np.log10(float((ref**2).sum()) / err)


def db_of(wave: np.ndarray) -> np.ndarray:
    return spectral.magnitude_to_db(exact(wave).abs()).numpy()


# --- (a) PNG images ---------------------------------------------------------------------------


class Png:
    """magma-coloured RGB PNG per spectrogram (low frequencies at the bottom, as plotted)."""

    def __init__(self, folder: Path, pairs):
        import matplotlib

        self.folder, self.scale = folder, {}
        lut = (matplotlib.colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
        self.inverse = np.zeros(1 << 24, np.uint8)  # packed RGB -> colormap index
        self.inverse[lut.astype(np.int64) @ np.array([65536, 256, 1])] = np.arange(256)
        folder.mkdir()
        for name, reverb, clean in pairs:
            for kind, wave in (("reverb", reverb), ("clean", clean)):
                db = db_of(wave)
                lo, hi = float(db.min()), float(db.max())
                self.scale[f"{name}_{kind}"] = (lo, hi)
                idx = np.round((db - lo) / (hi - lo) * 255).astype(np.uint8)
                Image.fromarray(lut[idx[::-1]]).save(folder / f"{name}_{kind}.png")

    def rgb(self, stem: str) -> np.ndarray:
        """``(F, T, 3)`` uint8, low bins first."""
        return np.asarray(Image.open(self.folder / f"{stem}.png").convert("RGB"))[::-1]

    def crop(self, name: str, start: int) -> list[torch.Tensor]:
        """What option (a) feeds a network: RGB in [0, 1], ``(3, F, 256)``."""
        rgbs = [self.rgb(f"{name}_{kind}")[:, start : start + FRAMES] for kind in ("reverb", "clean")]
        return [torch.from_numpy(np.ascontiguousarray(c.transpose(2, 0, 1))).float() / 255 for c in rgbs]

    def db(self, stem: str) -> np.ndarray:
        """dB recovered by inverting the colormap, at best (the image's min/max were kept)."""
        idx = self.inverse[self.rgb(stem).astype(np.int64) @ np.array([65536, 256, 1])]
        lo, hi = self.scale[stem]
        return lo + idx / 255.0 * (hi - lo)


# --- (b) one .npy per spectrogram --------------------------------------------------------------


class Npy:
    def __init__(self, folder: Path, pairs):
        self.folder = folder
        folder.mkdir()
        for name, reverb, clean in pairs:
            for kind, wave in (("reverb", reverb), ("clean", clean)):
                np.save(folder / f"{name}_{kind}.npy", exact(wave).abs().float().numpy())

    def crop(self, name: str, start: int) -> list[torch.Tensor]:
        mags = [np.load(self.folder / f"{name}_{kind}.npy", mmap_mode="r")[:, start : start + FRAMES] for kind in ("reverb", "clean")]
        return [torch.from_numpy(np.ascontiguousarray(m)) for m in mags]


# --- crop datasets: each item is [reverb, clean] magnitudes (F, 256) -----------------------------


class Crops(Dataset):
    """Random crops (item and start from ``default_rng(index)``) of a stored form."""

    def __init__(self, source, names: list[str], frames: list[int]):
        keep = [k for k, f in enumerate(frames) if f >= FRAMES]  # utterances of 2 s or more
        self.source, self.names, self.frames = source, [names[k] for k in keep], [frames[k] for k in keep]

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        rng = np.random.default_rng(i)
        k = int(rng.integers(len(self.names)))
        return self.source.crop(self.names[k], int(rng.integers(0, max(1, self.frames[k] - FRAMES))))


class StoreCrops(Dataset):
    def __init__(self, path: Path):
        self.fs = store.FeatureStore(path, frames=FRAMES)

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        item = self.fs[i % len(self.fs)]
        return [item["reverb_mag"], item["clean_mag"]]


class OnTheFly(IterableDataset):
    """The training stream, plus the STFT magnitudes (what the stored forms hold)."""

    def __init__(self, pairs: data.ReverbPairs):
        self.pairs = pairs

    def __iter__(self):
        stft = spectral.Stft(STFT)
        for item in self.pairs:
            yield [stft(item[k]).abs() for k in ("reverb", "clean")]


def batches_per_second(ds, workers: int, n: int) -> float:
    """Batches of 16 crops per second, after the first batch (worker start-up not counted)."""
    it = iter(DataLoader(ds, batch_size=BATCH, num_workers=workers))
    next(it)
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - start)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600.0, help="audio to use (default 600)")
    p.add_argument("--batches", type=int, default=10, help="timed batches per form and worker count")
    p.add_argument("--backends", action="store_true", help="also compare HDF5 / zarr / memmap layouts")
    args = p.parse_args()
    if not (SHARED / "speech").is_dir():
        sys.exit(f"needs {SHARED} (the development data)")
    torch.set_num_threads(1)  # what a DataLoader worker gets; two busy cores otherwise thrash
    work = Path(tempfile.mkdtemp(prefix="dereverb-storage-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> None:
    t0 = time.perf_counter()
    pairs, seconds, flac, flac_files, rirs = make_corpus(args.seconds, work)
    names = [n for n, _, _ in pairs]
    frames = [len(r) // STFT.hop_length + 1 for _, r, _ in pairs]
    print(f"{len(pairs)} utterances, {seconds:.0f} s of audio; reverb + clean as 16-bit FLAC: "
          f"{flac['pair'] / seconds / 1e3:.1f} kB/s (clean alone {flac['clean'] / seconds / 1e3:.1f} kB/s)")
    png, npy = Png(work / "png", pairs), Npy(work / "npy", pairs)
    t = time.perf_counter()
    prepare_store(work, DEFAULT)
    prep = time.perf_counter() - t
    sizes = {"png": folder_bytes(work / "png"), "npy": folder_bytes(work / "npy"),
             "store": folder_bytes(store_dir(work, DEFAULT)), "fly": flac["clean"]}
    check = [(n, r) for n, r, _ in pairs[:12]]
    fid = {
        "png": np.mean([fidelity_db(10 ** (png.db(f"{n}_reverb") / 20), r) for n, r in check]),
        "npy": np.mean([fidelity_db(np.load(work / "npy" / f"{n}_reverb.npy"), r) for n, r in check]),
        "store": store_fidelity(store_dir(work, DEFAULT), check),
    }
    dcfg = data.DataConfig(speech=tuple(map(str, flac_files)), segment_seconds=FRAMES * STFT.hop_length / STFT.sample_rate)
    fly = OnTheFly(data.ReverbPairs(data.scan_speech(dcfg.speech), rirs, [], dcfg, STFT.sample_rate, seed=0))
    forms = {"png": ("(a) RGB PNG + colormap", Crops(png, names, frames)),
             "npy": ("(b) one .npy per spectrogram", Crops(npy, names, frames)),
             "store": ("(c) feature store (default: 0.1 dB steps, lz4hc)", StoreCrops(store_dir(work, DEFAULT))),
             "fly": ("(d) on the fly, FLAC + RIRs", fly)}
    print(f"store: prepare took {prep:.1f} s; its files are in the page cache from here on\n")
    print("| form | kB per s of audio | x FLAC (reverb + clean) | batches/s, 0 workers | batches/s, 2 workers | fidelity SNR (dB) |")
    print("|---|---|---|---|---|---|")
    for key, (label, ds) in forms.items():
        rates = [batches_per_second(ds, w, args.batches) for w in (0, 2)]
        snr = "exact" if key == "fly" else f"{fid[key]:.1f}"
        print(f"| {label} | {sizes[key] / seconds / 1e3:.1f} | {sizes[key] / flac['pair']:.2f} | "
              f"{rates[0]:.1f} | {rates[1]:.1f} | {snr} |", flush=True)
    print(f"\n(d) counts only the clean FLAC; the RIRs add {sum(r.audio.nbytes for r in rirs) / 1e6:.1f} MB once")
    store_settings(work, check, seconds, flac["pair"])
    if args.backends:
        backends(pairs, seconds, flac["pair"], work)
    print(f"total {time.perf_counter() - t0:.0f} s")


def store_dir(work: Path, setting: tuple[float, str]) -> Path:
    return work / f"store-{setting[0]:g}-{setting[1]}"


def prepare_store(work: Path, setting: tuple[float, str]) -> None:
    cfg = store.StoreConfig(clean_dir=str(work / "pairs" / "clean"), reverb_dir=str(work / "pairs" / "reverb"),
                            quant_db=setting[0], codec=setting[1])
    store.prepare(cfg, STFT, store_dir(work, setting))


def store_fidelity(path: Path, check: list[tuple[str, np.ndarray]]) -> float:
    """Mean fidelity SNR (dB) of the reverberant audio rebuilt from a store's served magnitudes."""
    fs = store.FeatureStore(path, frames=None)
    mags = {fs.name(i): fs[i]["reverb_mag"].double().numpy() for i in range(len(fs))}
    return float(np.mean([fidelity_db(mags[n], r) for n, r in check]))


def crops_per_second(stores: list[store.FeatureStore], rounds: int = 4, seconds: float = 0.75) -> list[float]:
    """Random 2 s crops per second from one process for each store, measured in interleaved
    rounds so that a load that changes during the run weighs on every store alike."""
    counts, spent = [0] * len(stores), [0.0] * len(stores)
    for _ in range(rounds):
        for k, fs in enumerate(stores):
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                fs[counts[k] % len(fs)]
                counts[k] += 1
            spent[k] += time.perf_counter() - start
    return [c / t for c, t in zip(counts, spent)]


def store_settings(work: Path, check, seconds: float, flac_pair: int) -> None:
    """The store's dB step and codec, side by side; then the issue-3 targets for the default."""
    for setting in SETTINGS:
        if not store_dir(work, setting).is_dir():
            prepare_store(work, setting)
    stores = [store.FeatureStore(store_dir(work, s), frames=FRAMES) for s in SETTINGS]
    for fs in stores:  # every shard file in the page cache
        for i in range(len(fs)):
            fs.codes(i)
    rates = crops_per_second(stores)
    print("\n| store: dB step, codec | kB per s of audio | x FLAC | fidelity SNR (dB) | 2 s crops/s, one process (float32 magnitudes) |")
    print("|---|---|---|---|---|")
    for setting, rate in zip(SETTINGS, rates):
        size = folder_bytes(store_dir(work, setting))
        step = f"{setting[0]:g} dB" if setting[0] else "0 (float16, lossless)"
        mark = " (default)" if setting == DEFAULT else ""
        print(f"| {step}, {setting[1]}{mark} | {size / seconds / 1e3:.1f} | {size / flac_pair:.2f} | "
              f"{store_fidelity(store_dir(work, setting), check):.1f} | {rate:.0f} |", flush=True)
    size = folder_bytes(store_dir(work, DEFAULT)) / flac_pair
    rate = rates[SETTINGS.index(DEFAULT)]
    print(f"\nissue 3 targets (default store): size {size:.2f}x the FLAC (<= 2.5x: {'met' if size <= 2.5 else 'NOT met'}); "
          f"{rate:.0f} random 2 s crops/s from one process, warm page cache (>= 1000: {'met' if rate >= 1000 else 'NOT met'})")


def backends(pairs, seconds: float, flac_pair: int, work: Path) -> None:
    """The same float16 dB pairs in other layouts: size and raw random crop reads, one process."""
    feats = [np.stack([db_of(r), db_of(c)]).transpose(2, 0, 1).astype(np.float16) for _, r, c in pairs]  # (T, 2, F)
    lengths = np.array([len(f) for f in feats])
    offsets = np.r_[0, np.cumsum(lengths)[:-1]]
    whole = np.concatenate(feats)
    folder = work / "backends"
    folder.mkdir()
    rows = []

    def timed(label: str, size: int, read) -> None:
        rng = np.random.default_rng(1)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 1.5:
            k = int(rng.integers(len(feats)))
            read(k, int(rng.integers(0, max(1, lengths[k] - FRAMES))))
            n += 1
        rows.append((label, size, n / (time.perf_counter() - start)))

    np.save(folder / "all.npy", whole)
    mm = np.load(folder / "all.npy", mmap_mode="r")
    timed(".npy memmap, raw float16", (folder / "all.npy").stat().st_size,
          lambda k, s: np.array(mm[offsets[k] + s : offsets[k] + s + FRAMES]))
    try:
        import h5py

        for label, opts in (("HDF5 contiguous", None), ("HDF5 chunks of 64, no filter", {}),
                            ("HDF5 gzip-1 + shuffle", dict(compression="gzip", compression_opts=1, shuffle=True)),
                            ("HDF5 lzf + shuffle", dict(compression="lzf", shuffle=True))):
            path = folder / f"{len(rows)}.h5"
            with h5py.File(path, "w") as f:
                f.create_dataset("x", data=whole, **({} if opts is None else dict(chunks=(64, 2, whole.shape[2]), **opts)))
            ds = h5py.File(path, "r")["x"]
            timed(label, path.stat().st_size, lambda k, s, ds=ds: ds[offsets[k] + s : offsets[k] + s + FRAMES])
    except ImportError:
        print("(h5py not installed: HDF5 rows skipped)")
    try:
        import numcodecs
        import zarr

        for label, comp in (("zarr 2 blosc-zstd-3 + shuffle", numcodecs.Blosc("zstd", 3, numcodecs.Blosc.SHUFFLE)),
                            ("zarr 2 blosc-lz4 + shuffle", numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE))):
            path = folder / f"{len(rows)}.zarr"
            z = zarr.open(str(path), mode="w", shape=whole.shape, chunks=(64, 2, whole.shape[2]), dtype="f2", compressor=comp)
            z[:] = whole
            z = zarr.open(str(path), mode="r")
            timed(label, folder_bytes(path), lambda k, s, z=z: z[offsets[k] + s : offsets[k] + s + FRAMES])
    except ImportError:
        print("(zarr not installed: zarr rows skipped)")
    for codec in shards.CODECS:
        path = folder / f"shard-{codec}.dvs"
        w = shards.ShardWriter(path, 2, whole.shape[2], 64, codec)
        for i, f in enumerate(feats):
            w.add(str(i), np.ascontiguousarray(f.transpose(1, 2, 0)).view(np.uint16))  # (2, F, T) float16 bits
        w.close()
        shard = shards.Shard(path)
        timed(f"dereverb shard, {codec} blocks of 64", path.stat().st_size, lambda k, s, sh=shard: sh.read(k, s, FRAMES))
    print("\n| layout (float16 dB, reverb + clean) | kB per s of audio | x FLAC | random 2 s crops/s |\n|---|---|---|---|")
    for label, size, rate in rows:
        print(f"| {label} | {size / seconds / 1e3:.1f} | {size / flac_pair:.2f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
