"""Metric names, their settings and weight files, and building them from config.

One table, so that the ``evaluate`` task and the validation callback accept the same names, check
the same weight files before loading anything, and share one flow network and one CLIP tower
between the metrics that use them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MetricInfo:
    group: str  # the settings block under ``metric.`` in config
    needs_reference: bool  # paired real videos
    needs_condition: bool  # condition images
    summary: str


METRICS: dict[str, MetricInfo] = {
    "fvd": MetricInfo("fvd", True, False, "Fréchet Video Distance, I3D features (lower is better)"),
    "is": MetricInfo("is", False, False, "Inception Score, C3D on UCF101 (higher is better)"),
    "fid": MetricInfo("fid", True, False, "frame FID, Inception-v3 features (lower is better)"),
    "motion_score": MetricInfo("motion", False, False, "mean optical-flow magnitude, px/frame"),
    "ms_error": MetricInfo("motion", True, False, "mean |MS generated - MS reference|"),
    "clip_alignment": MetricInfo("clip", False, True, "CLIP cos(condition, frames)"),
    "temporal_consistency": MetricInfo("clip", False, False, "CLIP cos of consecutive frames"),
}


def weight_files(names: Iterable[str], settings: Mapping) -> list[tuple[str, object, str]]:
    """(config key, configured path, what is expected) for every weight file ``names`` load."""
    out = []
    names = set(names)
    if "fvd" in names:
        out.append(
            (
                "metric.fvd.weights",
                settings["fvd"].get("weights"),
                "i3d_torchscript.pt or a pytorch-i3d state dict",
            )
        )
    if "is" in names:
        out.append(
            (
                "metric.is.weights",
                settings["is"].get("weights"),
                "StyleGAN-V's TorchScript C3D c3d_ucf101.pt or a UCF101 C3D state dict",
            )
        )
    if "fid" in names:
        from .fid import FIDELITY_WEIGHTS

        backbone = settings["fid"].get("backbone", "fidelity")
        expected = FIDELITY_WEIGHTS if backbone == "fidelity" else "an inception_v3 state dict"
        out.append(("metric.fid.weights", settings["fid"].get("weights"), expected))
    motion = settings.get("motion", {})
    if names & {"motion_score", "ms_error"} and _motion_method(motion) == "raft":
        out.append(
            (
                "metric.motion.raft_weights",
                motion.get("raft_weights"),
                f"a torchvision raft_{motion.get('raft_arch', 'large')} state dict",
            )
        )
    if names & {"clip_alignment", "temporal_consistency"}:
        out.append(
            (
                "metric.clip.weights",
                settings["clip"].get("weights"),
                f"an open_clip checkpoint for {settings['clip'].get('model_name')}",
            )
        )
    return out


METHODS = ("auto", "raft", "dis", "farneback")


def resolve_method(method: str = "auto", raft_weights: str | Path | None = None) -> str:
    """The flow method ``auto`` stands for (RAFT with weights, else DIS); checks the name."""
    if method not in METHODS:
        raise ValueError(f"metric.motion.method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        return "raft" if raft_weights else "dis"
    return method


def _motion_method(motion: Mapping) -> str:
    return resolve_method(motion.get("method", "auto"), motion.get("raft_weights"))


def _is_settings(s: Mapping) -> dict:
    """``metric.is`` keys other than ``weights``, checked; absent keys get StyleGAN-V's values."""
    from .c3d import check_detector
    from .video_inception_score import EPS, SEED, SHUFFLE, SPLITS, check_settings

    out = {
        "splits": s.get("splits", SPLITS),
        "shuffle": s.get("shuffle", SHUFFLE),
        "seed": s.get("seed", SEED),
        "eps": s.get("eps", EPS),
    }
    check_settings(**out)
    out["detector"] = check_detector(s.get("detector", "auto"))
    return out


def build_metrics(names: Iterable[str], settings: Mapping, modules: Mapping | None = None) -> dict:
    """Build the named metrics (``torchmetrics.Metric``) from the ``metric`` settings.

    Args:
        names: metric names (keys of ``METRICS``).
        settings: the ``metric`` config block (fvd, is, fid, motion, clip sub-blocks).
        modules: prebuilt networks to use instead of loading weights (tests, callbacks): any of
            ``fvd`` (feature network), ``is`` (classifier), ``fid`` (image feature network),
            ``flow``, ``clip`` (image encoder).
    """
    from .clip import CLIPImageAlignment, CLIPTemporalConsistency, load_clip
    from .fid import FrameFID
    from .fvd import FrechetVideoDistance
    from .motion import MotionScore, MotionScoreError, build_flow
    from .video_inception_score import VideoInceptionScore

    names = list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRICS)}")
    modules = dict(modules or {})
    if "is" in names:  # bad IS settings fail before any network loads
        _is_settings(settings.get("is", {}))
    out = {}
    motion, clip = settings.get("motion", {}), settings.get("clip", {})
    if {"motion_score", "ms_error"} & set(names) and "flow" not in modules:
        modules["flow"] = build_flow(
            _motion_method(motion),
            motion.get("raft_weights"),
            motion.get("raft_arch", "large"),
            int(motion.get("num_flow_updates", 20)),
        )
    if {"clip_alignment", "temporal_consistency"} & set(names) and "clip" not in modules:
        modules["clip"] = load_clip(
            clip.get("model_name", "ViT-B-32"),
            clip.get("weights"),
            model_config=clip.get("model_config"),
        )
    for name in names:
        s = settings.get(METRICS[name].group, {})
        if name == "fvd":
            out[name] = FrechetVideoDistance(
                modules.get("fvd"), weights=s.get("weights"), size=int(s.get("size", 224))
            )
        elif name == "is":
            out[name] = VideoInceptionScore(
                modules.get("is"), weights=s.get("weights"), **_is_settings(s)
            )
        elif name == "fid":
            out[name] = FrameFID(
                modules.get("fid") or s.get("backbone", "fidelity"),
                weights=s.get("weights"),
                every_n_frames=int(s.get("every_n_frames", 1)),
            )
        elif name in ("motion_score", "ms_error"):
            cls = MotionScore if name == "motion_score" else MotionScoreError
            out[name] = cls(modules["flow"], max_pairs=int(motion.get("max_pairs", 64)))
        elif name == "clip_alignment":
            out[name] = CLIPImageAlignment(modules["clip"])
        elif name == "temporal_consistency":
            out[name] = CLIPTemporalConsistency(modules["clip"])
    return out
