"""specsr: super-resolution of galaxy grism spectra with cross-modal diffusion models."""

__version__ = "0.1.0"
