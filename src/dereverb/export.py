"""ONNX export of the network core, and running it with onnxruntime.

Only the U-Net goes into the graph: normalised features ``(B, C_in, F, T)`` in, raw network output
``(B, C_out, F, T)`` out, with a dynamic batch and time axis (``F`` and ``T`` multiples of
``2 ** depth``; :class:`~dereverb.enhance.Dereverberator` pads and crops).  The STFT, compression,
normalisation and reconstruction stay outside in torch: complex STFT operators are what breaks
ONNX exports of speech models, and keeping them out makes the graph plain convolutions.

The file carries, in its ``dereverb`` metadata entry, the model's configs and normaliser
statistics, so an ``.onnx`` file alone runs inference (``Dereverberator.from_pretrained("x.onnx")``).

A causal model also exports as its streaming step (:func:`export_streaming_onnx`): one frame
``(B, C_in, n_freq, 1)`` and the network's state in, the output frame and the next state out, the
state as explicit graph inputs and outputs (``state_i`` -> ``next_state_i``) so any runtime can
stream it; :class:`OnnxStep` runs it in :class:`~dereverb.streaming.StreamingDereverberator`.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .audio import atomic_path
from .config import to_dict
from .errors import DereverbError
from .causal import StreamingUNet

META_KEY = "dereverb"
FORMAT_VERSION = 1
OPSET = 17


def _metadata(model) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "stft": to_dict(model.stft_config),
        "features": to_dict(model.feature_config),
        "model": to_dict(model.model_config),
        "normalizer": model.normalizer.to_dict(),
    }


def to_onnx_bytes(model, opset: int = OPSET) -> bytes:
    """Serialise ``model.net`` (a :class:`~dereverb.model.DereverbModel`'s U-Net) as ONNX bytes."""
    try:
        import onnx
    except ImportError as e:
        raise DereverbError("ONNX export needs the onnx package: pip install 'dereverb[onnx]'") from e
    if opset < 17:
        raise DereverbError(f"--opset {opset}: dereverb exports with opset 17 or newer")
    net = copy.deepcopy(model.net).cpu().float().eval()
    net.to(memory_format=torch.contiguous_format)
    net.channels_last = False
    cfg, m = model.model_config, model.model_config.multiple
    n_freq = -(-model.stft_config.n_freq // m) * m
    example = torch.zeros(1, cfg.in_channels, n_freq, 2 * m)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            net, (example,), buf, dynamo=False, opset_version=opset,
            input_names=["features"], output_names=["output"],
            dynamic_axes={"features": {0: "batch", 3: "frames"}, "output": {0: "batch", 3: "frames"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(_metadata(model))
    proto.doc_string = "dereverb U-Net core: normalised STFT features (B, C, F, T) -> network output"
    return proto.SerializeToString()


def to_streaming_onnx_bytes(model, opset: int = OPSET) -> bytes:
    """Serialise a causal model's network step (:class:`~dereverb.causal.StreamingUNet`) as ONNX bytes.

    Inputs ``frame (batch, C_in, n_freq, 1)`` and ``state_0 .. state_{n-1}`` (each ``(batch, size)``,
    zeros at the start of a stream); outputs ``output (batch, C_out, n_freq, 1)`` and
    ``next_state_0 ..``, fed back as the next call's state.  The metadata adds ``streaming``: the
    number of states and the lookahead (a stream's first ``lookahead`` frames only enter
    ``state_0``: :meth:`StreamingUNet.prime`)."""
    try:
        import onnx
    except ImportError as e:
        raise DereverbError("ONNX export needs the onnx package: pip install 'dereverb[onnx]'") from e
    if not model.model_config.causal:
        raise DereverbError("a streaming export needs a causal model (model.causal); export_onnx exports this one")
    if opset < 17:
        raise DereverbError(f"--opset {opset}: dereverb exports with opset 17 or newer")
    step = StreamingUNet(copy.deepcopy(model.net).cpu().float().eval(), model.stft_config.n_freq).eval()
    state = step.initial_state(1)
    frame = torch.zeros(1, model.model_config.in_channels, model.stft_config.n_freq, 1)
    names = [f"state_{i}" for i in range(len(state))]
    outputs = ["output", *(f"next_{n}" for n in names)]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            step, (frame, *state), buf, dynamo=False, opset_version=opset,
            input_names=["frame", *names], output_names=outputs,
            dynamic_axes={n: {0: "batch"} for n in ["frame", *names, *outputs]},
        )
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    meta = {**_metadata(model), "streaming": {"states": len(state), "lookahead": model.model_config.lookahead}}
    entry.key, entry.value = META_KEY, json.dumps(meta)
    proto.doc_string = "dereverb causal U-Net step: one normalised STFT frame and the state -> output frame, next state"
    return proto.SerializeToString()


def export_onnx(model, path: str | Path, opset: int = OPSET) -> Path:
    """Write ``model``'s network core to ``path`` (atomic).  Returns the path."""
    return _write(path, lambda: to_onnx_bytes(model, opset))


def export_streaming_onnx(model, path: str | Path, opset: int = OPSET) -> Path:
    """Write a causal model's streaming step (:func:`to_streaming_onnx_bytes`) to ``path`` (atomic).
    Returns the path."""
    return _write(path, lambda: to_streaming_onnx_bytes(model, opset))


def _write(path: str | Path, make) -> Path:
    path = Path(path)
    if path.suffix != ".onnx":
        raise DereverbError(f"{path}: an ONNX model file name ends in .onnx")
    data = make()
    with atomic_path(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as e:
            raise DereverbError(f"{path}: write failed ({e.strerror or e})") from e
    return path


class OnnxNet:
    """The exported network run by onnxruntime on the CPU: ``(B, C, F, T)`` tensor -> tensor.

    ``source``: ONNX bytes or a file path.  ``meta``: the file's ``dereverb`` metadata.
    """

    def __init__(self, source: bytes | str | Path, threads: int | None = None):
        self.session, self.meta = _session(source, threads)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, feats: Tensor) -> Tensor:
        out = self.session.run(None, {self.input: feats.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out)


class OnnxStep:
    """A streaming export (:func:`to_streaming_onnx_bytes`) run by onnxruntime on the CPU, with the
    interface of :class:`~dereverb.causal.StreamingUNet`: ``initial_state(batch)``, ``prime`` and
    ``step(frame, *state) -> (output, *next_state)`` on tensors.  ``threads``: onnxruntime's
    intra-op threads (1: one frame's work is too small to share)."""

    prime = staticmethod(StreamingUNet.prime)

    def __init__(self, source: bytes | str | Path, threads: int | None = 1):
        self.session, self.meta = _session(source, threads)
        self.names = [a.name for a in self.session.get_inputs()]
        self.sizes = [a.shape[1] for a in self.session.get_inputs()[1:]]

    def initial_state(self, batch: int = 1) -> list[Tensor]:
        return [torch.zeros(batch, size) for size in self.sizes]

    def __call__(self, frame: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        feeds = {n: t.detach().float().cpu().numpy() for n, t in zip(self.names, (frame, *state))}
        return tuple(torch.from_numpy(y) for y in self.session.run(None, feeds))


def _session(source: bytes | str | Path, threads: int | None):
    """``(onnxruntime session on the CPU, the file's dereverb metadata or None)``."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise DereverbError("--backend onnx needs onnxruntime: pip install 'dereverb[onnx]'") from e
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    where = "exported model" if isinstance(source, bytes) else str(source)
    try:
        session = ort.InferenceSession(source if isinstance(source, bytes) else str(source), opts,
                                       providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for unreadable graphs
        raise DereverbError(f"{where}: not a readable ONNX model ({e.__class__.__name__})") from e
    raw = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    return session, (json.loads(raw) if raw else None)


def describe_onnx(path: str | Path) -> str:
    """A few lines on an exported file: opset, the graph's inputs and outputs, and the model its
    metadata rebuilds (network, STFT, features), as :func:`~dereverb.checkpoint.describe` does
    for a checkpoint."""
    from . import checkpoint

    path = Path(path)
    if not path.is_file():
        raise DereverbError(f"{path}: no such ONNX model file")
    session, meta = _session(path, None)
    model = _model(path, meta)
    try:
        import onnx

        opsets = onnx.load(str(path), load_external_data=False).opset_import
        opset = next((str(o.version) for o in opsets if o.domain in ("", "ai.onnx")), "?")
    except ImportError:  # onnxruntime alone runs the file; the opset is onnx's to read
        opset = "? (install onnx to read it)"
    return "\n".join([
        f"{path}",
        f"  ONNX export of a dereverb model: opset {opset}, metadata format {meta.get('format_version')}; "
        "the STFT and features run outside the graph " + ("(streaming: one frame and the state per call; "
                                                          "dereverb stream runs it)" if "streaming" in meta
                                                          else "(enhance --model runs it)"),
        f"  graph: {_tensors(session.get_inputs())} -> {_tensors(session.get_outputs())}",
        *checkpoint.config_lines(model),
    ]) + "\n"


def _tensors(args) -> str:
    """onnxruntime's graph inputs or outputs as text: ``features (batch, 1, 256, frames) tensor(float)``;
    a dimension the graph leaves open without a name of ours is ``?``."""
    def dim(d) -> str:
        return str(d) if isinstance(d, int) or d in ("batch", "frames") else "?"

    return ", ".join(f"{a.name} ({', '.join(map(dim, a.shape))}) {a.type}" for a in args)


def load_onnx(path: str | Path):
    """``(model, net)`` from an exported file: the :class:`~dereverb.model.DereverbModel` around the
    network (STFT, features, normaliser; its own U-Net weights unused) and the :class:`OnnxNet`."""
    path = Path(path)
    if not path.is_file():
        raise DereverbError(f"{path}: no such ONNX model file")
    net = OnnxNet(path)
    if net.meta is not None and "streaming" in net.meta:
        raise DereverbError(f"{path}: a streaming export (one frame per call): dereverb stream runs it; for "
                            "files, pass the model's checkpoint or its offline export")
    return _model(path, net.meta), net


def load_streaming_onnx(path: str | Path):
    """``(model, step)`` from a streaming export (:func:`to_streaming_onnx_bytes`): the
    :class:`~dereverb.model.DereverbModel` around it (its own network unused) and the :class:`OnnxStep`."""
    path = Path(path)
    if not path.is_file():
        raise DereverbError(f"{path}: no such ONNX model file")
    step = OnnxStep(path)
    if step.meta is not None and "streaming" not in step.meta:
        raise DereverbError(f"{path}: an offline export (whole signals): dereverb enhance runs it; for streaming, "
                            "export a causal model with export_onnx(..., streaming=True)")
    return _model(path, step.meta), step


def _model(path: Path, meta: dict | None):
    """The :class:`~dereverb.model.DereverbModel` an export's metadata describes, with its normaliser."""
    from . import checkpoint
    from .spectral import Normalizer

    if meta is None:
        raise DereverbError(f"{path}: an ONNX file without dereverb metadata; export it with dereverb export")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise DereverbError(f"{path}: exported with a newer dereverb; upgrade dereverb")
    model = checkpoint.build(meta, str(path))
    try:
        model.normalizer = Normalizer.from_dict(meta["normalizer"], model.stft_config.n_freq)
    except (KeyError, RuntimeError, TypeError) as e:
        raise DereverbError(f"{path}: normaliser statistics missing or malformed in the metadata") from e
    return model.eval()
