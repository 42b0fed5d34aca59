from .loss_curve import LossCurve
from .video_samples import VideoSamples

__all__ = ["LossCurve", "VideoSamples"]
