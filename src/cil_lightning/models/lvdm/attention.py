"""Attention blocks of the lvdm 3D UNet, with the official checkpoints' parameter names.

Written from the facts of ``lvdm/modules/attention.py`` (DynamiCrafter); no code copied. The names
(``attn1``, ``attn2``, ``to_k_ip``, ``ff.net.0.proj``, ``norm1..3``, ``proj_in``/``proj_out``)
are those under ``model.diffusion_model.*`` so an official state dict loads with ``strict=True``.
Attention runs through ``F.scaled_dot_product_attention`` (same maths as the reference's einsum
softmax, to fp32 rounding).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: lvdm's text context is always the 77 CLIP tokens; image tokens follow them in the context.
TEXT_CONTEXT_LEN = 77


def _heads(x: Tensor, heads: int) -> Tensor:
    """[B, N, H*D] -> [B, H, N, D]."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """[B, H, N, D] -> [B, N, H*D]."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class CrossAttention(nn.Module):
    """Multi-head attention; with ``image_cross_attention`` a second, decoupled image branch.

    Self-attention when called without context. With context [B, 77 + M, Dc] and the image branch,
    the text part goes through ``to_k``/``to_v`` and the M image tokens through ``to_k_ip``/
    ``to_v_ip`` with the same queries; the outputs add, the image one scaled by ``tanh(alpha) + 1``
    when the scale is learnable (DynamiCrafter 256). Without the branch only the 77 text tokens are
    attended, as in the reference.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        image_cross_attention: bool = False,
        image_scale_learnable: bool = False,
    ):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))
        self.image_cross_attention = image_cross_attention
        self.image_scale_learnable = image_scale_learnable
        if image_cross_attention:
            self.to_k_ip = nn.Linear(context_dim, inner, bias=False)
            self.to_v_ip = nn.Linear(context_dim, inner, bias=False)
            if image_scale_learnable:
                self.alpha = nn.Parameter(torch.tensor(0.0))

    def _attend(self, q: Tensor, k_proj: nn.Linear, v_proj: nn.Linear, ctx: Tensor) -> Tensor:
        k, v = _heads(k_proj(ctx), self.heads), _heads(v_proj(ctx), self.heads)
        return _merge(F.scaled_dot_product_attention(q, k, v))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x [B, N, Dq], context [B, L, Dc] or None -> [B, N, Dq]."""
        q = _heads(self.to_q(x), self.heads)
        if context is None:
            return self.to_out(self._attend(q, self.to_k, self.to_v, x))
        text = context[:, :TEXT_CONTEXT_LEN]
        out = self._attend(q, self.to_k, self.to_v, text)
        if self.image_cross_attention:
            out_ip = self._attend(q, self.to_k_ip, self.to_v_ip, context[:, TEXT_CONTEXT_LEN:])
            if self.image_scale_learnable:
                out_ip = out_ip * (torch.tanh(self.alpha) + 1)
            out = out + out_ip
        return self.to_out(out)


class GEGLU(nn.Module):
    """Linear to 2 * dim_out, output = a * gelu(gate) (key ``proj``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, width 4 * dim (keys ``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(dropout), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention, (cross-)attention, feed-forward, each residual.

    ``attn2`` is cross-attention when ``context_dim`` is given, otherwise a second
    self-attention (the temporal transformers: the reference keeps both).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        context_dim: int | None = None,
        dropout: float = 0.0,
        image_cross_attention: bool = False,
        image_scale_learnable: bool = False,
    ):
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head, dropout)
        self.ff = FeedForward(dim, dropout)
        self.attn2 = CrossAttention(
            dim, context_dim, heads, dim_head, dropout, image_cross_attention, image_scale_learnable
        )
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim) for _ in range(3))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x [B, N, dim], context [B, L, Dc] or None -> [B, N, dim]."""
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Attention over the h*w positions of each frame; input [B*F, C, h, w], residual.

    ``proj_in``/``proj_out`` are linear (the DynamiCrafter configs' ``use_linear: true``).
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        context_dim: int,
        dropout: float = 0.0,
        image_cross_attention: bool = False,
        image_scale_learnable: bool = False,
    ):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [
                TransformerBlock(
                    inner, heads, dim_head, context_dim, dropout,
                    image_cross_attention, image_scale_learnable,
                )
            ]
        )  # fmt: skip
        self.proj_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x [B*F, C, h, w], context [B*F, L, Dc] -> [B*F, C, h, w]."""
        n, c, h, w = x.shape
        y = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        for block in self.transformer_blocks:
            y = block(y, context)
        return self.proj_out(y).transpose(1, 2).reshape(n, c, h, w) + x


class TemporalTransformer(nn.Module):
    """Self-attention over the F frames at each spatial position; input [B*F, C, h, w], residual.

    ``linear`` picks linear ``proj_in``/``proj_out`` (the UNet levels) or 1x1 ``Conv1d`` (the
    reference's ``init_attn``, built without ``use_linear``); the weights differ only in shape.
    """

    def __init__(
        self, channels: int, heads: int, dim_head: int, linear: bool, dropout: float = 0.0
    ):
        super().__init__()
        inner = heads * dim_head
        self.linear = linear
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        # 1x1 convolutions are the same maths as linear layers, with a trailing kernel axis
        layer = nn.Linear if linear else partial(nn.Conv1d, kernel_size=1)
        # registration order as the reference's, so an exported state dict lists keys as its does
        self.proj_in = layer(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(inner, heads, dim_head, None, dropout)]
        )
        self.proj_out = layer(inner, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def _project(self, layer: nn.Module, y: Tensor) -> Tensor:
        """Apply ``proj_in``/``proj_out`` to y [N, F, C] (channels-first for the 1x1 conv)."""
        return layer(y) if self.linear else layer(y.transpose(1, 2)).transpose(1, 2)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        """x [B*F, C, h, w] -> [B*F, C, h, w]; sequences of length F, one per (b, h, w)."""
        n, c, h, w = x.shape
        b = n // num_frames
        # the group norm spans frames too: statistics over [C/32, F, h, w] as in the reference
        y = self.norm(x.view(b, num_frames, c, h, w).transpose(1, 2))
        y = y.permute(0, 3, 4, 2, 1).reshape(b * h * w, num_frames, c)
        y = self._project(self.proj_in, y)
        for block in self.transformer_blocks:
            y = block(y)
        y = self._project(self.proj_out, y)
        y = y.view(b, h, w, num_frames, c).permute(0, 3, 4, 1, 2).reshape(n, c, h, w)
        return y + x
