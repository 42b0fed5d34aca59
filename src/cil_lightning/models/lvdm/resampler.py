"""The lvdm image projection: a Perceiver resampler from CLIP image tokens to context tokens.

Facts from ``lvdm/modules/encoders/resampler.py`` (DynamiCrafter, after IP-Adapter); no code
copied. Parameter names follow ``image_proj_model.*`` of the official checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import _heads, _merge


class PerceiverAttention(nn.Module):
    """Latents attend to [image tokens; latents] (both layer-normed); no biases."""

    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: Tensor, latents: Tensor) -> Tensor:
        """x [B, N, dim] image features, latents [B, Q, dim] -> [B, Q, dim]."""
        x, latents = self.norm1(x), self.norm2(latents)
        q = _heads(self.to_q(latents), self.heads)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(q, _heads(k, self.heads), _heads(v, self.heads))
        return self.to_out(_merge(out))


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    """LayerNorm, Linear, GELU, Linear, no biases (keys ``0``, ``1``, ``3``)."""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class Resampler(nn.Module):
    """CLIP image tokens [B, N, embedding_dim] -> context tokens [B, Q, output_dim].

    Q = ``num_queries * video_length`` learned latents when ``video_length`` is set (DynamiCrafter:
    16 per frame, frame-major, which the UNet splits per frame), else ``num_queries``.
    Defaults are the DynamiCrafter 512/1024 configuration.
    """

    def __init__(
        self,
        dim: int = 1024,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 12,
        num_queries: int = 16,
        embedding_dim: int = 1280,
        output_dim: int = 1024,
        ff_mult: int = 4,
        video_length: int | None = 16,
    ):
        super().__init__()
        total = num_queries * (video_length or 1)
        self.latents = nn.Parameter(torch.randn(1, total, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        """x [B, N, embedding_dim] -> [B, Q, output_dim]."""
        latents = self.latents.expand(x.shape[0], -1, -1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
