"""Inflated 3D ConvNet (I3D, Carreira & Zisserman 2017) as a video feature network for FVD.

The module layout (names, shapes, TF-style "same" padding, BatchNorm eps 1e-3) follows the widely
used PyTorch port of the Kinetics-400 checkpoint (``pytorch-i3d``'s ``InceptionI3d``), so its state
dicts (``rgb_imagenet.pt``-style files, keys such as ``Mixed_3b.b1b.conv3d.weight``) load as they
are. The other common file, StyleGAN-V's ``i3d_torchscript.pt`` (the FVD reference detector
converted from TF-Hub), is a TorchScript module and is wrapped as it is (``load_i3d``).

FVD features are the 400 Kinetics logits before the softmax (as TF-Hub's ``i3d-kinetics-400`` and
the StyleGAN-V detector with ``return_features=True``), averaged over the remaining time steps.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .weights import is_torchscript, load_state_dict, require_file


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (front, back) along one axis; the extra pixel goes to the back."""
    pad = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return pad // 2, pad - pad // 2


def _pad_same(x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> Tensor:
    t, h, w = x.shape[-3:]
    pt, ph, pw = (_same_padding(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt))


class MaxPool3dSamePadding(nn.MaxPool3d):
    """Max pooling with TF "SAME" zero padding [B, C, T, H, W] -> [B, C, T', H', W']."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_pad_same(x, self.kernel_size, self.stride))


class Unit3D(nn.Module):
    """Conv3d ("SAME" padding, no bias) + BatchNorm3d + ReLU; the logits unit has bias, no BN."""

    def __init__(
        self,
        in_channels: int,
        output_channels: int,
        kernel_shape: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        activation: bool = True,
        use_batch_norm: bool = True,
        use_bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_shape, self.stride = tuple(kernel_shape), tuple(stride)
        self.activation = activation
        self.conv3d = nn.Conv3d(
            in_channels, output_channels, self.kernel_shape, self.stride, padding=0, bias=use_bias
        )
        # eps and momentum of the TF original, which the checkpoints were trained with.
        self.bn = (
            nn.BatchNorm3d(output_channels, eps=1e-3, momentum=0.01) if use_batch_norm else None
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_pad_same(x, self.kernel_shape, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    """Four branches (1x1; 1x1->3x3; 1x1->3x3; pool->1x1) concatenated on channels."""

    def __init__(self, in_channels: int, out: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x)))
        return torch.cat(branches, dim=1)


# (name, module factory) in forward order; channel counts of the Kinetics-400 network.
def _endpoints(in_channels: int) -> list[tuple[str, nn.Module]]:
    return [
        ("Conv3d_1a_7x7", Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))),
        ("MaxPool3d_2a_3x3", MaxPool3dSamePadding((1, 3, 3), (1, 2, 2))),
        ("Conv3d_2b_1x1", Unit3D(64, 64)),
        ("Conv3d_2c_3x3", Unit3D(64, 192, (3, 3, 3))),
        ("MaxPool3d_3a_3x3", MaxPool3dSamePadding((1, 3, 3), (1, 2, 2))),
        ("Mixed_3b", InceptionModule(192, (64, 96, 128, 16, 32, 32))),
        ("Mixed_3c", InceptionModule(256, (128, 128, 192, 32, 96, 64))),
        ("MaxPool3d_4a_3x3", MaxPool3dSamePadding((3, 3, 3), (2, 2, 2))),
        ("Mixed_4b", InceptionModule(480, (192, 96, 208, 16, 48, 64))),
        ("Mixed_4c", InceptionModule(512, (160, 112, 224, 24, 64, 64))),
        ("Mixed_4d", InceptionModule(512, (128, 128, 256, 24, 64, 64))),
        ("Mixed_4e", InceptionModule(512, (112, 144, 288, 32, 64, 64))),
        ("Mixed_4f", InceptionModule(528, (256, 160, 320, 32, 128, 128))),
        ("MaxPool3d_5a_2x2", MaxPool3dSamePadding((2, 2, 2), (2, 2, 2))),
        ("Mixed_5b", InceptionModule(832, (256, 160, 320, 32, 128, 128))),
        ("Mixed_5c", InceptionModule(832, (384, 192, 384, 48, 128, 128))),
    ]


class InceptionI3d(nn.Module):
    """I3D on clips [B, 3, T, H, W] in [-1, 1] (224x224 in training) -> logits [B, classes, T'].

    T' = ceil(T / 8) - 1 for T >= 16 (the 2x7x7 average pool is "VALID"). Module names match
    ``pytorch-i3d`` so its state dicts load with ``load_state_dict``.
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        for name, module in _endpoints(in_channels):
            self.add_module(name, module)
        self._order = [name for name, _ in self.named_children()]
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(dropout)
        self.logits = Unit3D(
            1024, num_classes, activation=False, use_batch_norm=False, use_bias=True
        )

    def extract_features(self, x: Tensor) -> Tensor:
        """[B, 3, T, H, W] -> pooled Mixed_5c activations [B, 1024, T', H', W']."""
        for name in self._order:
            x = getattr(self, name)(x)
        # The 2x7x7 pool assumes 224x224 inputs; smaller clips (tests) pool what there is.
        t, h, w = x.shape[-3:]
        if t >= 2 and h >= 7 and w >= 7:
            return self.avg_pool(x)
        return F.adaptive_avg_pool3d(x, (max(t - 1, 1), max(h - 6, 1), max(w - 6, 1)))

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, T, H, W] in [-1, 1] -> logits [B, num_classes, T']."""
        x = self.logits(self.dropout(self.extract_features(x)))
        return x.mean(dim=(-2, -1))


class I3DFeatures(nn.Module):
    """FVD's feature map: videos [B, F, 3, H, W] in [-1, 1] -> features [B, 400] (float32).

    Preprocessing (the FVD reference): frames resized to ``size`` x ``size`` (bilinear, as
    trilinear interpolation with the frame count unchanged), values kept in [-1, 1], layout
    [B, 3, F, H, W]. Clips should have 16 frames, the length the reference detector is run on;
    shorter clips work but their FVD is not comparable with published numbers.

    Args:
        network: an ``InceptionI3d``, or the TorchScript detector (called with
            ``rescale=False, resize=False, return_features=True``).
        size: the spatial size fed to the network (224 for the Kinetics checkpoints).
    """

    def __init__(self, network: nn.Module, size: int = 224, num_features: int = 400) -> None:
        super().__init__()
        self.network, self.size, self.num_features = network, size, num_features
        self.torchscript = isinstance(network, torch.jit.ScriptModule)

    def preprocess(self, videos: Tensor) -> Tensor:
        """[B, F, 3, H, W] in [-1, 1] -> [B, 3, F, size, size] in [-1, 1]."""
        b, f = videos.shape[:2]
        frames = videos.flatten(0, 1).float()
        if frames.shape[-2:] != (self.size, self.size):
            frames = F.interpolate(
                frames, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
        return frames.clamp(-1, 1).unflatten(0, (b, f)).transpose(1, 2)

    @torch.no_grad()
    def forward(self, videos: Tensor) -> Tensor:
        x = self.preprocess(videos)
        if self.torchscript:
            feats = self.network(x, rescale=False, resize=False, return_features=True)
        else:
            feats = self.network(x).mean(dim=-1)  # average the logits over time steps T'
        return feats.float().reshape(x.shape[0], -1)


def load_i3d(
    path: str | Path | None, key: str = "metric.fvd.weights", size: int = 224
) -> I3DFeatures:
    """Load I3D features from a local file: TorchScript (``i3d_torchscript.pt``) or a state dict.

    A state dict is loaded strictly into ``InceptionI3d(num_classes)`` with ``num_classes`` read
    from ``logits.conv3d.weight``. Raises ``MissingWeightsError`` naming ``key`` if absent.
    """
    path = require_file(
        path,
        key,
        "i3d_torchscript.pt (StyleGAN-V's TorchScript I3D) or a pytorch-i3d state dict "
        "(e.g. rgb_imagenet.pt, Kinetics-400)",
    )
    if is_torchscript(path):
        network = torch.jit.load(str(path), map_location="cpu").eval()
        return I3DFeatures(network, size=size)
    state = load_state_dict(path)
    num_classes = state["logits.conv3d.weight"].shape[0]
    network = InceptionI3d(num_classes=num_classes)
    network.load_state_dict(state)
    return I3DFeatures(network.eval(), size=size, num_features=num_classes)


def output_frames(num_frames: int) -> int:
    """T' of ``InceptionI3d`` for ``num_frames`` input frames at 224x224 (for docs and checks)."""
    t = math.ceil(num_frames / 2)  # Conv3d_1a stride 2
    t = math.ceil(t / 2)  # MaxPool3d_4a stride 2
    t = math.ceil(t / 2)  # MaxPool3d_5a stride 2
    return max(t - 1, 1)
