"""Checkpoint round trips and the clear errors for every way a model file can be bad."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dereverb import checkpoint
from dereverb.config import FeatureConfig, StftConfig
from dereverb.errors import DereverbError
from dereverb.model import DereverbModel, ModelConfig, model_config
from dereverb.train import TrainConfig, load_config


def _model(output="mapping"):
    torch.manual_seed(0)
    feats = FeatureConfig(compression="power") if output == "complex" else FeatureConfig()
    model = DereverbModel(StftConfig(n_fft=256, hop_length=64, win_length=256, n_freq=128), feats,
                          model_config("tiny", output=output, norm="batch"))
    spec = model.stft(torch.randn(4, 4000))
    model.fit_normalizer(spec)
    model.train()
    model.net(model.encode(spec))  # move the batch-norm running statistics off their defaults
    return model.eval()


@pytest.mark.parametrize("output", ["mapping", "mask", "complex"])
def test_save_load_gives_identical_outputs(tmp_path, output):
    model = _model(output)
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, model, {"step": 12, "metrics": {"si_sdr": 3.5}})
    again = checkpoint.load(path)
    wave = torch.randn(2, 3000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model.enhance_wave(wave), again.enhance_wave(wave))
    assert torch.equal(again.normalizer.mean, model.normalizer.mean)
    assert again.stft_config == model.stft_config and again.model_config == model.model_config
    assert not again.training
    meta = checkpoint.read_meta(path)
    assert meta["step"] == 12 and meta["metrics"] == {"si_sdr": 3.5}
    assert meta["format_version"] == checkpoint.FORMAT_VERSION and meta["stft"]["n_fft"] == 256
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left


def test_run_folder_prefers_best_then_last(tmp_path):
    model = _model()
    with pytest.raises(DereverbError, match="holds no checkpoint"):
        checkpoint.load(tmp_path)
    checkpoint.save(tmp_path / "last.safetensors", model, {"step": 2})
    assert checkpoint.read_meta(tmp_path)["step"] == 2
    checkpoint.save(tmp_path / "best.safetensors", model, {"step": 1})
    assert checkpoint.read_meta(tmp_path)["step"] == 1
    assert isinstance(checkpoint.load(tmp_path), DereverbModel)


def _corrupt(tmp_path, data: bytes, name: str = "bad"):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(data)
    return path


def test_bad_files_are_one_clear_error(tmp_path):
    model = _model()
    good = tmp_path / "good.safetensors"
    checkpoint.save(good, model)
    raw = good.read_bytes()
    flipped = bytearray(raw)
    flipped[-50] ^= 0xFF
    cases = {
        "no such checkpoint": tmp_path / "missing.safetensors",
        "truncated or corrupt": _corrupt(tmp_path, raw[: len(raw) // 2], "half"),
        "checksum mismatch": _corrupt(tmp_path, bytes(flipped), "flipped"),
    }
    for message, path in cases.items():
        with pytest.raises(DereverbError, match=message) as err:
            checkpoint.load(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_empty_and_foreign_files_are_refused(tmp_path):
    empty = _corrupt(tmp_path, b"")
    with pytest.raises(DereverbError, match="truncated or corrupt"):
        checkpoint.load(empty)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(DereverbError, match="without dereverb metadata"):
        checkpoint.load(foreign)


def test_future_format_version_asks_for_an_upgrade(tmp_path):
    path = tmp_path / "future.safetensors"
    doc = {"format_version": checkpoint.FORMAT_VERSION + 1}
    save_file({"w": torch.zeros(2)}, str(path), metadata={checkpoint.META_KEY: json.dumps(doc)})
    with pytest.raises(DereverbError, match="upgrade dereverb"):
        checkpoint.read_meta(path)


def test_save_into_missing_folder_is_clear(tmp_path):
    with pytest.raises(DereverbError, match="does not exist"):
        checkpoint.save(tmp_path / "nope" / "m.safetensors", _model())


def test_resume_state_round_trip_without_pickle(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.net.parameters(), lr=1e-3)
    model.net(torch.randn(1, 1, 128, 16)).mean().backward()
    opt.step()
    state = {"step": 7, "optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "best": 1.5}
    path = tmp_path / "last.state.pt"
    checkpoint.save_state(path, state)
    got = checkpoint.load_state(path)
    assert got["step"] == 7 and got["best"] == 1.5 and torch.equal(got["rng"], state["rng"])
    fresh = torch.optim.AdamW(model.net.parameters(), lr=1e-3)
    fresh.load_state_dict(got["optimizer"])
    k = next(iter(opt.state))
    assert torch.equal(fresh.state[k]["exp_avg"], opt.state[k]["exp_avg"])
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DereverbError, match="resume state is unreadable"):
        checkpoint.load_state(path)


def test_describe_and_info_say_what_a_model_file_holds(tmp_path, capsys):
    from dereverb.cli import main
    from dereverb.model import count_parameters

    model = _model("mask")
    checkpoint.save(tmp_path / "best.safetensors", model,
                    {"step": 12, "metrics": {"si_sdr": 3.5}, "train": {"steps": 40, "batch_size": 4, "lr": 0.003,
                                                                       "loss": "l1", "ema_decay": 0.999}})
    text = checkpoint.describe(tmp_path)  # a run folder resolves to its best file
    assert text.startswith(str(tmp_path / "best.safetensors"))
    assert f"mask output, 4 levels, 8->48 channels, 3x3, batch norm; {count_parameters(model.net):,} parameters" in text
    assert "STFT 256/64 hann at 16000 Hz, 128 bins; log (floor -100 dB)" in text
    assert "step 12 of 40, batch 4, lr 0.003, weight average 0.999" in text and "si_sdr 3.500" in text
    assert main(["info", "--model", str(tmp_path)]) == 0 and capsys.readouterr().out == text
    assert main(["info", "--model", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == {"si_sdr": 3.5}
    assert main(["info"]) == 2 and "nothing to show" in capsys.readouterr().err


def _as_written_before(src, dst, **sections):
    """A copy of model file ``src`` whose metadata sections also hold ``sections``' keys, as files
    written by older versions do (the weights and their checksum unchanged)."""
    with safe_open(str(src), framework="pt") as f:
        doc = json.loads(f.metadata()[checkpoint.META_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for name, keys in sections.items():
        doc[name] = {**doc.get(name, {}), **keys}
    save_file(tensors, str(dst), metadata={checkpoint.META_KEY: json.dumps(doc)})
    return dst


OLD_MODEL_KEYS = {"dropout_levels": 3, "output_activation": "auto", "mask_max": 1.0, "antialias": "none"}
OLD_TRAIN_KEYS = {"loss": "l1", "mrstft_weight": 0.0, "log_mag_weight": 0.0, "si_sdr_weight": 0.0,
                  "weight_decay": 0.0001, "betas": [0.9, 0.999], "grad_clip": 5.0, "device": "auto",
                  "valid_seed": 1234, "best_metric": "si_sdr"}
OLD_DATA_KEYS = {"level_db": [-35.0, -15.0], "min_rms_db": -50.0, "epoch_size": 0,
                 "noise_slope_range": [-6.0, 0.0], "decay_scales": []}


def test_old_files_with_removed_keys_at_their_defaults_load_and_run_alike(tmp_path):
    """Keys removed from the configs still load where they hold the value every file of their time
    held (the old default); the model is the same and gives the same output."""
    model = _model("mask")
    checkpoint.save(tmp_path / "new.safetensors", model, {"step": 3, "train": {"steps": 5}})
    old = _as_written_before(tmp_path / "new.safetensors", tmp_path / "old.safetensors", model=OLD_MODEL_KEYS,
                             train=OLD_TRAIN_KEYS, data=OLD_DATA_KEYS)
    again = checkpoint.load(old)
    assert again.model_config == model.model_config
    wave = torch.randn(1, 3000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(again.enhance_wave(wave), model.enhance_wave(wave))
    assert "mask output" in checkpoint.describe(old)
    assert OLD_MODEL_KEYS == ModelConfig.REMOVED and OLD_TRAIN_KEYS == TrainConfig.REMOVED  # the whole list
    # a run folder's config.yaml from then, used as a recipe, loads too
    yaml_text = json.dumps({"model": {"preset": "tiny", **OLD_MODEL_KEYS}, "train": OLD_TRAIN_KEYS,
                            "data": OLD_DATA_KEYS, "valid": OLD_DATA_KEYS, "source": {"align": True}})
    (tmp_path / "config.yaml").write_text(yaml_text)  # JSON is YAML
    assert load_config(tmp_path / "config.yaml") == load_config(None, ["model.preset=tiny"])


@pytest.mark.parametrize("section, key, value", [("model", "antialias", "time"), ("model", "mask_max", 2.0)])
def test_a_removed_key_with_another_value_is_one_clear_error(tmp_path, section, key, value):
    checkpoint.save(tmp_path / "new.safetensors", _model())
    old = _as_written_before(tmp_path / "new.safetensors", tmp_path / "old.safetensors", **{section: {key: value}})
    for load in (checkpoint.load, checkpoint.describe):
        with pytest.raises(DereverbError) as err:
            load(old)
        message = str(err.value)
        assert message.startswith(f"{old}: config key '{section}.{key}' was removed from dereverb")
        assert f"this sets {value!r}" in message and "\n" not in message
