"""cil-lightning: study and fix conditional image leakage in image-to-video diffusion."""

__version__ = "0.1.0"
