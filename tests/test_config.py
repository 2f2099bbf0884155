"""Config machinery: dict/YAML round trip, overrides, and clear errors for typos and wrong types."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest

from dereverb.config import FeatureConfig, RemovedKeyError, StftConfig, apply_overrides, from_dict, load_yaml, to_dict
from dereverb.errors import DereverbError


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    flags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Pruned:
    """A config that once had ``scale`` (default 1.0) and ``bands`` (default ``(1, 2)``)."""

    REMOVED: ClassVar[dict[str, Any]] = {"scale": 1.0, "bands": (1, 2)}
    steps: int = 10


@dataclasses.dataclass(frozen=True)
class Outer:
    stft: StftConfig = StftConfig()
    inner: Inner = Inner()
    note: str | None = None


def test_round_trip_through_dict():
    cfg = Outer(inner=Inner(lr=3e-4, flags=("a", "b")), note="hi")
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_int_becomes_float_and_list_becomes_tuple():
    cfg = from_dict(Inner, {"lr": 1, "flags": ["q"]})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.flags == ("q",)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"inner": {"lrr": 1}}, "unknown config key 'inner.lrr'"),
        ({"inner": {"steps": "ten"}}, "'inner.steps' must be an integer"),
        ({"inner": {"steps": 1.5}}, "'inner.steps' must be an integer"),
        ({"inner": 3}, "'inner' must be a mapping"),
        ({"stft": {"n_freq": 999}}, "n_freq"),
    ],
)
def test_bad_configs_fail_with_one_line(data, message):
    with pytest.raises(DereverbError) as e:
        from_dict(Outer, data)
    assert message in str(e.value)


def test_overrides_and_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("inner:\n  lr: 0.01\n")
    data = apply_overrides(load_yaml(path), ["inner.steps=5", "stft.n_fft=1024", "note=hello"])
    cfg = from_dict(Outer, data)
    assert (cfg.inner.lr, cfg.inner.steps, cfg.stft.n_fft, cfg.note) == (0.01, 5, 1024, "hello")
    with pytest.raises(DereverbError, match="KEY=VALUE"):
        apply_overrides({}, ["oops"])
    with pytest.raises(DereverbError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


@pytest.mark.parametrize("text, value", [("3e-4", 3e-4), ("1E3", 1000.0), ("-2.5e-1", -0.25), (".5e1", 5.0)])
def test_exponent_floats_without_a_dot_are_floats(tmp_path, text, value):
    """PyYAML (YAML 1.1) reads ``3e-4`` as a string; the README's ``--set train.lr=3e-4`` must work,
    in overrides and in recipe files alike."""
    assert from_dict(Outer, apply_overrides({}, [f"inner.lr={text}"])).inner.lr == value
    path = tmp_path / "r.yaml"
    path.write_text(f"inner:\n  lr: {text}\n")
    assert from_dict(Outer, load_yaml(path)).inner.lr == value
    with pytest.raises(DereverbError, match="'inner.lr' must be a float"):
        from_dict(Outer, {"inner": {"lr": "3e-4x"}})
    assert from_dict(Outer, {"note": "1e3"}).note == "1e3"  # a string field keeps the text


def test_feature_config_validates():
    with pytest.raises(DereverbError, match="compression"):
        FeatureConfig(compression="mel")


def test_removed_keys_load_at_their_old_default_and_fail_clearly_otherwise():
    """Files written before a key was removed hold it at its default (JSON: lists for tuples, 1 for
    1.0): those load as if it were absent; any other value is one error naming the key."""
    assert from_dict(Pruned, {"steps": 3, "scale": 1, "bands": [1, 2]}) == Pruned(steps=3)
    assert "REMOVED" not in to_dict(Pruned())
    with pytest.raises(RemovedKeyError, match=r"config key 'p.scale' was removed from dereverb; only its old "
                                              r"default \(1.0\) still loads, this sets 1.5"):
        from_dict(Pruned, {"scale": 1.5}, where="p.")
    with pytest.raises(DereverbError, match="'bands' was removed"):
        from_dict(Pruned, {"bands": [1, 2, 3]})
    with pytest.raises(DereverbError, match="unknown config key 'scales'"):
        from_dict(Pruned, {"scales": 1.0})
