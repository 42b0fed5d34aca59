"""CLIP scores of generated videos: alignment with the condition image, temporal consistency.

METHOD.md section 6: image alignment is the CLIP cosine similarity between the conditional image
and the generated frames; temporal consistency the mean CLIP cosine similarity of consecutive
generated frames. Embeddings come from an open_clip image tower with local weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from .weights import require_file

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPImageEncoder(nn.Module):
    """Unit-norm CLIP image embeddings: images [N, 3, H, W] in [-1, 1] -> [N, D].

    Preprocessing as open_clip's evaluation transform: short side resized to ``image_size``
    (bicubic, antialiased), central square crop, CLIP mean/std normalisation.

    Args:
        model: an open_clip model (anything with ``encode_image``).
        image_size: the tower's input side; default ``model.visual.image_size``.
    """

    def __init__(
        self, model: nn.Module, image_size: int | None = None, mean=OPENAI_MEAN, std=OPENAI_STD
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        size = image_size or getattr(getattr(model, "visual", None), "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def preprocess(self, images: Tensor) -> Tensor:
        """[N, 3, H, W] in [-1, 1] -> [N, 3, S, S] normalised for CLIP."""
        x = (images.float().clamp(-1, 1) + 1) / 2
        h, w = x.shape[-2:]
        s = self.image_size
        scale = s / min(h, w)
        size = (max(s, round(h * scale)), max(s, round(w * scale)))
        if (h, w) != size:
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        top, left = (size[0] - s) // 2, (size[1] - s) // 2
        x = x[..., top : top + s, left : left + s].clamp(0, 1)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.model.encode_image(self.preprocess(images)).float(), dim=-1)


def load_clip(
    model_name: str,
    weights: str | Path | None,
    key: str = "metric.clip.weights",
    model_config: dict | None = None,
) -> CLIPImageEncoder:
    """An open_clip architecture with a local checkpoint.

    ``model_name`` is an open_clip config name bundled with the package (``ViT-B-32``,
    ``ViT-L-14``, ...); hub names (``hf-hub:...``) are refused, since nothing is downloaded.
    ``model_config`` (``open_clip.CLIP`` arguments: ``embed_dim``, ``vision_cfg``, ``text_cfg``)
    builds a custom architecture instead, e.g. a tiny one for tests.
    """
    import open_clip

    if ":" in model_name and model_config is None:
        raise ValueError(
            f"metric.clip.model_name={model_name!r}: use a bundled open_clip config name "
            "(e.g. ViT-B-32) and a local weight file, not a hub name"
        )
    path = require_file(
        weights,
        key,
        f"an open_clip checkpoint for {model_name} (e.g. open_clip_pytorch_model.bin "
        "or .safetensors)",
    )
    if model_config is not None:
        model = open_clip.CLIP(**model_config)
    else:
        model = open_clip.create_model(model_name, pretrained=None)
    open_clip.load_checkpoint(model, str(path))
    mean = getattr(model.visual, "image_mean", None) or OPENAI_MEAN
    std = getattr(model.visual, "image_std", None) or OPENAI_STD
    return CLIPImageEncoder(model, mean=mean, std=std)


class _PerVideoCLIP(Metric):
    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        encoder: nn.Module | None = None,
        model_name: str = "ViT-B-32",
        weights: str | Path | None = None,
        max_images: int = 256,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder if encoder is not None else load_clip(model_name, weights)
        self.max_images = max_images
        self.add_state("scores", [], dist_reduce_fx="cat")

    def _embed(self, images: Tensor) -> Tensor:
        """[N, 3, H, W] -> unit embeddings [N, D], in chunks of ``max_images``."""
        return torch.cat([self.encoder(c) for c in images.split(self.max_images)])

    def per_video(self) -> Tensor:
        """Scores [N] of every video seen so far on this rank, float64."""
        return dim_zero_cat(self.scores) if self.scores else torch.zeros(0, dtype=torch.float64)

    def compute(self) -> Tensor:
        return dim_zero_cat(self.scores).mean()


class CLIPImageAlignment(_PerVideoCLIP):
    """Mean over frames of cos(CLIP(condition), CLIP(frame)), per video, averaged over videos.

    ``update(videos [B, F, 3, H, W], condition [B, 3, H', W'])``, both in [-1, 1]. All generated
    frames count, the first included.
    """

    def update(self, videos: Tensor, condition: Tensor) -> None:
        b, f = videos.shape[:2]
        with torch.no_grad():
            frames = self._embed(videos.flatten(0, 1)).view(b, f, -1)
            cond = self._embed(condition)
        self.scores.append((frames * cond[:, None]).sum(-1).mean(1).to(torch.float64))

    def update_videos(
        self, generated: Tensor, reference: Tensor | None = None, condition: Tensor | None = None
    ) -> None:
        if condition is None:
            raise ValueError("clip_alignment needs the condition images")
        self.update(generated, condition)


class CLIPTemporalConsistency(_PerVideoCLIP):
    """Mean cos(CLIP(frame_f), CLIP(frame_f+1)) over consecutive frames, per video, averaged.

    ``update(videos [B, F, 3, H, W] in [-1, 1])``; F >= 2.
    """

    def update(self, videos: Tensor) -> None:
        b, f = videos.shape[:2]
        if f < 2:
            raise ValueError(f"temporal consistency needs at least 2 frames, got {f}")
        with torch.no_grad():
            e = self._embed(videos.flatten(0, 1)).view(b, f, -1)
        self.scores.append((e[:, 1:] * e[:, :-1]).sum(-1).mean(1).to(torch.float64))

    def update_videos(self, generated: Tensor, reference=None, condition=None) -> None:
        self.update(generated)
