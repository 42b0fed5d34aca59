from .loss_curve import LossCurve
from .memory import MemoryCheck
from .progress import StepProgressBar
from .signals import SignalCheckpoint
from .validation import ValidationSampling

__all__ = ["LossCurve", "MemoryCheck", "SignalCheckpoint", "StepProgressBar", "ValidationSampling"]
