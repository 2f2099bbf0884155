"""The bundled model: it loads offline, dereverberates real audio, and chunking does not change it."""

from __future__ import annotations

import numpy as np
import pytest

from dereverb import demo, metrics
from dereverb.chunking import ChunkConfig
from dereverb.enhance import PRETRAINED_DIR, Dereverberator

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
