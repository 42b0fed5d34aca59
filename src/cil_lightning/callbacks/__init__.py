from .loss_curve import LossCurve
from .metrics import ValidationMetrics
from .signals import SignalCheckpoint
from .video_samples import VideoSamples

__all__ = ["LossCurve", "SignalCheckpoint", "ValidationMetrics", "VideoSamples"]
