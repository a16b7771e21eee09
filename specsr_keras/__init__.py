"""specsr: super-resolution of galaxy grism spectra with cross-modal diffusion models."""

__version__ = "0.1.0"

_LAZY = {"embed_images": "specsr_keras.embeddings", "embed_spectra": "specsr_keras.embeddings",
         "load": "specsr_keras.inference.api", "super_resolved_spectra": "specsr_keras.inference.api"}


def __getattr__(name):
    """Lazy public API (importing specsr_keras stays free of Keras)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'specsr_keras' has no attribute {name!r}")
