"""C3D (Tran et al. 2015) fine-tuned on UCF101: the classifier of the video Inception Score.

Architecture of the Caffe/Chainer C3D used by TGAN's IS protocol (Saito et al. 2017): eight 3x3x3
convolutions, five max-pools, fc6/fc7 of 4096, a 101-way fc8, on 16x112x112 clips. Module names
(``conv1`` ... ``conv5b``, ``fc6`` ... ``fc8``) are those of the usual PyTorch port, so state dicts
converted from the Chainer/Caffe checkpoint load as they are.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .weights import is_torchscript, load_state_dict, require_file

# Per-channel approximation (B, G, R order, 0-255) of C3D's Sports-1M volume mean; a ``mean``
# tensor stored with the weights ([3, 16, 128, 171] or [3, 1, 1, 1]) takes precedence.
SPORTS1M_MEAN_BGR = (90.25, 97.66, 101.41)


class C3D(nn.Module):
    """C3D on clips [B, 3, 16, 112, 112] (BGR, 0-255 minus mean) -> logits [B, num_classes]."""

    def __init__(self, num_classes: int = 101, dropout: float = 0.5) -> None:
        super().__init__()
        conv = lambda i, o: nn.Conv3d(i, o, 3, padding=1)  # noqa: E731
        self.conv1, self.conv2 = conv(3, 64), conv(64, 128)
        self.conv3a, self.conv3b = conv(128, 256), conv(256, 256)
        self.conv4a, self.conv4b = conv(256, 512), conv(512, 512)
        self.conv5a, self.conv5b = conv(512, 512), conv(512, 512)
        self.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
        self.pool = nn.MaxPool3d(2, 2)
        self.pool5 = nn.MaxPool3d(2, 2, padding=(0, 1, 1))
        self.fc6, self.fc7 = nn.Linear(8192, 4096), nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.pool(F.relu(self.conv3b(F.relu(self.conv3a(x)))))
        x = self.pool(F.relu(self.conv4b(F.relu(self.conv4a(x)))))
        x = self.pool5(F.relu(self.conv5b(F.relu(self.conv5a(x)))))
        x = self.dropout(F.relu(self.fc6(x.flatten(1))))
        x = self.dropout(F.relu(self.fc7(x)))
        return self.fc8(x)


class C3DClassifier(nn.Module):
    """Class probabilities for videos [B, F, 3, H, W] in [-1, 1] -> [B, num_classes].

    TGAN's preprocessing: the first 16 frames, each resized to 128x128 (bilinear), RGB -> BGR,
    0-255, the Sports-1M mean subtracted, then the central 112x112 crop.

    Args:
        network: a ``C3D`` (or any module on [B, 3, 16, 112, 112]) returning logits.
        mean: the mean to subtract, broadcastable to [3, 16, 128, 128] (BGR, 0-255).
    """

    def __init__(self, network: nn.Module, mean: Tensor | None = None, num_frames: int = 16):
        super().__init__()
        self.network, self.num_frames = network, num_frames
        if mean is None:
            mean = torch.tensor(SPORTS1M_MEAN_BGR).view(3, 1, 1, 1)
        elif mean.shape[-2:] == (128, 171):
            mean = mean[..., 21 : 21 + 128]  # the central 128 columns, as the reference crops
        mean = mean.float()
        self.register_buffer("mean", mean.view(3, 1, 1, 1) if mean.dim() == 1 else mean)
        self.num_classes = getattr(network, "num_classes", None)

    def preprocess(self, videos: Tensor) -> Tensor:
        """[B, F, 3, H, W] in [-1, 1] -> [B, 3, 16, 112, 112] (BGR, 0-255, mean removed)."""
        if videos.shape[1] < self.num_frames:
            raise ValueError(f"C3D needs {self.num_frames} frames, got {videos.shape[1]}")
        b = videos.shape[0]
        frames = videos[:, : self.num_frames].flatten(0, 1).float()
        frames = F.interpolate(frames, size=(128, 128), mode="bilinear", align_corners=False)
        x = (frames.clamp(-1, 1) + 1) * 127.5
        x = x.flip(1).unflatten(0, (b, self.num_frames)).transpose(1, 2)  # BGR, [B, 3, T, H, W]
        x = x - self.mean
        return x[..., 8:120, 8:120]

    @torch.no_grad()
    def forward(self, videos: Tensor) -> Tensor:
        return self.network(self.preprocess(videos)).float().softmax(dim=-1)


def load_c3d(path: str | Path | None, key: str = "metric.is.weights") -> C3DClassifier:
    """Load the UCF101 C3D from a local state dict (optionally with a ``mean`` entry)."""
    path = require_file(
        path,
        key,
        "a state dict of the UCF101-fine-tuned C3D (TGAN's IS protocol; keys conv1 ... "
        "fc8, optional 'mean'), or a TorchScript module returning logits",
    )
    if is_torchscript(path):
        return C3DClassifier(torch.jit.load(str(path), map_location="cpu").eval())
    state = load_state_dict(path)
    mean = state.pop("mean", None)
    network = C3D(num_classes=state["fc8.weight"].shape[0])
    network.load_state_dict(state)
    return C3DClassifier(network.eval(), mean=mean)
