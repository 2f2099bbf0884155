"""The bundled model: it loads offline, dereverberates real audio, and chunking does not change it."""

from __future__ import annotations

import numpy as np
import pytest

from dereverb import demo, metrics
from dereverb.chunking import ChunkConfig
from dereverb.enhance import PRETRAINED_DIR, Dereverberator, active_span

pytestmark = pytest.mark.skipif(
    not (PRETRAINED_DIR / "default.safetensors").is_file(), reason="no bundled model"
)


@pytest.fixture(scope="module")
def church() -> tuple[np.ndarray, np.ndarray]:
    """Bundled speech x the bundled held-out church RIR: (reverberant, direct-path clean)."""
    return demo.church_case()


def test_bundled_model_dereverberates_a_held_out_church(church):
    reverb, clean = church
    y = Dereverberator.from_pretrained(device="cpu")(reverb, 16000)
    assert y.shape == reverb.shape and np.isfinite(y).all()
    assert metrics.estoi(clean, y, 16000) > metrics.estoi(clean, reverb, 16000) + 0.05
    assert metrics.cepstral_distance(clean, y, 16000) < metrics.cepstral_distance(clean, reverb, 16000) - 0.5
    assert metrics.srmr(y, 16000) > metrics.srmr(reverb, 16000) + 1.0


def test_chunked_equals_one_pass_with_the_trained_model(church):
    reverb = np.tile(church[0], 3)  # 15 s = 1898 frames: three segments of 1280 frames
    whole = Dereverberator.from_pretrained(device="cpu", chunk=ChunkConfig(chunk_frames=0))(reverb, 16000)
    chunked = Dereverberator.from_pretrained(
        device="cpu", chunk=ChunkConfig(chunk_frames=1280, margin_frames=256, fade_frames=64)
    )(reverb, 16000)
    rel = np.sqrt(np.mean((chunked - whole) ** 2) / np.mean(whole**2))
    assert rel < 1e-3


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
