"""DynamiCrafter / VideoCrafter1 (the lvdm code base): our UNet, Resampler and adapter."""

from .resampler import Resampler
from .unet import LvdmUNet

__all__ = ["LvdmUNet", "Resampler"]
