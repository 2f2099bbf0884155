"""dereverb: speech dereverberation with a U-Net on STFT spectrograms.

The public API is :class:`Dereverberator` (``from dereverb import Dereverberator``) for files and
arrays, and :class:`StreamingDereverberator` for live audio with a causal model; they are imported
lazily so that ``import dereverb`` and the CLI start fast.
"""

__version__ = "0.1.0"

__all__ = ["Dereverberator", "StreamingDereverberator", "__version__"]


def __getattr__(name: str):
    if name == "Dereverberator":
        from .enhance import Dereverberator

        return Dereverberator
    if name == "StreamingDereverberator":
        from .streaming import StreamingDereverberator

        return StreamingDereverberator
    raise AttributeError(f"module 'dereverb' has no attribute {name!r}")
