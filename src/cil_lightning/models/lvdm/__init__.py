"""DynamiCrafter (the lvdm code base): our UNet, Resampler, encoders, adapter and loaders."""

from .denoiser import LvdmCondition, LvdmDenoiser, LvdmNetwork
from .pretrained import dynamicrafter, load_dynamicrafter
from .resampler import Resampler
from .unet import LvdmUNet

__all__ = [
    "LvdmCondition",
    "LvdmDenoiser",
    "LvdmNetwork",
    "LvdmUNet",
    "Resampler",
    "dynamicrafter",
    "load_dynamicrafter",
]
