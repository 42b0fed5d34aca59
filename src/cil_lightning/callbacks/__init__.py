from .loss_curve import LossCurve
from .metrics import ValidationMetrics
from .video_samples import VideoSamples

__all__ = ["LossCurve", "ValidationMetrics", "VideoSamples"]
