from .loss_curve import LossCurve
from .signals import SignalCheckpoint
from .validation import ValidationSampling

__all__ = ["LossCurve", "SignalCheckpoint", "ValidationSampling"]
