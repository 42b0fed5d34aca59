"""Evaluation metrics as ``torchmetrics.Metric`` subclasses (state syncs across DDP ranks).

Every metric takes videos as float tensors [B, F, 3, H, W] in [-1, 1] and has a common
``update_videos(generated, reference=None, condition=None)``. Networks load from local files only.
"""

from .c3d import C3D, C3DClassifier, TorchScriptC3DClassifier, load_c3d
from .clip import CLIPImageAlignment, CLIPImageEncoder, CLIPTemporalConsistency, load_clip
from .fid import FrameFID, TorchvisionInceptionFeatures
from .frechet import FrechetFeatureDistance, frechet_distance
from .fvd import FrechetVideoDistance
from .i3d import I3DFeatures, InceptionI3d, load_i3d
from .inception_score import VideoInceptionScore, inception_score
from .motion import (
    DISFlow,
    FarnebackFlow,
    MotionScore,
    MotionScoreError,
    RAFTFlow,
    build_flow,
    load_raft,
    motion_scores,
)
from .registry import METRICS, build_metrics, weight_files
from .weights import MissingWeightsError, require_file

__all__ = [
    "C3D",
    "C3DClassifier",
    "TorchScriptC3DClassifier",
    "CLIPImageAlignment",
    "CLIPImageEncoder",
    "CLIPTemporalConsistency",
    "DISFlow",
    "FarnebackFlow",
    "FrameFID",
    "FrechetFeatureDistance",
    "FrechetVideoDistance",
    "I3DFeatures",
    "InceptionI3d",
    "METRICS",
    "MissingWeightsError",
    "MotionScore",
    "MotionScoreError",
    "RAFTFlow",
    "TorchvisionInceptionFeatures",
    "VideoInceptionScore",
    "build_flow",
    "build_metrics",
    "frechet_distance",
    "inception_score",
    "load_c3d",
    "load_clip",
    "load_i3d",
    "load_raft",
    "motion_scores",
    "require_file",
    "weight_files",
]
