"""Training loop: schedule, config errors, run folder, resume equality, NaN stop, 2-process DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import dereverb.wpe as wpe_mod
from dereverb import audio, checkpoint, losses
from dereverb.cli import main
from dereverb.config import to_dict
from dereverb.errors import DereverbError
from dereverb.model import DereverbModel, autocast_dtype
from dereverb.runlog import check_run_dir
from dereverb.train import StepInputs, TrainConfig, WeightAverage, _precision, load_config, lr_at, train

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.yaml"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, speech):
    """2 s of real speech and a 0.15 s synthetic exponentially decaying RIR, as files."""
    root = tmp_path_factory.mktemp("data")
    audio.write(root / "speech.wav", speech[0][:32000], 16000)
    rng = np.random.default_rng(0)
    t = np.arange(2400) / 16000
    rir = rng.standard_normal(2400) * np.exp(-t / 0.03) * 0.3
    rir[0] = 1.0
    audio.write(root / "rir.wav", rir.astype(np.float32), 16000, subtype="FLOAT")
    return root


def _overrides(data: Path, **train) -> list[str]:
    base = {"steps": 6, "batch_size": 2, "checkpoint_every": 3, "valid_every": 3, "valid_count": 1,
            "norm_batches": 1, "precision": "fp32", "progress": False, "warmup_steps": 2, "samples": 1,
            "pesq": False, "threads": 1}
    base.update(train)
    return [f"data.speech=[{data / 'speech.wav'}]", f"data.rirs=[{data / 'rir.wav'}]",
            "data.segment_seconds=0.256", "model.preset=tiny"] + [f"train.{k}={v}" for k, v in base.items()]


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # half way down the cosine
    assert lr_at(110, cfg) == pytest.approx(1e-4) == lr_at(500, cfg)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 120))


def test_recipes_load_and_presets_expand():
    cfg = load_config(SMOKE, ["train.lr=0.01", "model.output=mask"])
    assert cfg.train.lr == 0.01 and cfg.model.output == "mask" and cfg.model.base_channels == 8
    default = load_config(REPO / "recipes" / "default.yaml")
    assert default.model.depth == 6 and default.train.steps > 1000


def test_overlays_merge_key_by_key_and_the_experiment_overlays_load(tmp_path):
    overlay = tmp_path / "wide.yaml"
    overlay.write_text("model: {base_channels: 32}\ntrain: {lr: 0.005}\ndata: {speech: [a, b]}\n")
    cfg = load_config([SMOKE, overlay], ["train.lr=0.01"])
    assert cfg.model.base_channels == 32 and cfg.model.depth == 4  # the smoke preset, widened
    assert cfg.train.lr == 0.01 and cfg.train.steps == load_config(SMOKE).train.steps
    assert cfg.data.speech == ("a", "b") and cfg.data.rirs == load_config(SMOKE).data.rirs  # lists replace
    default_cfg = load_config(REPO / "recipes" / "default.yaml")
    for path in sorted((REPO / "recipes" / "experiments").glob("*.yaml")):
        assert load_config([REPO / "recipes" / "default.yaml", path]) != load_config(REPO / "recipes" / "default.yaml"), path
    realtime = load_config([REPO / "recipes" / "default.yaml", REPO / "recipes" / "realtime.yaml"])
    assert realtime.model.causal and realtime.model.output == "mask" and realtime.data == default_cfg.data
    v2 = load_config([REPO / "recipes" / "default.yaml", REPO / "recipes" / "v2.yaml"])  # issue 25's campaign
    assert v2.model == default_cfg.model and v2.valid == default_cfg.valid and v2.train.steps * v2.train.batch_size >= 1_536_000


@pytest.mark.parametrize("override, message", [
    ("train.lrate=1", "unknown config key 'train.lrate'; valid keys: batch_size"),
    ("train.steps=many", "'train.steps' must be an integer"),
    ("modle.depth=3", "unknown config key 'modle'"),
    ("train.precision=fp8", "train.precision must be"),
    ("train.ema_decay=1", "train.ema_decay must be in [0, 1)"),
    ("features.frontend=beamformer", "unknown frontend 'beamformer' (none, wpe)"),
    ("features.wpe_taps=0", "wpe_taps, wpe_delay and wpe_iterations must be at least 1"),
    ("train.mrstft_weight=1", "config key 'train.mrstft_weight' was removed from dereverb; only its old default (0.0)"),
    ("model.antialias=time", "config key 'model.antialias' was removed from dereverb"),
])
def test_bad_config_is_one_clear_line(override, message, tmp_path, capsys):
    code = main(["train", "--config", str(SMOKE), "--set", override, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_empty_data_path_fails_before_any_work(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["train", "--config", str(SMOKE), "--set", f"data.speech=[{tmp_path / 'empty'}]",
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "empty") in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_run_folder_and_resume_equals_uninterrupted(tiny_data, tmp_path, monkeypatch, capsys):
    cfg = load_config(None, _overrides(tiny_data))
    full, metrics = train(cfg, tmp_path / "full")
    run = tmp_path / "full"
    assert {"config.yaml", "last.safetensors", "best.safetensors", "state.pt", "train.log"} <= {p.name for p in run.iterdir()}
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000003", "step_0000006"]
    assert {p.name for p in (run / "samples" / "step_0000006").iterdir()} >= {"00.png", "00_enhanced.wav"}
    assert any((run / "tb").iterdir()) and set(metrics) == {"si_sdr", "lsd"}
    assert checkpoint.read_meta(run / "last.safetensors")["step"] == 6
    assert load_config(run / "config.yaml") == cfg  # the resolved config rebuilds the run

    # a kill right after the step-3 checkpoint, then the same command again
    real_save_state = checkpoint.save_state

    def save_then_die(path, state):
        real_save_state(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed")
    monkeypatch.setattr(checkpoint, "save_state", real_save_state)
    resumed, _ = train(cfg, tmp_path / "killed")
    assert "resumed from step 3" in capsys.readouterr().err
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    reloaded = checkpoint.load(tmp_path / "killed" / "last.safetensors")
    wave = torch.randn(1, 4000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        assert torch.equal(reloaded.enhance_wave(wave), resumed.enhance_wave(wave))


def test_data_workers_do_not_change_the_run(tiny_data, tmp_path):
    """The batch of a step is the same with or without DataLoader workers, and the features the
    workers compute (StepInputs) are the ones the main process would: identical weights."""
    runs = [train(load_config(None, _overrides(tiny_data, num_workers=w, valid_count=0)), tmp_path / f"w{w}")[0]
            for w in (0, 2)]
    for (name, a), b in zip(runs[0].state_dict().items(), runs[1].state_dict().values()):
        assert torch.equal(a, b), name


def test_step_inputs_are_the_models_features(tiny_data):
    cfg = load_config(None, _overrides(tiny_data))
    model = DereverbModel(cfg.stft, cfg.features, cfg.model)
    wave = torch.randn(2, 4096, generator=torch.Generator().manual_seed(0)) * 0.1
    model.fit_normalizer(model.stft(wave))
    out = StepInputs(model)({"reverb": wave, "clean": wave * 0.5})
    spec = model.stft(wave)
    assert torch.equal(out["reverb_spec"], spec)
    assert torch.allclose(out["x"], model.encode(spec)) and torch.allclose(out["y"], model.encode(spec * 0.5))
    assert out["x"].shape == (2, 1, cfg.stft.n_freq, spec.shape[-1])


def test_weight_average_follows_its_decay_and_copies_buffers():
    model = DereverbModel(*_tiny_configs())
    avg = WeightAverage(model, decay=0.9)
    start = [p.detach().clone() for p in model.net.parameters()]
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(1.0)
        model.normalizer.mean.fill_(3.0)
    avg.update(model)  # first update: d = min(0.9, 2 / 11)
    d = 2 / 11
    for a, s0, p in zip(avg.model.net.parameters(), start, model.net.parameters()):
        torch.testing.assert_close(a, d * s0 + (1 - d) * p)
        assert not a.requires_grad
    assert torch.equal(avg.model.normalizer.mean, model.normalizer.mean)
    for _ in range(200):
        avg.update(model)
    for a, p in zip(avg.model.net.parameters(), model.net.parameters()):
        torch.testing.assert_close(a, p)  # constant weights: the average converges to them
    again = WeightAverage(DereverbModel(*_tiny_configs()), 0.9, avg.state_dict())
    assert again.updates == 201 and all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                                            avg.model.state_dict().values()))


def _tiny_configs():
    cfg = load_config(None, ["model.preset=tiny"])
    return cfg.stft, cfg.features, cfg.model


def test_weight_average_is_what_the_run_saves_and_can_start_on_resume(tiny_data, tmp_path, capsys):
    plain = load_config(None, _overrides(tiny_data, steps=3))
    train(plain, tmp_path / "run")
    cfg = load_config(None, _overrides(tiny_data, steps=6, ema_decay=0.5))
    served, _ = train(cfg, tmp_path / "run")  # resumed at step 3 with the average switched on
    assert "weight average started at step 3" in capsys.readouterr().err
    state = checkpoint.load_state(tmp_path / "run" / "state.pt")
    assert state["ema"]["updates"] == 3
    saved = checkpoint.load(tmp_path / "run" / "last.safetensors").state_dict()
    for name, value in saved.items():
        assert torch.equal(value, state["ema"]["weights"][name]), name
        assert torch.equal(value, served.state_dict()[name]), name
    assert not served.training
    moved = [n for n, v in saved.items() if n.startswith("net.") and v.is_floating_point()
             and not torch.equal(v, state["model"][n]) and "running" not in n]
    assert moved  # the live weights (kept for resuming) are not the average


def _sections(cfg) -> dict:
    return {"stft": cfg.stft, "features": cfg.features, "model": cfg.model}


def test_resume_check_reads_old_configs_with_todays_defaults(tmp_path):
    """A run folder saved before a model field existed (here ``dropout``) still resumes at that
    field's default, and one saved before a field was removed (``antialias``) at that field's old
    default; a real difference, or a removed field set otherwise, is refused."""
    cfg = load_config(None, ["model.preset=tiny"])
    saved = to_dict(cfg)
    del saved["model"]["dropout"]
    saved["model"]["antialias"] = "none"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    (tmp_path / "state.pt").write_bytes(b"")
    check_run_dir(tmp_path, _sections(cfg))
    with pytest.raises(DereverbError, match="different model configuration"):
        check_run_dir(tmp_path, _sections(load_config(None, ["model.preset=tiny", "model.dropout=0.5"])))
    with pytest.raises(DereverbError, match="different model configuration"):
        check_run_dir(tmp_path, _sections(load_config(None, ["model.preset=tiny", "model.depth=3"])))
    saved["model"]["antialias"] = "time"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(DereverbError, match="cannot resume this run: config key 'model.antialias' was removed"):
        check_run_dir(tmp_path, _sections(cfg))


def test_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(tiny_data, tmp_path, monkeypatch):
    cfg = load_config(None, _overrides(tiny_data, valid_count=0))
    calls = {"n": 0}
    real = losses.spectral_loss

    def nan_at_five(pred, target):
        calls["n"] += 1
        return real(pred, target) * (float("nan") if calls["n"] == 5 else 1.0)

    monkeypatch.setattr(losses, "spectral_loss", nan_at_five)
    with pytest.raises(DereverbError, match="loss is nan at step 5"):
        train(cfg, tmp_path / "run")
    assert checkpoint.read_meta(tmp_path / "run" / "last.safetensors")["step"] == 3
    assert checkpoint.load_state(tmp_path / "run" / "state.pt")["step"] == 3


@pytest.mark.parametrize("variant", [["model.output=complex", "features.compression=power"],
                                     ["model.output=mask", "train.gan.enabled=true", "train.gan.base_channels=8"],
                                     ["model.output=mask", "train.relative_floor=0.1"]])
def test_complex_and_gan_variants_train(tiny_data, tmp_path, variant):
    cfg = load_config(None, _overrides(tiny_data, steps=2, checkpoint_every=2, valid_every=2, samples=0) + variant)
    model, metrics = train(cfg, tmp_path / "run")
    assert np.isfinite(metrics["si_sdr"])
    state = checkpoint.load_state(tmp_path / "run" / "state.pt")
    assert ("disc" in state) == cfg.train.gan.enabled
    assert checkpoint.load(tmp_path / "run").model_config == cfg.model


def test_gan_generator_keeps_the_runs_relative_loss(tiny_data, tmp_path, monkeypatch):
    """With ``train.gan`` and ``train.relative_floor`` the generator's loss is the adversarial term
    plus ``l1_weight`` x the relative loss, not a plain L1 in its place."""
    relative, given = [], []
    real_relative, real_generator = losses.relative_spectral_loss, losses.generator_loss
    monkeypatch.setattr(losses, "relative_spectral_loss", lambda *a, **k: relative.append(real_relative(*a, **k)) or relative[-1])
    monkeypatch.setattr(losses, "generator_loss", lambda logits, rec, *a, **k: given.append(rec) or real_generator(logits, rec, *a, **k))
    cfg = load_config(None, _overrides(tiny_data, steps=2, checkpoint_every=2, valid_every=2, samples=0)
                      + ["train.gan.enabled=true", "train.gan.base_channels=8", "train.relative_floor=0.1"])
    train(cfg, tmp_path / "run")
    assert len(given) == 2 and all(g is r for g, r in zip(given, relative))


def test_init_fine_tunes_a_checkpoint_with_a_wpe_frontend(tiny_data, tmp_path, monkeypatch):
    """``train.init`` starts from a checkpoint's weights and normaliser (not refitted), and a WPE
    frontend runs on every training input; a different network is refused."""
    base = _overrides(tiny_data, steps=2, checkpoint_every=2, valid_every=2, samples=0)
    src, _ = train(load_config(None, base), tmp_path / "src")
    seen = []
    real = wpe_mod.wpe
    monkeypatch.setattr(wpe_mod, "wpe", lambda spec, *a: seen.append(spec.shape) or real(spec, *a))
    wpe_args = ["features.frontend=wpe", "features.wpe_taps=4", "features.wpe_iterations=1"]
    cfg = load_config(None, _overrides(tiny_data, steps=1, checkpoint_every=1, valid_every=1, samples=0,
                                       init=tmp_path / "src") + wpe_args)
    monkeypatch.setattr(DereverbModel, "fit_normalizer", lambda *a: pytest.fail("init must keep the normaliser"))
    tuned, _ = train(cfg, tmp_path / "tuned")
    assert seen and seen[0][0] == 2  # the first training batch went through WPE
    torch.testing.assert_close(tuned.normalizer.mean, src.normalizer.mean)
    assert checkpoint.load(tmp_path / "tuned").feature_config.frontend == "wpe"
    other = load_config(None, _overrides(tiny_data, steps=1, init=tmp_path / "src") + ["model.base_channels=4"])
    with pytest.raises(DereverbError, match="differ from this run"):
        train(other, tmp_path / "other")


def test_init_across_compressions_keeps_the_network_and_refits_the_normaliser(tiny_data, tmp_path, monkeypatch):
    """A log-magnitude checkpoint can start a power-law run: the network's weights carry over (with
    lr 0 they stay exactly), the normaliser is fitted on the new features."""
    src, _ = train(load_config(None, _overrides(tiny_data, steps=2, samples=0)), tmp_path / "src")
    fitted = []
    real_fit = DereverbModel.fit_normalizer
    monkeypatch.setattr(DereverbModel, "fit_normalizer", lambda m, s: fitted.append(s.shape) or real_fit(m, s))
    cfg = load_config(None, _overrides(tiny_data, steps=1, samples=0, lr=0.0, init=tmp_path / "src")
                      + ["features.compression=power"])
    tuned, _ = train(cfg, tmp_path / "tuned")
    assert fitted, "another compression needs its own normaliser"
    for (name, a), b in zip(src.net.named_parameters(), tuned.net.parameters()):
        torch.testing.assert_close(a, b, msg=name)
    assert not torch.allclose(tuned.normalizer.mean, src.normalizer.mean)
    assert checkpoint.load(tmp_path / "tuned").feature_config.compression == "power"


WORKER = """
import sys, torch
from dereverb.train import load_config, train
import torch.distributed as dist
run, args = sys.argv[1], sys.argv[2:]
train(load_config(None, args + ["train.steps=2"]), run)  # then the same run, longer: a resume
model, _ = train(load_config(None, args), run)
torch.save(model.state_dict(), f"{run}/rank{dist.get_rank()}.pt")
"""


@pytest.mark.slow
def test_two_process_gloo_ddp_keeps_ranks_identical_and_resumes(tiny_data, tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = _overrides(tiny_data, steps=4, checkpoint_every=2, valid_every=2, ema_decay=0.5) + [  # GAN: two
        "train.gan.enabled=true", "train.gan.base_channels=8"]  # DDP modules; the returned model: the average
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(tmp_path / "worker.py"), str(run)] + args,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from step 2" in done.stderr
    rank0, rank1 = (torch.load(run / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert checkpoint.read_meta(run / "last.safetensors")["step"] == 4
    state = checkpoint.load_state(run / "state.pt")
    assert state["step"] == 4 and state["ema"]["updates"] == 4


@pytest.fixture(scope="module")
def paired_folders(tiny_data):
    """``clean/`` and ``reverb/`` with two aligned 1 s pairs (speech convolved with the tiny RIR)."""
    import scipy.signal

    rir = audio.read(tiny_data / "rir.wav")[0][0]
    speech = audio.read(tiny_data / "speech.wav")[0][0]
    for sub in ("clean", "reverb"):
        (tiny_data / "pairs" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(2):
        dry = speech[i * 16000 : (i + 1) * 16000]
        audio.write(tiny_data / "pairs" / "clean" / f"u{i}.wav", dry, 16000, subtype="FLOAT")
        wet = scipy.signal.fftconvolve(dry, rir)[: len(dry)].astype(np.float32)
        audio.write(tiny_data / "pairs" / "reverb" / f"u{i}.wav", wet, 16000, subtype="FLOAT")
    return tiny_data / "pairs"


@pytest.mark.filterwarnings("ignore:paired folders")
@pytest.mark.parametrize("kind", ["paired", "store"])
def test_trains_from_paired_folders_and_the_feature_store(kind, tiny_data, paired_folders, tmp_path):
    source = [f"source.kind={kind}", f"source.clean_dir={paired_folders / 'clean'}",
              f"source.reverb_dir={paired_folders / 'reverb'}"]
    if kind == "store":
        from dereverb import store
        from dereverb.config import StftConfig

        store.prepare(store.StoreConfig(clean_dir=str(paired_folders / "clean"),
                                        reverb_dir=str(paired_folders / "reverb")), StftConfig(), tmp_path / "store")
        source = ["source.kind=store", f"source.store={tmp_path / 'store'}"]
    cfg = load_config(None, _overrides(tiny_data, steps=2, checkpoint_every=2, valid_every=2, samples=0) + source)
    model, metrics = train(cfg, tmp_path / "run")
    assert np.isfinite(metrics["si_sdr"]) and checkpoint.read_meta(tmp_path / "run")["step"] == 2
    with pytest.raises(DereverbError, match="fewer than train.batch_size=4"):  # two items only
        train(load_config(None, _overrides(tiny_data, batch_size=4) + source), tmp_path / "few")
    if kind == "paired":
        with pytest.raises(DereverbError, match="no matching"):
            train(load_config(None, _overrides(tiny_data) + source + [f"source.reverb_dir={tmp_path}"]), tmp_path / "bad")


def test_precision_auto_uses_channels_last_on_every_cpu_and_fp32_stays_plain():
    cpu = torch.device("cpu")
    assert _precision(TrainConfig(precision="fp32"), cpu) == (None, False)
    assert _precision(TrainConfig(precision="auto"), cpu) == (autocast_dtype(cpu), True)
    assert _precision(TrainConfig(precision="bf16"), cpu) == (torch.bfloat16, True)
