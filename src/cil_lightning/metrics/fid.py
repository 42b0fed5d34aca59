"""Frame FID: torchmetrics' FrechetInceptionDistance over all frames of the videos."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from .weights import load_state_dict, require_file

FIDELITY_WEIGHTS = (
    "pt_inception-2015-12-05-6726825d.pth (torch-fidelity's port of the TF FID Inception)"
)


class TorchvisionInceptionFeatures(nn.Module):
    """torchvision's Inception-v3 pool features: images [N, 3, H, W] in [0, 1] -> [N, 2048].

    Frames are resized to 299x299 (bilinear) and normalised with the ImageNet mean and std, as
    torchvision's weights expect. Not the TF Inception of published FIDs: use it only to compare
    runs with each other.
    """

    num_features = 2048

    def __init__(self, state_dict: dict | None = None) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, aux_logits=False, init_weights=state_dict is None)
        if state_dict is not None:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("AuxLogits.")}
            net.load_state_dict(state_dict)
        net.fc = nn.Identity()
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)


class FrameFID(FrechetInceptionDistance):
    """FID between the frames of real and generated videos [B, F, 3, H, W] in [-1, 1].

    Backbones:
        ``"fidelity"``: the standard FID Inception (torch-fidelity's port of the TF graph, as
            torchmetrics uses) from a local ``pt_inception-2015-12-05-6726825d.pth``; needs the
            ``torch-fidelity`` package.
        ``"torchvision"``: ``TorchvisionInceptionFeatures`` from a local state dict.
        an ``nn.Module``: any feature network on images [N, 3, H, W] in [0, 1] (tests).

    Args:
        every_n_frames: use frames 0, n, 2n, ... of each video (1: all frames).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "fidelity",
        weights: str | Path | None = None,
        every_n_frames: int = 1,
        key: str = "metric.fid.weights",
        **kwargs,
    ) -> None:
        if isinstance(backbone, nn.Module):
            feature = backbone
        elif backbone == "torchvision":
            path = require_file(weights, key, "a torchvision inception_v3 state dict")
            feature = TorchvisionInceptionFeatures(load_state_dict(path))
        elif backbone == "fidelity":
            path = require_file(weights, key, FIDELITY_WEIGHTS)
            try:
                import torch_fidelity  # noqa: F401
            except ImportError as e:
                raise ImportError(
                    "FrameFID(backbone='fidelity') needs the torch-fidelity package "
                    "(pip install torch-fidelity), or use backbone='torchvision'"
                ) from e
            kwargs["feature_extractor_weights_path"] = str(path)
            feature = 2048
        else:
            raise ValueError(f"backbone: 'fidelity', 'torchvision' or a module, not {backbone!r}")
        super().__init__(feature=feature, normalize=True, **kwargs)
        self.every_n_frames = every_n_frames

    def update(self, videos: Tensor, real: bool) -> None:
        """Add the frames of videos [B, F, 3, H, W] in [-1, 1] to the real or generated set."""
        frames = videos[:, :: self.every_n_frames].flatten(0, 1)
        with torch.no_grad():
            super().update(((frames.float().clamp(-1, 1) + 1) / 2), real=real)

    def update_videos(self, generated: Tensor, reference: Tensor | None = None, condition=None):
        self.update(generated, real=False)
        if reference is not None:
            self.update(reference, real=True)
