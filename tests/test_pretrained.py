"""The bundled model: it loads offline, gives the output it always gave, dereverberates real
audio, and chunking does not change it.  It ships in the repository and the package, so these
tests run (and fail) wherever the package is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dereverb import checkpoint, demo, metrics
from dereverb.chunking import ChunkConfig
from dereverb.enhance import Dereverberator, active_span
from dereverb.model import ModelConfig
from dereverb.train import TrainConfig

REFERENCE = Path(__file__).parent / "data" / "bundled_church_reference.npy"


@pytest.fixture(scope="module")
def church() -> tuple[np.ndarray, np.ndarray]:
    """Bundled speech x the bundled held-out church RIR: (reverberant, direct-path clean)."""
    return demo.church_case()


def test_bundled_model_gives_its_reference_output(church):
    """Seconds 1-2 of the church case, whole-signal, default two passes: the output the bundled
    model gave before its configs lost keys (``REFERENCE``, written by the code of that time)."""
    y = Dereverberator.from_pretrained(device="cpu", chunk=ChunkConfig(chunk_frames=0))(church[0][16000:32000], 16000)
    ref = np.load(REFERENCE)
    assert np.sqrt(np.mean((y - ref) ** 2) / np.mean(ref**2)) < 1e-4  # float rounding across CPUs only


def test_bundled_metadata_holds_removed_keys_at_their_old_defaults():
    """The file was written before keys left the configs; it loads because they hold defaults."""
    meta = checkpoint.read_meta(checkpoint.resolve_model(None))
    assert set(ModelConfig.REMOVED) <= set(meta["model"])
    assert all(meta["model"][k] == v for k, v in ModelConfig.REMOVED.items())
    assert set(TrainConfig.REMOVED) <= set(meta["train"])
    assert checkpoint.load(checkpoint.resolve_model(None)).model_config == ModelConfig(output="mask")


@pytest.mark.slow
def test_bundled_model_dereverberates_a_held_out_church(church):
    reverb, clean = church
    y = Dereverberator.from_pretrained(device="cpu")(reverb, 16000)
    assert y.shape == reverb.shape and np.isfinite(y).all()
    assert metrics.estoi(clean, y, 16000) > metrics.estoi(clean, reverb, 16000) + 0.05
    assert metrics.cepstral_distance(clean, y, 16000) < metrics.cepstral_distance(clean, reverb, 16000) - 0.5
    assert metrics.srmr(y, 16000) > metrics.srmr(reverb, 16000) + 1.0


@pytest.mark.slow
def test_chunked_equals_one_pass_with_the_trained_model(church):
    reverb = np.tile(church[0], 3)  # 15 s = 1898 frames: three segments of 1280 frames
    whole = Dereverberator.from_pretrained(device="cpu", chunk=ChunkConfig(chunk_frames=0))(reverb, 16000)
    chunked = Dereverberator.from_pretrained(
        device="cpu", chunk=ChunkConfig(chunk_frames=1280, margin_frames=256, fade_frames=64)
    )(reverb, 16000)
    rel = np.sqrt(np.mean((chunked - whole) ** 2) / np.mean(whole**2))
    assert rel < 1e-3


@pytest.mark.slow
def test_digital_silence_at_the_edges_changes_nothing(church):
    """Zeros before and after a file are not fed to the network (they used to spoil the two
    seconds next to them); the original part comes out exactly as without them."""
    reverb = church[0]
    d = Dereverberator.from_pretrained(device="cpu")
    pad = np.zeros(3200, np.float32)
    y = d(np.concatenate([pad, reverb, pad, pad]), 16000)
    np.testing.assert_array_equal(y[3200 : 3200 + reverb.size], d(reverb, 16000))
    assert not y[:3200].any() and not y[3200 + reverb.size :].any()


def test_active_span():
    x = np.zeros((2, 1000), np.float32)
    x[0, 100:200] = 0.5
    x[1, 150:400] = 1e-7  # quiet, but not digital silence
    assert active_span(x, 10) == (100, 400)
    assert active_span(x, 500) == (0, 1000)  # too short a span: everything
    assert active_span(np.zeros((1, 50), np.float32), 10) == (0, 50)
