"""dereverb: speech dereverberation with a U-Net on STFT spectrograms.

The public API is :class:`Dereverberator` (``from dereverb import Dereverberator``); it is imported
lazily so that ``import dereverb`` and the CLI start fast.
"""

__version__ = "0.1.0"

__all__ = ["Dereverberator", "__version__"]


def __getattr__(name: str):
    if name == "Dereverberator":
        from .enhance import Dereverberator

        return Dereverberator
    raise AttributeError(f"module 'dereverb' has no attribute {name!r}")
