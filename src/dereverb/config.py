"""Typed, frozen configuration and its round trip to dicts, YAML and ``key=value`` overrides.

Every module that needs settings defines a frozen dataclass next to the code that reads it
(``StftConfig`` here because every other module needs it).  This module holds the generic
machinery: building a dataclass from a nested dict with type and key checks, so that a typo in a
recipe or a ``--set`` flag is one clear error before any work starts.

Keys that dereverb no longer has stay readable where they meant nothing: a config class lists
them with their old defaults in ``REMOVED``, and :func:`from_dict` drops such a key when it holds
that default (as every model file, run folder and resolved ``config.yaml`` written before the
removal does), or raises :class:`RemovedKeyError` naming it when it holds anything else.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import DereverbError

T = TypeVar("T")


class RemovedKeyError(DereverbError):
    """A config key that dereverb no longer has, set to something other than its old default."""


@dataclasses.dataclass(frozen=True)
class StftConfig:
    """Short-time Fourier transform settings, saved with every model.

    The default (16 kHz, 512-point Hann, hop 128) gives 257 bins; ``n_freq = 256`` keeps all but
    the Nyquist bin so the frequency axis halves cleanly through eight U-Net levels
    (Ernst et al., EUSIPCO 2018 use the same 256-bin trim).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 128
    win_length: int = 512
    window: str = "hann"
    n_freq: int = 256

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise DereverbError(f"stft: win_length {self.win_length} > n_fft {self.n_fft}")
        if not 0 < self.n_freq <= self.n_fft // 2 + 1:
            raise DereverbError(f"stft: n_freq must be in 1..{self.n_fft // 2 + 1}")
        if self.window not in ("hann", "hamming", "sqrt_hann"):
            raise DereverbError(f"stft: unknown window {self.window!r} (hann, hamming, sqrt_hann)")


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """How magnitudes become network inputs: compression, then normalisation.

    ``compression``: ``"log"`` (dB with a floor at ``floor_db`` below 1.0 full scale) or
    ``"power"`` (``|X| ** power``; 0.3, as in the recipe and the bundled model).  ``normalization``:
    ``"global"`` (one mean/std), ``"per_freq"`` (a mean/std per bin) or ``"none"``.  The
    statistics themselves are fitted on training data and stored in the checkpoint.

    ``frontend``: ``"none"``, or ``"wpe"``: single-channel WPE (:mod:`dereverb.wpe`, ``wpe_taps``
    taps after ``wpe_delay`` frames, ``wpe_iterations`` iterations) on the reverberant STFT before
    anything else, in training and at inference alike; the network then refines WPE's output
    (its magnitude and, for magnitude models, its phase).
    """

    compression: str = "log"
    floor_db: float = -100.0
    power: float = 0.3
    normalization: str = "per_freq"
    frontend: str = "none"
    wpe_taps: int = 40
    wpe_delay: int = 3
    wpe_iterations: int = 3

    def __post_init__(self) -> None:
        if self.compression not in ("log", "power"):
            raise DereverbError(f"features: unknown compression {self.compression!r} (log, power)")
        if self.normalization not in ("global", "per_freq", "none"):
            raise DereverbError(
                f"features: unknown normalization {self.normalization!r} (global, per_freq, none)"
            )
        if not 0 < self.power <= 1:
            raise DereverbError("features: power must be in (0, 1]")
        if self.frontend not in ("none", "wpe"):
            raise DereverbError(f"features: unknown frontend {self.frontend!r} (none, wpe)")
        if min(self.wpe_taps, self.wpe_delay, self.wpe_iterations) < 1:
            raise DereverbError("features: wpe_taps, wpe_delay and wpe_iterations must be at least 1")


def require(checks: list[tuple[bool, str]]) -> None:
    """Raise :class:`DereverbError` with the message of the first failed ``(ok, message)`` check."""
    for ok, message in checks:
        if not ok:
            raise DereverbError(message)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass (possibly nested) as plain JSON/YAML-safe types."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and wrong types.

    Nested dataclass fields take nested dicts.  Missing keys keep their defaults.  Keys listed in
    ``cls.REMOVED`` are dropped when they hold their old default (see the module docstring).
    """
    data = _drop_removed(cls, dict(data or {}), where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise DereverbError(
            f"unknown config key {where + unknown[0]!r}; valid keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _drop_removed(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data`` without the keys ``cls.REMOVED`` lists; one set to another value than the old
    default is a :class:`RemovedKeyError`."""
    removed: dict[str, Any] = getattr(cls, "REMOVED", {})
    for key in [k for k in data if k in removed]:
        value = data.pop(key)
        if _plain(value) != _plain(removed[key]):
            raise RemovedKeyError(
                f"config key {where + key!r} was removed from dereverb; only its old default "
                f"({_plain(removed[key])!r}) still loads, this sets {_plain(value)!r} (use the dereverb version "
                "that wrote it, or delete the key)"
            )
    return data


def _plain(value: Any) -> Any:
    """``value`` as JSON would hold it (tuples as lists), so a default compares with a loaded value."""
    return json.loads(json.dumps(value, default=str))


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``, converting the few safe cases (int->float, list->tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise DereverbError(f"config key {key!r} must be a mapping")
        return from_dict(tp, value, where=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except DereverbError as e:
                errors.append(str(e))
        raise DereverbError(errors[0] if errors else f"config key {key!r} has a wrong type")
    if origin is typing.Literal:
        if value not in args:
            raise DereverbError(f"config key {key!r} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        items = [_coerce(inner, v, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 (PyYAML) reads "3e-4" as a string: it wants "3.0e-4"
    if tp is bool and not isinstance(value, bool):
        raise DereverbError(f"config key {key!r} must be true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DereverbError(f"config key {key!r} must be an integer, got {value!r}")
    if tp in (str, float) and not isinstance(value, tp):
        raise DereverbError(f"config key {key!r} must be a {tp.__name__}, got {value!r}")
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a :class:`DereverbError`."""
    path = Path(path)
    if not path.is_file():
        raise DereverbError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DereverbError(f"{path}: not valid YAML ({e.__class__.__name__})") from e
    except UnicodeDecodeError as e:  # an audio or other binary file given as a config
        raise DereverbError(f"{path}: not a text file; expected a YAML config") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DereverbError(f"{path}: a config file must hold a mapping of keys")
    return data


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` on top of ``base``: mappings merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict copy."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise DereverbError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DereverbError(f"--set {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return out
