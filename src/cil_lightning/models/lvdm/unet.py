"""The lvdm 3D UNet (DynamiCrafter, VideoCrafter1): our implementation, official parameter names.

Facts from ``lvdm/modules/networks/openaimodel3d.py`` (DynamiCrafter); no code copied. Every
parameter name and shape equals the official ``model.diffusion_model.*`` keys, so an official state
dict loads with ``strict=True`` (tested against the key list of the official class at 512 size).
The temporal block after each ResBlock is diffusers' ``TemporalConvLayer``, key-for-key the lvdm
one (the key is the reference's misspelt ``temopral_conv``).

Layout: frames are folded into the batch, [B*F, C, h, w], everywhere except inside the temporal
layers, as in the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.resnet import TemporalConvLayer
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import TEXT_CONTEXT_LEN, SpatialTransformer, TemporalTransformer


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """lvdm's timestep embedding: [cos, sin] halves, frequencies 10000^(-i / (dim/2)). t [B]."""
    return get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with the time embedding added in between, then a temporal block.

    Keys: ``in_layers.{0,2}``, ``emb_layers.1``, ``out_layers.{0,3}``, ``skip_connection`` (1x1
    conv when the width changes), ``temopral_conv``.
    """

    def __init__(
        self, channels: int, emb_dim: int, out_channels: int, dropout: float, temporal: bool
    ):
        super().__init__()
        self.in_layers = nn.Sequential(
            nn.GroupNorm(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(32, out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )
        if temporal:
            # the reference hard-codes dropout 0.1 in its temporal convolutions
            self.temopral_conv = TemporalConvLayer(out_channels, out_channels, dropout=0.1)

    def forward(self, x: Tensor, emb: Tensor, num_frames: int) -> Tensor:
        """x [B*F, C, h, w], emb [B*F, E] -> [B*F, C_out, h, w]."""
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        h = self.skip_connection(x) + self.out_layers(h)
        if hasattr(self, "temopral_conv"):
            h = self.temopral_conv(h, num_frames=num_frames)
        return h


class Downsample(nn.Module):
    """Stride-2 3x3 conv (key ``op``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Stage(nn.Sequential):
    """UNet layers in sequence, each given what it needs (reference: TimestepEmbedSequential)."""

    def forward(self, h: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb, num_frames)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context)
            elif isinstance(layer, TemporalTransformer):
                h = layer(h, num_frames)
            else:
                h = layer(h)
        return h


class LvdmUNet(nn.Module):
    """The lvdm video UNet: x [B, C_in, F, h, w], t [B] -> [B, C_out, F, h, w].

    Defaults are DynamiCrafter 512/1024 (``configs/inference_512_v1.0.yaml``). ``image_scale_
    learnable`` is DynamiCrafter 256's gate; ``fs_condition`` adds an fps / frame-stride embedding
    (``fps_embedding``) to the time embedding; ``addition_attention`` inserts the temporal
    ``init_attn`` (8 heads, 1x1-conv projections) after ``conv_in``. Context [B, 77 + M, D]: the
    77 text tokens, then M image tokens; when M = F * ``image_tokens_per_frame`` each frame gets
    its own slice of M (frame-major), otherwise every frame sees all of them.
    """

    def __init__(
        self,
        in_channels: int = 8,
        out_channels: int = 4,
        model_channels: int = 320,
        channel_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (4, 2, 1),
        num_head_channels: int = 64,
        context_dim: int = 1024,
        dropout: float = 0.1,
        temporal_conv: bool = True,
        addition_attention: bool = True,
        image_cross_attention: bool = True,
        image_scale_learnable: bool = False,
        fs_condition: bool = True,
        default_fs: int = 24,
        image_tokens_per_frame: int = 16,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        self.model_channels = model_channels
        self.default_fs = default_fs
        self.image_tokens_per_frame = image_tokens_per_frame
        self.gradient_checkpointing = gradient_checkpointing
        emb_dim = 4 * model_channels

        def mlp() -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
            )

        self.time_embed = mlp()
        if fs_condition:
            self.fps_embedding = mlp()
            # zero-initialised so that adding the condition starts as a no-op (reference init)
            nn.init.zeros_(self.fps_embedding[-1].weight)
            nn.init.zeros_(self.fps_embedding[-1].bias)

        def attention(ch: int) -> list[nn.Module]:
            heads = ch // num_head_channels
            return [
                SpatialTransformer(
                    ch, heads, num_head_channels, context_dim, dropout,
                    image_cross_attention, image_scale_learnable,
                ),
                TemporalTransformer(ch, heads, num_head_channels, linear=True, dropout=dropout),
            ]  # fmt: skip

        def res(ch_in: int, ch_out: int) -> ResBlock:
            return ResBlock(ch_in, emb_dim, ch_out, dropout, temporal_conv)

        self.input_blocks = nn.ModuleList(
            [Stage(nn.Conv2d(in_channels, model_channels, 3, padding=1))]
        )
        if addition_attention:
            self.init_attn = Stage(
                TemporalTransformer(model_channels, 8, num_head_channels, linear=False)
            )
        skips, ch, ds = [model_channels], model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers += attention(ch)
                self.input_blocks.append(Stage(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(Stage(Downsample(ch)))
                skips.append(ch)
                ds *= 2
        self.middle_block = Stage(res(ch, ch), *attention(ch), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers += attention(ch)
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Stage(*layers))
        self.out = nn.Sequential(
            nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _frame_context(self, context: Tensor, num_frames: int) -> Tensor:
        """[B, 77 + M, D] -> [B*F, L, D]: per-frame image slices when M = F * tokens-per-frame."""
        b, length, d = context.shape
        if length == TEXT_CONTEXT_LEN + num_frames * self.image_tokens_per_frame:
            text = context[:, :TEXT_CONTEXT_LEN].repeat_interleave(num_frames, dim=0)
            image = context[:, TEXT_CONTEXT_LEN:].reshape(b * num_frames, -1, d)
            return torch.cat([text, image], dim=1)
        return context.repeat_interleave(num_frames, dim=0)

    def _run(self, stage: Stage, h: Tensor, emb: Tensor, context: Tensor, frames: int) -> Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(stage, h, emb, context, frames, use_reentrant=False)
        return stage(h, emb, context, frames)

    def forward(
        self, x: Tensor, timesteps: Tensor, context: Tensor, fs: Tensor | None = None
    ) -> Tensor:
        """x [B, C_in, F, h, w], t [B], context [B, L, D], fs [B] or None -> [B, C_out, F, h, w].

        ``fs`` is the fps / frame stride (``default_fs`` when None); ignored without
        ``fs_condition``.
        """
        b, _, f, hh, ww = x.shape
        emb = self.time_embed(sinusoidal_embedding(timesteps, self.model_channels).to(x.dtype))
        if hasattr(self, "fps_embedding"):
            if fs is None:
                fs = torch.full((b,), self.default_fs, device=x.device, dtype=torch.long)
            fs_emb = sinusoidal_embedding(fs, self.model_channels).to(x.dtype)
            emb = emb + self.fps_embedding(fs_emb)
        emb = emb.repeat_interleave(f, dim=0)
        context = self._frame_context(context, f)
        h = x.transpose(1, 2).reshape(b * f, -1, hh, ww)
        skips = []
        for i, stage in enumerate(self.input_blocks):
            h = self._run(stage, h, emb, context, f)
            if i == 0 and hasattr(self, "init_attn"):
                h = self._run(self.init_attn, h, emb, context, f)
            skips.append(h)
        h = self._run(self.middle_block, h, emb, context, f)
        for stage in self.output_blocks:
            h = self._run(stage, torch.cat([h, skips.pop()], dim=1), emb, context, f)
        y = self.out(h)
        return y.view(b, f, -1, hh, ww).transpose(1, 2)
