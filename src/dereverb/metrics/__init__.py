"""Speech-quality metrics for dereverberation, each with its reference in its docstring.

All take 1-D float numpy arrays ``(S,)`` at ``sr`` Hz; ``ref`` is the clean reference and
``est`` the processed signal.  Undefined results (silent input, too short) are NaN with a
:class:`MetricWarning`, never an exception.

| name | kind | best | module |
|---|---|---|---|
| ``pesq`` | intrusive MOS-LQO (wb 16 kHz / nb 8 kHz) | 4.64 | intrusive |
| ``stoi``, ``estoi`` | intrusive intelligibility | 1 | intrusive |
| ``si_sdr`` | intrusive, dB | +inf | intrusive |
| ``cepstral_distance`` | intrusive, dB (REVERB) | 0 | reverb |
| ``llr`` | intrusive (REVERB) | 0 | reverb |
| ``fwsegsnr`` | intrusive, dB (REVERB) | 35 | reverb |
| ``srmr`` | non-intrusive modulation ratio | higher | srmr |
| ``dnsmos`` | non-intrusive MOS (ovrl, sig, bak) | 5 | dnsmos |
| ``estimate_t60``, ``estimate_drr`` | blind room acoustics (s, dB) | - | blind |
"""

from ._common import MetricWarning
from .blind import estimate_drr, estimate_t60
from .dnsmos import dnsmos
from .intrusive import estoi, pesq, si_sdr, stoi
from .reverb import cepstral_distance, fwsegsnr, llr
from .srmr import srmr

__all__ = [
    "MetricWarning",
    "cepstral_distance",
    "dnsmos",
    "estimate_drr",
    "estimate_t60",
    "estoi",
    "fwsegsnr",
    "llr",
    "pesq",
    "si_sdr",
    "srmr",
    "stoi",
]
