"""DynamiCrafter's two open_clip ViT-H-14 encoders, written for open_clip 3.x.

Facts from ``lvdm/modules/encoders/condition.py`` (``FrozenOpenCLIPEmbedder``,
``FrozenOpenCLIPImageEmbedderV2``); no code copied. The reference was written for open_clip 2.x,
whose transformers ran sequence-first; open_clip 3.x runs them batch-first, so the weights load
unchanged and the forwards below feed [B, L, D].

- Text (``cond_stage_model.model.*``: the CLIP model without ``visual``): token and positional
  embeddings, every residual block but the last (``layer: penultimate``) under the causal mask,
  then ``ln_final``: [B, 77, 1024].
- Image (``embedder.model.*``: the CLIP model without the text ``transformer``): the frame in
  [-1, 1] resized to 224 (bicubic, corners aligned, Gaussian anti-aliasing as kornia's ``resize``),
  mapped to [0, 1] and normalised with OpenAI's mean/std; patches, class token, positions,
  ``ln_pre``, all blocks; no ``ln_post`` or projection: all 257 tokens, [B, 257, 1280].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _gaussian_kernel(size: int, sigma: float, like: Tensor) -> Tensor:
    x = torch.arange(size, device=like.device, dtype=like.dtype) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def antialiased_resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """[B, C, H, W] -> [B, C, *size]: kornia ``resize(..., 'bicubic', align_corners=True,
    antialias=True)``: when shrinking, a separable Gaussian blur first (sigma = (factor - 1) / 2
    per axis, odd kernel of at least 3 and 4 sigma, reflected borders), then bicubic."""
    h, w = image.shape[-2:]
    factors = (h / size[0], w / size[1])
    if max(factors) > 1:
        sigmas = [max((f - 1.0) / 2.0, 0.001) for f in factors]
        sizes = [int(max(4.0 * s, 3)) for s in sigmas]
        sizes = [k if k % 2 else k + 1 for k in sizes]
        c = image.shape[1]
        for axis, (k, s) in enumerate(zip(sizes, sigmas)):
            kernel = _gaussian_kernel(k, s, image)
            shape = (c, 1, k, 1) if axis == 0 else (c, 1, 1, k)
            pad = (0, 0, k // 2, k // 2) if axis == 0 else (k // 2, k // 2, 0, 0)
            weight = kernel.view(1, 1, *shape[2:]).expand(shape)
            image = F.conv2d(F.pad(image, pad, mode="reflect"), weight, groups=c)
    return F.interpolate(image, size=size, mode="bicubic", align_corners=True)


class OpenCLIPTextContext(nn.Module):
    """Captions -> text context [B, 77, D] (``model``: an open_clip CLIP without ``visual``).

    Args:
        model: the open_clip ``CLIP`` whose text tower is used.
        tokenizer: captions -> token ids [B, 77]; default ``open_clip.tokenize`` (its vocabulary
            ships with the package: offline).
        skip_last: residual blocks left out at the end (1: penultimate layer, the reference's).
    """

    def __init__(self, model: nn.Module, tokenizer=None, skip_last: int = 1) -> None:
        super().__init__()
        if hasattr(model, "visual"):
            del model.visual  # not part of cond_stage_model.model.* in the checkpoints
        self.model, self.skip_last = model, int(skip_last)
        if tokenizer is None:
            import open_clip

            tokenizer = open_clip.tokenize
        self.tokenizer = tokenizer

    def encode_tokens(self, tokens: Tensor) -> Tensor:
        """Token ids [B, L] -> [B, L, D]."""
        m = self.model
        x = m.token_embedding(tokens) + m.positional_embedding.to(m.token_embedding.weight.dtype)
        blocks = m.transformer.resblocks
        for block in blocks[: len(blocks) - self.skip_last]:
            x = block(x, attn_mask=m.attn_mask)
        return m.ln_final(x)

    def forward(self, captions: list[str]) -> Tensor:
        """Captions (B strings) -> [B, 77, D]."""
        device = self.model.token_embedding.weight.device
        return self.encode_tokens(self.tokenizer(list(captions)).to(device))


class OpenCLIPImageTokens(nn.Module):
    """Frames [B, 3, H, W] in [-1, 1] -> all tokens of the vision transformer [B, 1 + P, W].

    ``model``: an open_clip ``CLIP`` (its text ``transformer`` is dropped, as in the checkpoints'
    ``embedder.model.*``; the other text weights stay, as there).
    """

    def __init__(self, model: nn.Module, image_size: int = 224) -> None:
        super().__init__()
        if hasattr(model, "transformer"):
            del model.transformer
        self.model, self.image_size = model, int(image_size)
        self.register_buffer("mean", torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(OPENAI_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, image: Tensor) -> Tensor:
        """[-1, 1] frames -> the CLIP input [B, 3, 224, 224]."""
        x = antialiased_resize(image, (self.image_size, self.image_size))
        return ((x + 1.0) / 2.0 - self.mean) / self.std

    def forward(self, image: Tensor) -> Tensor:
        v = self.model.visual
        x = v.conv1(self.preprocess(image).to(v.conv1.weight.dtype))  # [B, W, g, g]
        x = x.flatten(2).transpose(1, 2)  # [B, g*g, W]
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(v.patch_dropout(x))
        return v.transformer(x)


def vit_h_14() -> nn.Module:
    """open_clip's ViT-H-14 CLIP with random weights (offline); a DynamiCrafter checkpoint holds
    both towers' weights."""
    import open_clip

    return open_clip.create_model("ViT-H-14", pretrained=None)
