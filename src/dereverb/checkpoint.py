"""Self-describing model files and training resume state.

A model file is one safetensors file: the :class:`~dereverb.model.DereverbModel` weights and the
normaliser statistics as tensors, and in the safetensors metadata a JSON document
(``format_version``, the ``StftConfig``, ``FeatureConfig`` and ``ModelConfig``, ``step``,
``metrics`` and whatever else the caller adds).  That file alone rebuilds the model for inference.
Loading never unpickles anything.  Files written before a config key was removed still load when
the key holds its old default (``REMOVED`` of each config class; :func:`dereverb.config.from_dict`).

The resume state (optimizer, step, RNG state, ...) is a separate file read with
``torch.load(weights_only=True)``, so it cannot run code either.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .audio import atomic_path
from .config import FeatureConfig, RemovedKeyError, StftConfig, from_dict, to_dict
from .errors import DereverbError
from .model import DereverbModel, ModelConfig, count_parameters, latency_samples

FORMAT_VERSION = 1
META_KEY = "dereverb"
SUFFIX = ".safetensors"
# Names inside a run folder, in the order :func:`resolve` tries them.
RUN_FILES = ("best.safetensors", "last.safetensors")
PRETRAINED_DIR = Path(__file__).parent / "pretrained"
# Bundled names whose file a recipe trains (it may not be installed yet), with that recipe.
RECIPES = {"realtime": "recipes/default.yaml --config recipes/realtime.yaml"}


def save(path: str | Path, model: DereverbModel, meta: dict[str, Any] | None = None) -> None:
    """Write ``model`` (weights, normaliser, configs) and ``meta`` (JSON-safe) to ``path`` atomically."""
    path = Path(path)
    doc = {
        **(meta or {}),
        "format_version": FORMAT_VERSION,
        "stft": to_dict(model.stft_config),
        "features": to_dict(model.feature_config),
        "model": to_dict(model.model_config),
    }
    tensors = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    doc["sha256"] = _digest(tensors)
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(doc)})
        except SafetensorError as e:  # an I/O error (full disk) arrives wrapped
            raise DereverbError(f"{path}: write failed ({e})") from e


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names and raw bytes, so a flipped byte in the weights is caught on load."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous().reshape(-1)
        h.update(name.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def resolve_model(spec: str | Path | None) -> Path:
    """A model file or run folder from ``--model NAME|PATH`` (``None``: the bundled default)."""
    name = "default" if spec is None else str(spec)
    if spec is not None and Path(name).exists():
        return Path(name)
    bundled = PRETRAINED_DIR / f"{name}.safetensors"
    if os.sep not in name and bundled.is_file():
        return bundled
    if name == "default":
        raise DereverbError(
            f"{bundled}: the bundled model is not installed; pass --model PATH "
            "(a .safetensors checkpoint, a run folder or an exported .onnx file)"
        )
    names = sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors"))
    if name in RECIPES:
        raise DereverbError(
            f"{name}: the bundled {name} model is not installed ({bundled} is missing; bundled: "
            f"{', '.join(names) or 'none'}); train it with `dereverb train --config {RECIPES[name]} "
            f"--run-dir runs/{name}` and pass --model runs/{name}"
        )
    raise DereverbError(
        f"{name}: no such model file or run folder, nor a bundled model name "
        f"(bundled: {', '.join(names) or 'none'})"
    )


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's ``best`` (else ``last``) checkpoint."""
    path = Path(path)
    if path.is_dir():
        for name in RUN_FILES:
            if (path / name).is_file():
                return path / name
        raise DereverbError(f"{path}: run folder holds no checkpoint ({' or '.join(RUN_FILES)})")
    if not path.exists():
        raise DereverbError(f"{path}: no such checkpoint file")
    return path


def _read(path: Path, with_tensors: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DereverbError(f"{path}: not a readable dereverb checkpoint (truncated or corrupt: {e})") from e
    if raw is None:
        raise DereverbError(f"{path}: a safetensors file without dereverb metadata; not a dereverb checkpoint")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DereverbError(f"{path}: corrupt checkpoint metadata ({e.msg})") from e
    version = doc.get("format_version")
    if not isinstance(version, int):
        raise DereverbError(f"{path}: checkpoint metadata has no format_version")
    if version > FORMAT_VERSION:
        raise DereverbError(
            f"{path}: checkpoint format {version} is newer than this dereverb reads ({FORMAT_VERSION}); upgrade dereverb"
        )
    return doc, tensors


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (file or run folder) without loading its weights."""
    return _read(resolve(path), with_tensors=False)[0]


def build(doc: dict[str, Any], where: str = "") -> DereverbModel:
    """An untrained :class:`DereverbModel` from checkpoint metadata (its three configs)."""
    try:
        stft = from_dict(StftConfig, doc["stft"], where="stft.")
        features = from_dict(FeatureConfig, doc["features"], where="features.")
        model = from_dict(ModelConfig, doc["model"], where="model.")
    except RemovedKeyError as e:
        raise DereverbError(f"{where}: {e}") from e
    except (KeyError, DereverbError) as e:
        raise DereverbError(f"{where}: checkpoint configs unusable ({e})") from e
    return DereverbModel(stft, features, model)


def load(path: str | Path, device: str | torch.device = "cpu") -> DereverbModel:
    """Rebuild the model saved at ``path`` (file or run folder) in eval mode on ``device``."""
    path = resolve(path)
    doc, tensors = _read(path, with_tensors=True)
    model = build(doc, str(path))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    bad_shape = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or bad_shape:
        what = f"missing {missing[0]}" if missing else f"shape mismatch in {bad_shape[0]}"
        raise DereverbError(f"{path}: weights do not match the saved configuration ({what})")
    if doc.get("sha256") not in (None, _digest(tensors)):
        raise DereverbError(f"{path}: checkpoint weights are corrupt (checksum mismatch); re-download or re-train")
    model.load_state_dict(tensors, strict=False)
    return model.to(device).eval()


def describe(path: str | Path) -> str:
    """A few lines on what a model file holds: network, features, training, validation metrics."""
    path = resolve(path)
    doc = read_meta(path)
    tr, data, metrics = doc.get("train") or {}, doc.get("data") or {}, doc.get("metrics") or {}
    lines = [f"{path}", *config_lines(build(doc, str(path)))]
    if tr:
        lines.append(f"  training: step {doc.get('step', '?')} of {tr.get('steps', '?')}, batch {tr.get('batch_size')}, "
                     f"lr {tr.get('lr')}" + (f", from {tr['init']}" if tr.get("init") else "")
                     + (f", weight average {tr['ema_decay']}" if tr.get("ema_decay") else ""))
    if data:
        lines.append(f"  data: {len(data.get('speech') or [])} speech source(s), {len(data.get('rirs') or [])} RIR "
                     f"file(s)" + (f" + pool {data['rir_pool']}" if data.get("rir_pool") else "")
                     + f", target {data.get('target')}, {data.get('segment_seconds')} s crops")
    if metrics:
        lines.append("  validation: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    lines.append(f"  sha256 {doc.get('sha256', '?')}")
    return "\n".join(lines) + "\n"


def config_lines(model: DereverbModel) -> list[str]:
    """The network and input lines of :func:`describe` (an exported ONNX model's too)."""
    m, st, fe = model.model_config, model.stft_config, model.feature_config
    compression = f"power {fe.power}" if fe.compression == "power" else f"{fe.compression} (floor {fe.floor_db:g} dB)"
    kernel = f"{m.kernel_size}x{m.kernel_size}"
    if m.causal:
        latency = latency_samples(st, m)
        kernel = (f"causal, {m.kernel_size} bins x {m.time_kernel} dilated frames, {m.lookahead} frame(s) ahead, "
                  f"latency {latency} samples ({1000 * latency / st.sample_rate:.1f} ms)")
    return [
        f"  network: U-Net, {m.output} output, {m.depth} levels, {m.base_channels}->{m.max_channels} channels, "
        f"{kernel}, {m.norm} norm; "
        f"{count_parameters(model.net):,} parameters",
        f"  input: STFT {st.n_fft}/{st.hop_length} {st.window} at {st.sample_rate} Hz, {st.n_freq} bins; "
        f"{compression}, {fe.normalization} normalisation; frontend {fe.frontend}",
    ]


# --- resume state --------------------------------------------------------------------------------


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write a resume state (tensors, numbers, strings, lists, dicts) atomically."""
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch's zip writer reports a full disk as a RuntimeError
            raise DereverbError(f"{path}: write failed (disk full? {str(e).strip()})") from e


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a resume state written by :func:`save_state` (``weights_only``: never runs code)."""
    path = Path(path)
    if not path.is_file():
        raise DereverbError(f"{path}: no such resume state file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise DereverbError(f"{path}: resume state is unreadable ({e.__class__.__name__}); "
                            "delete it to start the run afresh") from e
