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
    """A scikit-image photograph as [3, H, W] in [-1, 1] (grey ones repeated over 3 channels)."""
    import skimage.data

    image = torch.from_numpy(getattr(skimage.data, name)().copy())
    image = image[..., None].expand(-1, -1, 3) if image.dim() == 2 else image[..., :3]
    return image.permute(2, 0, 1).float() / 127.5 - 1.0


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


def subpixel_pan(
    image: Tensor,
    dx: float,
    dy: float,
    frames: int = 4,
    size: tuple[int, int] = (64, 96),
    factor: int = 4,
    origin: tuple[float, float] = (0.5, 0.5),
) -> Tensor:
    """A camera panning by exactly (dx, dy) px/frame over ``image`` [3, Hi, Wi] -> [F, 3, H, W].

    Sub-pixel speeds (multiples of 1 / ``factor``) are exact: windows of ``factor`` x ``size``
    move by the integer ``factor`` x (dx, dy) over the photo and are area-averaged by ``factor``,
    as a sensor whose square pixels integrate the light over their area; frame f + 1 is the
    scene of frame f moved by (dx, dy), with new content entering from outside the window (no
    border padding). ``origin``: (y, x) of the pan's start in the photo's free room, as fractions.
    """
    mx, my = round(dx * factor), round(dy * factor)
    if abs(mx - dx * factor) > 1e-9 or abs(my - dy * factor) > 1e-9:
        raise ValueError(f"pan ({dx}, {dy}) is not a multiple of 1/{factor} px/frame")
    _, H, W = image.shape
    h, w = size[0] * factor, size[1] * factor
    span_y, span_x = abs(my) * (frames - 1) + h, abs(mx) * (frames - 1) + w
    if span_y > H or span_x > W:
        raise ValueError(f"a {span_y}x{span_x} pan does not fit in a {H}x{W} photo")
    y0 = round((H - span_y) * origin[0]) + (abs(my) * (frames - 1) if my < 0 else 0)
    x0 = round((W - span_x) * origin[1]) + (abs(mx) * (frames - 1) if mx < 0 else 0)
    windows = [
        image[:, y0 + f * my : y0 + f * my + h, x0 + f * mx : x0 + f * mx + w]
        for f in range(frames)
    ]
    return torch.nn.functional.avg_pool2d(torch.stack(windows), factor)


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
