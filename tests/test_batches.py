"""The step-indexed training stream: batch ``s`` depends on (seed, s, rank) only, indexed sources
are visited once per pass across ranks, and the transform runs where the batch is made."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch

from dereverb import audio, data
from dereverb.batches import StepBatches, step_loader
from dereverb.config import StftConfig
from dereverb.errors import DereverbError

SR = 16000


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, speech):
    """An on-the-fly pair stream over 2 s of real speech and a synthetic decaying RIR."""
    root = tmp_path_factory.mktemp("stream")
    audio.write(root / "speech.wav", speech[0][: 2 * SR], SR)
    rng = np.random.default_rng(0)
    rir = rng.standard_normal(2400) * np.exp(-np.arange(2400) / SR / 0.03) * 0.3
    rir[0] = 1.0
    audio.write(root / "rir.wav", rir.astype(np.float32), SR, subtype="FLOAT")
    cfg = data.DataConfig(speech=(str(root / "speech.wav"),), rirs=(str(root / "rir.wav"),), segment_seconds=0.25)
    return data.build_train_dataset(cfg, StftConfig(), seed=0)


def take(loader, n: int) -> list[dict]:
    return list(itertools.islice(loader, n))


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_batch_of_a_step_depends_on_neither_workers_nor_start(pairs):
    one = take(step_loader(pairs, 3, seed=7, start=0, workers=0), 5)
    two = take(step_loader(pairs, 3, seed=7, start=0, workers=2), 5)
    late = take(step_loader(pairs, 3, seed=7, start=3, workers=2), 2)
    assert one[0]["reverb"].shape == (3, 4000)
    assert same(one, two) and same(one[3:], late)
    assert not torch.equal(one[0]["reverb"], one[1]["reverb"])  # each step draws anew
    other = take(step_loader(pairs, 3, seed=8, start=0, workers=0), 1)
    assert not torch.equal(other[0]["reverb"], one[0]["reverb"])


def test_ranks_draw_different_batches(pairs):
    r0 = StepBatches(pairs, 2, seed=1, rank=0, world=2)[0]
    r1 = StepBatches(pairs, 2, seed=1, rank=1, world=2)[0]
    assert not torch.equal(r0["reverb"], r1["reverb"])


class Indexed(torch.utils.data.Dataset):
    """Item ``i`` is ``{"i": i, "epoch": the pass it was read in}``."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"i": torch.tensor(i), "epoch": torch.tensor(self.epoch)}


def test_indexed_source_is_visited_once_per_pass_across_ranks():
    n, batch, world = 12, 2, 2
    steps = n // (batch * world)  # steps per pass
    seen = {}
    for rank in range(world):
        ds = StepBatches(Indexed(n), batch, seed=3, rank=rank, world=world)
        seen[rank] = [ds[s] for s in range(2 * steps)]
    first = [int(i) for r in range(world) for b in seen[r][:steps] for i in b["i"]]
    second = [int(i) for r in range(world) for b in seen[r][steps:] for i in b["i"]]
    assert sorted(first) == sorted(second) == list(range(n))  # each pass: every item once
    assert first != second  # a new permutation per pass
    assert {int(e) for r in range(world) for b in seen[r][steps:] for e in b["epoch"]} == {1}


def test_an_indexed_source_smaller_than_a_batch_is_refused():
    with pytest.raises(DereverbError, match="holds 3 examples, fewer than train.batch_size=2 x 2 ranks"):
        StepBatches(Indexed(3), 2, seed=0, rank=0, world=2)


def test_transform_runs_in_the_worker_that_made_the_batch(pairs):
    def tag(batch: dict) -> dict:
        return {**batch, "pid": torch.tensor(os.getpid())}

    in_main = take(step_loader(pairs, 2, seed=0, start=0, workers=0, transform=tag), 1)[0]
    in_worker = take(step_loader(pairs, 2, seed=0, start=0, workers=1, transform=tag), 1)[0]
    assert int(in_main["pid"]) == os.getpid() != int(in_worker["pid"])
    assert torch.equal(in_main["reverb"], in_worker["reverb"])


def test_an_iterable_source_that_cannot_be_indexed_is_refused():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield {}

    with pytest.raises(TypeError, match="cannot be indexed"):
        step_loader(Stream(), 2, seed=0, start=0, workers=0)
