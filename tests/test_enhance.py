"""Dereverberator: chunked == whole-signal, lengths, rates, channels, strength, silence, clipping,
streaming files with subtypes preserved, and refusals that protect inputs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from dereverb import audio, checkpoint
from dereverb.chunking import ChunkConfig, OverlapAdd
from dereverb.enhance import PEAK, Dereverberator, mirror_frames
from dereverb.errors import DereverbError
from dereverb.wpe import WpeConfig, wpe
from tiny import one_thread, tiny_model  # noqa: F401  (one_thread: autouse fixture)

SMALL_CHUNKS = ChunkConfig(chunk_frames=160, margin_frames=24, fade_frames=16)  # tiny model grid: 16


@pytest.fixture(scope="module")
def reverberant(speech, rir_16k) -> np.ndarray:
    """5 s of real speech convolved with a real church RIR, peak 0.5: ``(S,)`` float32 at 16 kHz."""
    x = scipy.signal.fftconvolve(speech[0], rir_16k)[: len(speech[0])]
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def d() -> Dereverberator:
    return Dereverberator(tiny_model(), device="cpu", chunk=SMALL_CHUNKS)


def rel_rms(a, b) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_chunked_equals_whole_signal_without_a_seam(d, reverberant):
    x = reverberant  # 5 s: 626 frames, six 160-frame segments
    whole = Dereverberator(d.model, device="cpu", chunk=ChunkConfig(chunk_frames=0))(x, 16000)
    chunked = d(x, 16000)
    assert rel_rms(chunked, whole) < 1e-3
    # no seam: the worst frame anywhere is as close as the average (spectrogram frame energy, dB)
    frame = lambda y: 10 * np.log10(np.mean(np.abs(torch.stft(torch.from_numpy(y), 512, 128,
        window=torch.hann_window(512), return_complex=True).numpy()) ** 2, axis=0) + 1e-12)
    assert np.max(np.abs(frame(chunked) - frame(whole))) < 0.01


def test_overlap_add_segments_are_bounded_and_exact_for_identity():
    seen = []
    ola = OverlapAdd(lambda x: seen.append(x.shape[1]) or x * 2, seg=1000, step=600, margin=100)
    x = np.random.default_rng(0).standard_normal((2, 7777)).astype(np.float32)
    out = [y for i in range(0, 7777, 333) for y in ola.feed(x[:, i : i + 333])] + ola.flush()
    y = np.concatenate(out, axis=1)
    assert y.shape == x.shape and max(seen) <= 1000
    np.testing.assert_allclose(y, 2 * x, rtol=1e-6)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_any_rate_keeps_length_shape_and_dtype(d, reverberant, rate):
    x = audio.resample(reverberant[:24001], 16000, rate)[: rate + 7]  # odd lengths
    x2 = np.stack([x, 0.5 * x]).astype(np.float64)
    y = d(x2, rate)
    assert y.shape == x2.shape and y.dtype == np.float64 and np.isfinite(y).all()
    y1 = d(x2[0], rate)
    assert y1.shape == x2[0].shape
    np.testing.assert_allclose(y1, y[0], atol=1e-6)


def test_tensor_in_tensor_out_and_batches(d, reverberant):
    a, b = reverberant[:20000], reverberant[20000:40000]
    y = d(torch.from_numpy(np.stack([a, b])), 16000)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 20000) and y.dtype == torch.float32
    np.testing.assert_allclose(y[1].numpy(), d(b, 16000), atol=1e-6)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_identity_network_returns_the_input_aligned(reverberant, rate):
    """With a pass-through spectrum the whole chain (resampling, segments, fades, iSTFT) is the
    identity at the model rate and a round trip through it otherwise: no delay, no seam."""
    x = audio.resample(reverberant[:40000], 16000, rate)
    d = Dereverberator(tiny_model(), "cpu", chunk=SMALL_CHUNKS)
    d._spectrum = lambda spec: spec
    expected = x if rate == 16000 else audio.resample(audio.resample(x, rate, 16000), 16000, rate)
    assert rel_rms(d(x, rate), expected) < 1e-4


@pytest.mark.parametrize("rate", [16000, 44100])
def test_strength_mixes_aligned_waveforms(reverberant, rate):
    x = audio.resample(reverberant[:32000], 16000, rate)
    model = tiny_model()
    full = Dereverberator(model, "cpu", chunk=SMALL_CHUNKS)(x, rate)
    none = Dereverberator(model, "cpu", strength=0.0, chunk=SMALL_CHUNKS)(x, rate)
    half = Dereverberator(model, "cpu", strength=0.5, chunk=SMALL_CHUNKS)(x, rate)
    np.testing.assert_array_equal(none, x)  # strength 0 gives the input back, sample for sample
    np.testing.assert_allclose(half, 0.5 * full + 0.5 * x, atol=1e-6)
    with pytest.raises(DereverbError, match="strength"):
        Dereverberator(model, "cpu", strength=1.5)


def test_silence_in_silence_out(d, reverberant):
    x = np.zeros((2, 40000), np.float32)
    x[1, 10000:30000] = reverberant[:20000]
    y = d(x, 16000)
    assert np.isfinite(y).all()
    assert not y[0].any()  # exactly zero, no noise burst
    assert not y[1, :9000].any() and not y[1, 31000:].any()  # digital silence inside a signal too
    assert np.abs(y[1]).max() > 1e-3


def test_phase_modes(reverberant):
    x = reverberant[:16000]
    gl = Dereverberator(tiny_model(), "cpu", phase="griffinlim", chunk=SMALL_CHUNKS)(x, 16000)
    rev = Dereverberator(tiny_model(), "cpu", phase="reverberant", chunk=SMALL_CHUNKS)(x, 16000)
    assert gl.shape == x.shape and np.isfinite(gl).all() and rel_rms(gl, rev) > 1e-3
    with pytest.raises(DereverbError, match="supports reverberant or griffinlim"):
        Dereverberator(tiny_model(), "cpu", phase="model")
    cplx = Dereverberator(tiny_model("complex"), "cpu", chunk=SMALL_CHUNKS)
    assert cplx.phase == "model" and cplx(x, 16000).shape == x.shape
    with pytest.raises(DereverbError, match="supports model"):
        Dereverberator(tiny_model("complex"), "cpu", phase="reverberant")


def test_would_clip_is_scaled_down_with_a_warning(reverberant):
    d = Dereverberator(tiny_model(), "cpu", chunk=SMALL_CHUNKS)
    d._spectrum = lambda spec: 4 * spec  # a "model" that amplifies
    x = reverberant[:16000] / np.abs(reverberant[:16000]).max() * 0.9
    with pytest.warns(UserWarning, match="would clip"):
        y = d(x, 16000)
    assert np.abs(y).max() == pytest.approx(PEAK, rel=1e-6)
    np.testing.assert_allclose(y, x * PEAK / np.abs(x).max(), atol=1e-5)


@pytest.mark.parametrize("bad", [np.array([np.nan, 0.0]), np.zeros(0), np.zeros(10, bool), np.zeros(10, np.uint64)])
def test_bad_arrays_are_clear_errors(d, bad):
    with pytest.raises(DereverbError):
        d(bad, 16000)


@pytest.mark.parametrize("shape", [(1600, 2), (32000, 2), (8, 1600, 2)])
def test_samples_channels_arrays_are_refused_or_taken_when_said(d, reverberant, shape):
    """soundfile's ``(samples, channels)`` passed as ``(channels, samples)`` used to run as 1600
    one-sample channels (seconds to hours of garbage); it is an error naming the expected shape,
    and ``channels_first=False`` takes it, giving the transpose of the ``(C, S)`` result."""
    x = np.resize(reverberant, shape[:-2] + shape[-1:] + shape[-2:-1])  # (..., C, S)
    x[..., 1, :] *= 0.5
    with pytest.raises(DereverbError, match=r"read as \d+ channels of 2 samples.*channels_first=False"):
        d(np.swapaxes(x, -1, -2), 16000)
    if shape[-2] > 2000:
        return  # the error is the point; enhancing 2 s is test_any_rate's job
    y = d(np.swapaxes(x, -1, -2), 16000, channels_first=False)
    assert y.shape == shape and y.dtype == x.dtype
    np.testing.assert_allclose(y, np.swapaxes(d(x, 16000), -1, -2), atol=1e-6)
    t = d(torch.from_numpy(np.swapaxes(x, -1, -2)), 16000, channels_first=False)
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.from_numpy(y), atol=1e-6)


def test_int_pcm_arrays_are_converted_and_returned_in_their_type(d, reverberant):
    x = reverberant[:8000]
    pcm = np.round(x * 32768).astype(np.int16)
    y = d(pcm, 16000)
    expected = d(pcm / np.float32(32768), 16000)
    assert y.dtype == np.int16 and y.shape == pcm.shape
    assert np.abs(y.astype(np.int32) - np.round(expected * 32768)).max() <= 1  # one step of rounding
    y32 = d(pcm.astype(np.int32) << 16, 16000)
    assert y32.dtype == np.int32 and np.abs(y32 / 2.0**31 - expected).max() < 1e-6


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_file_streams_in_blocks_and_keeps_subtype(tmp_path, reverberant, subtype):
    x = np.stack([reverberant[:24000], reverberant[24000:48000]])  # (2, S)
    x = audio.resample(x, 16000, 44100)
    src, dst = tmp_path / "in.wav", tmp_path / "out" / "in.wav"
    sf.write(src, x.T, 44100, subtype=subtype)
    digest = sha(src)
    d = Dereverberator(tiny_model(), "cpu", chunk=ChunkConfig(160, 24, 16, block_frames=5000))
    seconds = d.enhance_file(src, dst)
    assert seconds == pytest.approx(x.shape[1] / 44100)
    info = sf.info(dst)
    assert (info.subtype, info.samplerate, info.channels, info.frames) == (subtype, 44100, 2, x.shape[1])
    expected = d(audio.read(src)[0], 44100)
    got = audio.read(dst)[0]
    tol = {"PCM_16": 1e-4, "PCM_24": 1e-6}.get(subtype, 1e-6)
    assert np.abs(got - expected).max() < tol
    assert sha(src) == digest
    assert sorted(p.name for p in dst.parent.iterdir()) == ["in.wav"]  # no scratch files left


def test_file_mono_and_model_rate(tmp_path, reverberant):
    x = audio.resample(np.stack([reverberant[:24000], reverberant[:24000]]), 16000, 48000)
    src = tmp_path / "in.flac"
    sf.write(src, x.T, 48000, subtype="PCM_24")
    d = Dereverberator(tiny_model(), "cpu", chunk=SMALL_CHUNKS)
    d.enhance_file(src, tmp_path / "mono.flac", mono=True, output_rate="model")
    info = sf.info(tmp_path / "mono.flac")
    assert (info.channels, info.samplerate, info.subtype) == (1, 16000, "PCM_24")
    assert info.frames == len(audio.resample(x[0], 48000, 16000))


def test_file_refusals_protect_inputs(tmp_path, reverberant):
    src = tmp_path / "a.wav"
    sf.write(src, reverberant[:16000], 16000)
    digest = sha(src)
    d = Dereverberator(tiny_model(), "cpu", chunk=SMALL_CHUNKS)
    for dst, overwrite in [(src, True), (tmp_path / "." / "a.wav", True)]:
        with pytest.raises(DereverbError, match="is an input file"):
            d.enhance_file(src, dst, overwrite=overwrite)
    other = tmp_path / "b.wav"
    other.write_bytes(b"keep me")
    with pytest.raises(DereverbError, match="already exists"):
        d.enhance_file(src, other)
    assert other.read_bytes() == b"keep me" and sha(src) == digest
    d.enhance_file(src, other, overwrite=True)
    assert sf.info(other).frames == 16000


def test_nan_inside_a_file_leaves_nothing_behind(tmp_path, reverberant):
    x = reverberant[:32000].copy()
    x[20000] = np.nan
    src, out = tmp_path / "nan.wav", tmp_path / "out"
    sf.write(src, x, 16000, subtype="FLOAT")
    d = Dereverberator(tiny_model(), "cpu", chunk=ChunkConfig(160, 24, 16, block_frames=4096))
    with pytest.raises(DereverbError, match="NaN"):
        d.enhance_file(src, out / "nan.wav")
    assert list(out.iterdir()) == []


def test_from_pretrained_file_and_run_folder(tmp_path, reverberant):
    model = tiny_model()
    (tmp_path / "run").mkdir()
    checkpoint.save(tmp_path / "run" / "best.safetensors", model)
    x = reverberant[:20000]
    ref = Dereverberator(model, "cpu")(x, 16000)
    for path in (tmp_path / "run", tmp_path / "run" / "best.safetensors"):
        np.testing.assert_allclose(Dereverberator.from_pretrained(path, device="cpu")(x, 16000), ref, atol=1e-6)
    with pytest.raises(DereverbError, match="no such model"):
        Dereverberator.from_pretrained(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(DereverbError, match="bad.safetensors"):
        Dereverberator.from_pretrained(tmp_path / "bad.safetensors")


def test_bundled_names_and_a_missing_bundled_model(tmp_path, monkeypatch, reverberant):
    """``None`` and a bare name look in the pretrained folder (here a stand-in holding one tiny
    model); without the default there, the error says what to pass instead."""
    model = tiny_model()
    monkeypatch.setattr(checkpoint, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(DereverbError, match="bundled model is not installed; pass --model PATH"):
        Dereverberator.from_pretrained()
    checkpoint.save(tmp_path / "mine.safetensors", model)
    with pytest.raises(DereverbError, match=r"nor a bundled model name \(bundled: mine\)"):
        Dereverberator.from_pretrained("other")
    x = reverberant[:20000]
    ref = Dereverberator(model, "cpu")(x, 16000)
    np.testing.assert_allclose(Dereverberator.from_pretrained("mine", device="cpu")(x, 16000), ref, atol=1e-6)
    checkpoint.save(tmp_path / "default.safetensors", model)
    np.testing.assert_allclose(Dereverberator.from_pretrained(device="cpu")(x, 16000), ref, atol=1e-6)


def test_shifts_average_passes_over_the_grid_on_mirrored_input(reverberant):
    """``shifts=K``: the mean of K network passes, the features mirrored by offsets spread evenly
    over the grid (tiny model: 16 frames; 4 passes at 0, 4, 8, 12), computed here by hand with
    numpy's reflection; each pass alone differs from the others (the grid matters)."""
    x = torch.from_numpy(reverberant[:20000])[None]  # 157 frames: 3 to mirror on the right at offset 0
    model = tiny_model("mask")
    whole = ChunkConfig(chunk_frames=0)
    with torch.no_grad():
        spec = model.stft(x)
        feats = model.encode(spec).numpy()
        passes = []
        for s in (0, 4, 8, 12):
            f = np.pad(feats, [(0, 0)] * 3 + [(s, -(feats.shape[-1] + s) % 16)], mode="reflect")
            out = model.net(torch.from_numpy(f))[..., s : s + feats.shape[-1]]
            passes.append(model.stft.inverse(model.decode(out, spec), length=x.shape[-1])[0].numpy())
    got = Dereverberator(model, "cpu", chunk=whole, shifts=4)(x[0].numpy(), 16000)
    assert rel_rms(got, np.mean(passes, axis=0)) < 1e-5
    assert min(rel_rms(passes[0], p) for p in passes[1:]) > 1e-4  # float noise: 1e-7
    one = Dereverberator(model, "cpu", chunk=whole, shifts=1)(x[0].numpy(), 16000)
    assert rel_rms(one, passes[0]) < 1e-5
    for bad in (0, 17):
        with pytest.raises(DereverbError, match="shifts"):
            Dereverberator(model, "cpu", shifts=bad)


@pytest.mark.parametrize("n, left, right", [(5, 2, 3), (3, 0, 9), (1, 4, 4), (7, 0, 0)])
def test_mirror_frames_is_reflection_even_past_the_length(n, left, right):
    x = torch.arange(2 * n, dtype=torch.float32).reshape(1, 2, n)
    expected = np.pad(x.numpy(), [(0, 0), (0, 0), (left, right)], mode="reflect")
    np.testing.assert_array_equal(mirror_frames(x, left, right).numpy(), expected)


def test_chunk_geometry_is_checked():
    with pytest.raises(DereverbError, match="too short"):
        Dereverberator(tiny_model(), "cpu", chunk=ChunkConfig(chunk_frames=40, margin_frames=8, fade_frames=8))(
            np.ones(20000, np.float32) * 0.1, 16000)


def test_wpe_cascade_is_the_model_with_a_wpe_frontend(reverberant):
    """``--wpe`` gives the model WPE as its frontend (same weights): whole-signal it equals the
    frontend model, and it changes the output.  Chunked, WPE re-estimates its filters per segment
    (2.5 s here, 16 s by default), so it is only closer to the whole-signal cascade than to the
    model without WPE."""

    x, cfg = reverberant[:48000], WpeConfig(taps=10, iterations=2)
    whole = ChunkConfig(chunk_frames=0)
    plain = Dereverberator(tiny_model(), "cpu", chunk=whole)
    mine = tiny_model()
    cascade = Dereverberator(mine, "cpu", chunk=whole, wpe=cfg)
    frontend = Dereverberator(tiny_model(frontend="wpe", wpe_taps=10, wpe_iterations=2), "cpu", chunk=whole)
    np.testing.assert_array_equal(cascade(x, 16000), frontend(x, 16000))
    assert mine.feature_config.frontend == "none"  # the caller's model is left as it was
    without = rel_rms(plain(x, 16000), cascade(x, 16000))
    assert without > 1e-2  # WPE did change the input
    short = ChunkConfig(chunk_frames=320, margin_frames=64, fade_frames=16)
    chunked = Dereverberator(tiny_model(), "cpu", chunk=short, wpe=cfg)(x, 16000)
    assert rel_rms(chunked, cascade(x, 16000)) < 0.5 * without


def test_a_wpe_frontend_model_runs_wpe_before_its_network(reverberant, tmp_path):
    """A model with ``features.frontend: wpe`` is its network on the STFT of WPE's resynthesised
    output, the same through the Dereverberator, ONNX and a checkpoint; ``--wpe`` on top of it is
    refused."""
    from dereverb import export

    x = torch.from_numpy(reverberant[:32640])[None]  # 256 frames: the grid, so no padding
    plain = tiny_model("mask")
    model = tiny_model("mask", frontend="wpe", wpe_taps=10, wpe_iterations=2)
    with torch.no_grad():
        spec = plain.stft(x)
        w = plain.stft(plain.stft.inverse(wpe(spec, 10, 3, 2), length=(spec.shape[-1] - 1) * 128))
        expected = plain.stft.inverse(plain.decode(plain.net(plain.encode(w)), w), length=x.shape[-1])
        torch.testing.assert_close(model.enhance_wave(x), expected)
        assert rel_rms(plain.enhance_wave(x).numpy(), expected.numpy()) > 1e-2  # WPE mattered
    whole = ChunkConfig(chunk_frames=0)
    out = Dereverberator(model, "cpu", chunk=whole, shifts=1)(x[0].numpy(), 16000)
    assert rel_rms(out, expected[0].numpy()) < 1e-4
    onnx = Dereverberator(model, chunk=whole, onnx_net=export.OnnxNet(export.to_onnx_bytes(model)), shifts=1)
    assert rel_rms(onnx(x[0].numpy(), 16000), out) < 1e-4
    checkpoint.save(tmp_path / "m.safetensors", model)
    assert checkpoint.load(tmp_path / "m.safetensors").feature_config == model.feature_config
    with pytest.raises(DereverbError, match="runs WPE itself"):
        Dereverberator(model, "cpu", wpe=WpeConfig())


def test_autocast_runs_the_network_only_in_bfloat16(reverberant):
    """The network's convolutions in bf16 (the CPU's autocast dtype), the STFT and decoding in float32:
    close to float32 (3e-3 relative RMS measured on this input), and not the same computation."""
    model = tiny_model()
    plain = Dereverberator(model, device="cpu", chunk=SMALL_CHUNKS)
    half = Dereverberator(model, device="cpu", chunk=SMALL_CHUNKS, autocast=True)
    seen = []
    half.net.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    a, b = plain(reverberant, 16000), half(reverberant, 16000)
    assert set(seen) == {torch.bfloat16} and a.dtype == b.dtype == np.float32
    assert 1e-5 < rel_rms(b, a) < 2e-2
    with pytest.raises(DereverbError, match="onnx backend"):
        Dereverberator(model, device="cpu", onnx_net=lambda x: x, autocast=True)
