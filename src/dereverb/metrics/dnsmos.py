"""DNSMOS P.835: a neural estimate of the ITU-T P.835 ratings SIG, BAK and OVRL (1-5, higher
is better), non-intrusive.

Reddy, Gopal & Cutler, "DNSMOS P.835: A non-intrusive perceptual objective speech quality metric
to evaluate noise suppressors", ICASSP 2022.  Runs the ONNX model ``sig_bak_ovr.onnx`` that the
``speechmos`` package ships (found on disk, not imported: importing speechmos pulls in librosa
and requests) with onnxruntime, fully offline.  As in Microsoft's reference script
(DNS-Challenge ``dnsmos_local.py``): 16 kHz input, clips shorter than 9.01 s are repeated to that
length, 9.01 s windows every 1 s, raw outputs mapped through the published second-order
calibration polynomials, then averaged over windows.  The P.808 model is not run.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from ..audio import resample
from ..errors import DereverbError
from ._common import check_single, undefined

SR = 16000
WINDOW = int(9.01 * SR)  # 144160 samples: the model's fixed input length
HOP = SR
# Calibration polynomials (highest power first) of the non-personalised P.835 model, from the
# DNS-Challenge reference implementation.
POLY_SIG = (-0.08397278, 1.22083953, 0.0052439)
POLY_BAK = (-0.13166888, 1.60915514, -0.39604546)
POLY_OVRL = (-0.06766283, 1.11546468, 0.04602535)


def model_path() -> Path:
    """Path of the P.835 ONNX model inside the installed ``speechmos`` package."""
    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise DereverbError("dnsmos: the speechmos package is not installed; pip install 'dereverb[metrics]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "dnsmos_models" / "sig_bak_ovr.onnx"
    if not path.is_file():
        raise DereverbError(f"dnsmos: {path} is missing; reinstall speechmos")
    return path


@functools.lru_cache(maxsize=1)
def _session():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # evaluate runs one process per worker
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path()), opts, providers=["CPUExecutionProvider"])


def _windows(x: np.ndarray) -> np.ndarray:
    """``(N, 144160)`` float32 windows of ``x (S,)`` at 16 kHz, 1 s apart."""
    while x.size < WINDOW:
        x = np.concatenate([x, x])
    n = int(np.floor(x.size / SR - WINDOW / SR)) + 1
    return np.stack([x[i * HOP : i * HOP + WINDOW] for i in range(n)]).astype(np.float32)


def dnsmos(x: np.ndarray, sr: int) -> dict[str, float]:
    """DNSMOS P.835 of ``x (S,)`` at ``sr`` Hz: ``{"ovrl", "sig", "bak"}`` (MOS, 1-5).

    Other rates are resampled to 16 kHz.  Silent input gives NaN for all three.
    """
    a, why = check_single(x, "dnsmos", min_samples=SR // 4)
    if why:
        nan = undefined("dnsmos", why)
        return {"ovrl": nan, "sig": nan, "bak": nan}
    if sr != SR:
        a = resample(a, sr, SR).astype(np.float64)
    raw = _session().run(None, {"input_1": _windows(a)})[0]  # (N, 3): sig, bak, ovrl
    sig, bak, ovrl = raw[:, 0], raw[:, 1], raw[:, 2]
    return {
        "ovrl": float(np.polyval(POLY_OVRL, ovrl).mean()),
        "sig": float(np.polyval(POLY_SIG, sig).mean()),
        "bak": float(np.polyval(POLY_BAK, bak).mean()),
    }
