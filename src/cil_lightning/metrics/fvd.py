"""Fréchet Video Distance (Unterthiner et al. 2018): Fréchet distance of I3D video features."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from .frechet import FrechetFeatureDistance


class FrechetVideoDistance(FrechetFeatureDistance):
    """FVD between real and generated videos [B, F, 3, H, W] in [-1, 1] (lower is better).

    The default feature network is I3D (Kinetics-400 logits, 224x224, 16 frames; see
    ``i3d.I3DFeatures``). Any module mapping [B, F, 3, H, W] in [-1, 1] to [B, D] plugs in as
    ``feature_network`` (e.g. a VideoMAE wrapper); give it a ``num_features`` attribute or pass
    ``num_features``. The distance is computed in float64 (``frechet.frechet_distance``).

    Args:
        feature_network: the feature module; None loads I3D from ``weights``.
        weights: a local ``i3d_torchscript.pt`` or I3D state dict (used when no network is given).
        size: I3D's input side.
    """

    def __init__(
        self,
        feature_network: nn.Module | None = None,
        weights: str | Path | None = None,
        size: int = 224,
        num_features: int | None = None,
        reset_real_features: bool = True,
        **kwargs,
    ) -> None:
        if feature_network is None:
            from .i3d import load_i3d

            feature_network = load_i3d(weights, size=size)
        num_features = num_features or getattr(feature_network, "num_features", None)
        if num_features is None:
            raise ValueError("feature_network needs a num_features attribute, or pass num_features")
        super().__init__(int(num_features), reset_real_features=reset_real_features, **kwargs)
        self.feature_network = feature_network.eval().requires_grad_(False)

    def features(self, videos: Tensor) -> Tensor:
        """[B, F, 3, H, W] in [-1, 1] -> [B, D]."""
        return self.feature_network(videos)

    def update_videos(self, generated: Tensor, reference: Tensor | None = None, condition=None):
        """Common update: generated videos into the fake set, reference videos into the real set."""
        self.update(generated, real=False)
        if reference is not None:
            self.update(reference, real=True)
