from .loss_curve import LossCurve
from .progress import StepProgressBar
from .signals import SignalCheckpoint
from .validation import ValidationSampling

__all__ = ["LossCurve", "SignalCheckpoint", "StepProgressBar", "ValidationSampling"]
