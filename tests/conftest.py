"""Shared fixtures: real speech and a real RIR from examples/, and tiny generated signals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dereverb import audio

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def speech() -> tuple[np.ndarray, int]:
    """Real speech (LibriSpeech, 5 s, 16 kHz): ``(S,)`` float32 and its rate."""
    x, sr = audio.read(EXAMPLES / "speech_1688-142285-0003.flac")
    return x[0], sr


@pytest.fixture(scope="session")
def rir_16k() -> np.ndarray:
    """A real measured church RIR (T30 ~1.3 s) resampled to 16 kHz, channel 0: ``(S,)``."""
    x, _ = audio.read(EXAMPLES / "rir_st_margarets_church.wav", sample_rate=16000, channel=0)
    return x[0]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
