"""Tiny deterministic inputs and networks for the metric tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


def tiny_clip_encoder(seed: int = 0):
    import open_clip

    from cil_lightning.metrics import CLIPImageEncoder

    torch.manual_seed(seed)
    return CLIPImageEncoder(open_clip.CLIP(**TINY_CLIP))


def photo(name: str = "chelsea") -> Tensor:
    """A scikit-image photograph as [3, H, W] in [-1, 1]."""
    import skimage.data

    image = getattr(skimage.data, name)()
    return torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 127.5 - 1.0


def pan(image: Tensor, dx: int, dy: int, frames: int = 4, size: int = 128) -> Tensor:
    """A window of ``size`` moving by (dx, dy) px per frame over ``image`` -> [F, 3, size, size]."""
    _, h, w = image.shape
    y0 = (h - size - abs(dy) * (frames - 1)) // 2 + (abs(dy) * (frames - 1) if dy < 0 else 0)
    x0 = (w - size - abs(dx) * (frames - 1)) // 2 + (abs(dx) * (frames - 1) if dx < 0 else 0)
    return torch.stack(
        [
            image[:, y0 + f * dy : y0 + f * dy + size, x0 + f * dx : x0 + f * dx + size]
            for f in range(frames)
        ]
    )


class MeanPoolFeatures(nn.Module):
    """A fixed random projection of pooled pixels: videos [B, F, 3, H, W] -> [B, D]."""

    def __init__(self, num_features: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_features = num_features
        self.register_buffer("proj", torch.randn(3 * 4 * 4, num_features, generator=g))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        pooled = nn.functional.adaptive_avg_pool2d(x.reshape(-1, *x.shape[-3:]), 4)
        feats = pooled.flatten(1) @ self.proj
        return feats.view(*lead, -1).flatten(1, -2).mean(1) if len(lead) > 1 else feats


class SoftmaxOfMean(nn.Module):
    """A deterministic 'classifier': videos [B, F, 3, H, W] -> probabilities [B, K]."""

    def __init__(self, num_classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_classes = num_classes
        self.register_buffer("w", torch.randn(3, num_classes, generator=g) * 10)

    def forward(self, x: Tensor) -> Tensor:
        return (x.mean(dim=(1, 3, 4)) @ self.w).softmax(-1)
