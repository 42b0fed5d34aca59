"""I2VGen-XL adapter (``denoiser.py``) and the real model's loading, tiny configurations and
pipeline export (``pretrained.py``); all importable from ``cil_lightning.models.i2vgen_xl``."""

from .denoiser import I2VGenXLCondition, I2VGenXLDenoiser, vp_schedule_from_config
from .pretrained import (
    I2VGENXL_LAYOUT,
    check_i2vgenxl_folder,
    load_i2vgenxl,
    tiny_i2vgenxl,
    to_pipeline,
)

__all__ = [
    "I2VGENXL_LAYOUT",
    "I2VGenXLCondition",
    "I2VGenXLDenoiser",
    "check_i2vgenxl_folder",
    "load_i2vgenxl",
    "tiny_i2vgenxl",
    "to_pipeline",
    "vp_schedule_from_config",
]
