"""PairConvolver against the reference (rooms.reverberate + rooms.with_drr) and its cache budget
(the dataset stream it serves: tests/test_data.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dereverb import data, rooms
from dereverb.convolver import PairConvolver

SR = 16000


def reference(dry, rir, target, skip, drr_db):
    return rooms.reverberate(dry, rir if drr_db is None else rooms.with_drr(rir, drr_db), target, skip)


@pytest.fixture(scope="module")
def church(rir_16k):
    return rooms.analyze(rir_16k, SR, "church")


@pytest.mark.parametrize("target", rooms.TARGETS)
@pytest.mark.parametrize("drr_db", [None, -3.0, 12.0])
@pytest.mark.parametrize("where", ["full context", "file start", "no context"])
def test_matches_reference(target, drr_db, where, speech, church):
    taps = len(church.audio)
    skip = {"full context": taps - 1, "file start": taps // 3, "no context": 0}[where]
    dry = speech[0][: skip + 20000]
    conv = PairConvolver(target, budget_mb=64)
    for _ in range(2):  # the second call is served from the cache
        rev, tgt = conv(dry, church, skip, drr_db)
        ref_rev, ref_tgt = reference(dry, church, target, skip, drr_db)
        assert rev.dtype == tgt.dtype == np.float32 and rev.shape == ref_rev.shape == (20000,)
        scale = np.abs(ref_rev).max()
        np.testing.assert_allclose(rev, ref_rev, atol=2e-5 * scale)
        np.testing.assert_allclose(tgt, ref_tgt, atol=2e-5 * np.abs(ref_tgt).max())


def test_anechoic_and_odd_layouts_take_the_reference_path(speech, church):
    dry = speech[0][:40000]
    conv = PairConvolver("direct")
    rev, tgt = conv(dry, data.anechoic(SR), 0, 5.0)
    np.testing.assert_array_equal(rev, dry) and np.testing.assert_array_equal(tgt, dry)
    skip = len(church.audio) + 100  # more context than the RIR reaches: not a dry_crop layout
    rev, tgt = conv(dry, church, skip)
    ref_rev, ref_tgt = reference(dry, church, "direct", skip, None)
    np.testing.assert_array_equal(rev, ref_rev)
    assert not conv.cache  # nothing cached for the reference path


def test_cache_keeps_to_its_budget_least_recently_used_out(speech, rng):
    rirs = [rooms.analyze(np.r_[np.zeros(50), 1.0, 0.1 * rng.standard_normal(8000) * np.exp(-np.arange(8000) / 1500)],
                          SR, f"r{i}") for i in range(6)]
    dry = speech[0][:8000 + 16000]
    size = PairConvolver()._spectrum(rirs[0], "rir", 24000).nbytes  # one spectrum at this size
    conv = PairConvolver("direct", budget_mb=1)
    conv.budget = 5 * size  # room for two RIRs' pairs of spectra and one more
    for rir in rirs:
        conv(dry, rir, len(rir.audio) - 1)
        assert conv.bytes <= conv.budget and conv.bytes == sum(v.nbytes for _, v in conv.cache.values())
    kept = {key[0] for key in conv.cache}
    assert id(rirs[-1].audio) in kept and id(rirs[0].audio) not in kept
