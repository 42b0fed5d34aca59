"""Evaluation metrics as ``torchmetrics.Metric`` subclasses (state syncs across DDP ranks).

Every metric takes videos as float tensors [B, F, 3, H, W] in [-1, 1] and has a common
``update_videos(generated, reference=None, condition=None)``. Networks load from local files only.
"""

# Names resolve on first use (PEP 562): the config checks read the registry's tables without
# importing torchmetrics, torchvision and the networks, which a CLI run pays for only if it
# builds a metric.
_MODULES = {
    "C3D": "c3d",
    "C3DClassifier": "c3d",
    "CLIPImageAlignment": "clip",
    "CLIPImageEncoder": "clip",
    "CLIPTemporalConsistency": "clip",
    "DISFlow": "motion",
    "FarnebackFlow": "motion",
    "FrameFID": "fid",
    "FrechetFeatureDistance": "frechet",
    "FrechetVideoDistance": "fvd",
    "I3DFeatures": "i3d",
    "InceptionI3d": "i3d",
    "METRICS": "registry",
    "MissingWeightsError": "weights",
    "MotionScore": "motion",
    "MotionScoreError": "motion",
    "RAFTFlow": "motion",
    "TorchScriptC3DClassifier": "c3d",
    "TorchvisionInceptionFeatures": "fid",
    "VideoInceptionScore": "video_inception_score",
    "build_flow": "motion",
    "build_metrics": "registry",
    "frechet_distance": "frechet",
    "inception_score": "video_inception_score",
    "load_c3d": "c3d",
    "load_clip": "clip",
    "load_i3d": "i3d",
    "load_raft": "motion",
    "motion_scores": "motion",
    "require_file": "weights",
    "weight_files": "registry",
}


def __getattr__(name: str):
    if name in _MODULES:
        from importlib import import_module

        value = getattr(import_module(f".{_MODULES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
