"""Shared test helpers for models: a random tiny model with realistic statistics, one torch thread."""

from __future__ import annotations

import pytest
import torch

from dereverb.config import FeatureConfig, StftConfig
from dereverb.model import DereverbModel, model_config


def tiny_model(output: str = "mapping", seed: int = 0, **features) -> DereverbModel:
    """A random tiny model with realistic normaliser statistics and non-trivial batch norms;
    ``features``: :class:`FeatureConfig` fields (a frontend, say)."""
    torch.manual_seed(seed)
    model = DereverbModel(StftConfig(), FeatureConfig(**features), model_config("tiny", output=output))
    return realistic(model, -45.0, 18.0)  # dB features


def realistic(model: DereverbModel, mean: float, std: float) -> DereverbModel:
    """``model`` in eval mode with random batch-norm statistics and the normaliser at ``mean``,
    ``std`` (the features' scale; a complex model's normaliser is left alone)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        if model.model_config.output != "complex":
            model.normalizer.mean.fill_(mean)
            model.normalizer.std.fill_(std)
    return model.eval()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on short signals: thread start-up and contention cost more than they save."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
