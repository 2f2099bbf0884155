"""ONNX export of the network core: the graph, its metadata, and onnxruntime == torch within 1e-4."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from dereverb import checkpoint, export
from dereverb.chunking import ChunkConfig
from dereverb.cli import main
from dereverb.enhance import Dereverberator
from dereverb.errors import DereverbError
from dereverb.causal import StreamingUNet
from tiny import one_thread, tiny_model  # noqa: F401  (one_thread: autouse fixture)

CHUNKS = ChunkConfig(chunk_frames=160, margin_frames=24, fade_frames=16)


@pytest.fixture(scope="module")
def signal(speech) -> np.ndarray:
    return (speech[0][:40000] * 0.8).astype(np.float32)


@pytest.mark.parametrize("output", ["mapping", "mask", "complex"])
def test_onnxruntime_matches_torch(output, signal):
    model = tiny_model(output)
    torch_out = Dereverberator(model, "cpu", chunk=CHUNKS)(signal, 16000)
    net = export.OnnxNet(export.to_onnx_bytes(model))
    onnx_out = Dereverberator(model, chunk=CHUNKS, onnx_net=net)(signal, 16000)
    assert np.abs(onnx_out - torch_out).max() < 1e-4
    # the network core alone, on a length other than the export example's
    feats = torch.randn(2, model.model_config.in_channels, 256, 96)
    with torch.no_grad():
        np.testing.assert_allclose(net(feats).numpy(), model.net(feats).numpy(), atol=1e-4)


def test_exported_file_graph_and_metadata(tmp_path, signal):
    model = tiny_model()
    path = export.export_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[3].dim_param == "frames" and dims[2].dim_value == 256
    assert not any(n.op_type in ("STFT", "DFT") for n in proto.graph.node)  # STFT stays outside
    # the file alone runs inference, equal to the torch model
    loaded = Dereverberator.from_pretrained(path, chunk=CHUNKS)
    assert loaded.backend == "onnx"
    ref = Dereverberator(model, "cpu", chunk=CHUNKS)(signal, 16000)
    assert np.abs(loaded(signal, 16000) - ref).max() < 1e-4


def test_backend_onnx_from_a_checkpoint(tmp_path, signal):
    model = tiny_model()
    checkpoint.save(tmp_path / "m.safetensors", model)
    d = Dereverberator.from_pretrained(tmp_path / "m.safetensors", backend="onnx", chunk=CHUNKS)
    ref = Dereverberator(model, "cpu", chunk=CHUNKS)(signal, 16000)
    assert np.abs(d(signal, 16000) - ref).max() < 1e-4


def test_export_cli(tmp_path, capsys):
    checkpoint.save(tmp_path / "m.safetensors", tiny_model())
    out = tmp_path / "m.onnx"
    assert main(["export", "--format", "onnx", "-o", str(out), "--model", str(tmp_path / "m.safetensors")]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    assert main(["export", "-o", str(tmp_path / "x.onnx"), "--model", str(tmp_path / "none.safetensors")]) == 2
    assert main(["export", "-o", str(tmp_path / "x.txt"), "--model", str(tmp_path / "m.safetensors")]) == 2
    assert "ends in .onnx" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.txt").exists()


def test_bad_onnx_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(DereverbError, match="bad.onnx: not a readable ONNX model"):
        Dereverberator.from_pretrained(bad)
    with pytest.raises(DereverbError, match="no such model"):
        Dereverberator.from_pretrained(tmp_path / "missing.onnx")


def test_info_describes_an_exported_model(tmp_path, capsys):
    """``dereverb info --model x.onnx`` used to call the export a corrupt checkpoint: it describes
    the graph (opset, inputs, outputs) and the model its metadata rebuilds."""
    from dereverb.model import count_parameters

    model = tiny_model("mask")
    path = export.export_onnx(model, tmp_path / "m.onnx")
    assert main(["info", "--model", str(path)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == str(path) and "opset 17, metadata format 1" in lines[1]
    assert lines[2] == ("  graph: features (batch, 1, 256, frames) tensor(float) -> "
                        "output (batch, 1, ?, frames) tensor(float)")  # the crop to 256 bins is in the graph
    assert checkpoint.config_lines(model) == lines[3:5]
    assert "mask output" in lines[3] and f"{count_parameters(model.net):,} parameters" in lines[3]
    assert main(["info", "--model", str(path), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["format_version"] == 1 and meta["model"]["output"] == "mask" and "normalizer" in meta
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    assert main(["info", "--model", str(tmp_path / "bad.onnx")]) == 2
    assert "bad.onnx: not a readable ONNX model" in capsys.readouterr().err


# --- the streaming step of a causal model ---------------------------------------------------------


def _causal(output: str = "mask"):
    from test_streaming import causal_model

    return causal_model(output, lookahead=2)


def _streamed(engine, x: np.ndarray, block: int) -> np.ndarray:
    parts = [engine.process(x[i : i + block]) for i in range(0, len(x), block)]
    return np.concatenate([*parts, engine.flush()])


@pytest.mark.parametrize("output", ["mask", "complex"])
def test_onnxruntime_stream_matches_the_torch_stream(output, signal):
    """The exported step, its state fed back through onnxruntime, streams what torch streams."""
    from dereverb.streaming import StreamingDereverberator

    model = _causal(output)
    torch_out = _streamed(StreamingDereverberator(model), signal, 160)
    step = export.OnnxStep(export.to_streaming_onnx_bytes(model))
    onnx_out = _streamed(StreamingDereverberator(model, step=step), signal, 160)
    assert np.sqrt(np.mean((onnx_out - torch_out) ** 2) / np.mean(torch_out**2)) < 1e-5
    # two rows at once, the state's shapes as the engine keeps them
    frame = torch.randn(2, model.model_config.in_channels, 256, 1)
    state = step.initial_state(2)
    ref = StreamingUNet(model.net, 256)
    y, *nxt = step(frame, *state)
    y_ref, *nxt_ref = ref(frame, *ref.initial_state(2))
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), atol=1e-5)
    assert [s.shape for s in nxt] == [s.shape for s in nxt_ref]


def test_streaming_export_file_state_as_graph_inputs_and_outputs(tmp_path, signal, capsys):
    from dereverb.streaming import StreamingDereverberator

    model = _causal()
    path = export.export_streaming_onnx(model, tmp_path / "rt.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    inputs, outputs = [i.name for i in proto.graph.input], [o.name for o in proto.graph.output]
    n = 2 * model.model_config.depth
    assert inputs == ["frame", *(f"state_{i}" for i in range(n))]
    assert outputs == ["output", *(f"next_state_{i}" for i in range(n))]
    assert json.loads(proto.metadata_props[0].value)["streaming"] == {"states": n, "lookahead": 2}
    # the file alone streams, as the checkpoint does; `stream --backend onnx` uses the same step
    ref = _streamed(StreamingDereverberator(model), signal, 500)
    assert np.abs(_streamed(StreamingDereverberator.from_pretrained(path), signal, 500) - ref).max() < 1e-4
    checkpoint.save(tmp_path / "rt.safetensors", model)
    via = StreamingDereverberator.from_pretrained(tmp_path / "rt.safetensors", backend="onnx")
    assert isinstance(via.step, export.OnnxStep)
    # each kind of export is refused where the other belongs, and info tells them apart
    with pytest.raises(DereverbError, match="a streaming export"):
        Dereverberator.from_pretrained(path)
    with pytest.raises(DereverbError, match="an offline export"):
        StreamingDereverberator.from_pretrained(export.export_onnx(model, tmp_path / "offline.onnx"))
    with pytest.raises(DereverbError, match="needs a causal model"):
        export.to_streaming_onnx_bytes(tiny_model())
    assert main(["info", "--model", str(path)]) == 0
    text = capsys.readouterr().out
    assert "streaming: one frame and the state per call" in text and "graph: frame (batch, 1, 256, 1)" in text


def test_offline_export_of_a_causal_model_matches_torch(signal):
    """A causal model exports for files too (any frame count: its grid along T is one frame)."""
    model = _causal()
    ref = Dereverberator(model, "cpu", chunk=CHUNKS)(signal, 16000)
    net = export.OnnxNet(export.to_onnx_bytes(model))
    assert np.abs(Dereverberator(model, chunk=CHUNKS, onnx_net=net)(signal, 16000) - ref).max() < 1e-4
    feats = torch.randn(2, 1, 256, 37)
    with torch.no_grad():
        np.testing.assert_allclose(net(feats).numpy(), model.net(feats).numpy(), atol=1e-4)


def test_export_cli_streaming(tmp_path, capsys):
    checkpoint.save(tmp_path / "rt.safetensors", _causal())
    checkpoint.save(tmp_path / "m.safetensors", tiny_model())
    out = tmp_path / "rt.onnx"
    assert main(["export", "--streaming", "-o", str(out), "--model", str(tmp_path / "rt.safetensors")]) == 0
    assert "state_0" in capsys.readouterr().out
    assert [i.name for i in onnx.load(str(out)).graph.input][:2] == ["frame", "state_0"]
    # an offline model has no streaming step: one clear line, no file
    assert main(["export", "--streaming", "-o", str(tmp_path / "x.onnx"), "--model", str(tmp_path / "m.safetensors")]) == 2
    assert "needs a causal model" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
