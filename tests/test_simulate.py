"""Simulated rooms (pyroomacoustics) and resumable pools of simulated RIRs on disk."""

from __future__ import annotations

import numpy as np
import pytest

from dereverb import simulate
from dereverb.errors import DereverbError

SR = 16000


def test_simulated_rir_keeps_tail_and_measures_t60():
    rng = np.random.default_rng(3)
    rir = simulate.simulate_rir(0.4, 1.0, SR, rng, room_size=(4.0, 3.5, 2.6))
    assert rir.audio[rir.direct_index] == pytest.approx(1.0)
    assert rir.meta["t60_target"] == 0.4 and rir.meta["distance"] == 1.0
    assert abs(rir.t30 - 0.4) / 0.4 < 0.3  # calibrated to ~10 %, ray noise leaves some spread
    assert rir.duration > 0.5 * rir.t30  # the tail was not cut at the image-source order
    assert -15 < rir.drr < 15
    again = simulate.simulate_rir(0.4, 1.0, SR, np.random.default_rng(3), room_size=(4.0, 3.5, 2.6))
    assert np.array_equal(again.audio, rir.audio)  # ray noise too comes from the seed


def test_room_sampler_respects_ranges():
    s = simulate.RoomSampler(t60=(0.3, 0.6), distance=(1.0, 2.0))
    rng = np.random.default_rng(0)
    for _ in range(20):
        t60, dist, room = s.draw(rng)
        assert 0.3 <= t60 <= 0.6 and 1.0 <= dist <= 2.0
        assert s.absorption[0] <= simulate.sabine_absorption(t60, room) <= s.absorption[1]


def test_pool_resumes_after_crash_and_refuses_other_settings(tmp_path, monkeypatch):
    small = simulate.RoomSampler(t60=(0.2, 0.3), distance=(0.5, 1.0), length=(3, 4), width=(3, 4),
                                 height=(2.5, 3))
    real = simulate.simulate_rir
    calls = []

    def crash_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(simulate, "simulate_rir", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        simulate.simulate_pool(3, tmp_path, seed=1, sampler=small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.tsv", "pool.json", "sim_00000.wav"]
    with pytest.warns(UserWarning, match=r"incomplete \(1 of 3\)"):
        assert len(simulate.load_pool(tmp_path)) == 1
    first = (tmp_path / "sim_00000.wav").stat().st_mtime_ns
    monkeypatch.setattr(simulate, "simulate_rir", real)
    rows = simulate.simulate_pool(3, tmp_path, seed=1, sampler=small)
    assert [r["name"] for r in rows] == ["sim_00000", "sim_00001", "sim_00002"]
    assert (tmp_path / "sim_00000.wav").stat().st_mtime_ns == first  # not redone
    pool = simulate.load_pool(tmp_path)
    assert len(pool) == 3 and all(r.audio[r.direct_index] == pytest.approx(1.0) for r in pool)
    assert [r.t30 for r in pool] == [float(r["t30"]) for r in rows]
    pool8 = simulate.load_pool(tmp_path, sample_rate=8000)
    assert all(r.sample_rate == 8000 and r.audio[r.direct_index] == pytest.approx(1.0) for r in pool8)
    with pytest.raises(DereverbError, match="other settings"):
        simulate.simulate_pool(3, tmp_path, seed=2, sampler=small)
    simulate.simulate_pool(3, tmp_path / "again", seed=1, sampler=small)  # same seed, same RIRs
    again = simulate.load_pool(tmp_path / "again")
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(again, pool))


def test_load_pool_missing_is_user_error(tmp_path):
    with pytest.raises(DereverbError, match="no RIR pool"):
        simulate.load_pool(tmp_path)
