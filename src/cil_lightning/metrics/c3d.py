"""C3D (Tran et al. 2015) fine-tuned on UCF101: the classifier of the video Inception Score.

Two kinds of detector file exist (METHOD.md §6), each fed its own way (``load_c3d``):

* ``torchscript``: StyleGAN-V's ``c3d_ucf101.pt``, a TorchScript port of TGAN2's Chainer C3D
  (``universome/stylegan-v`` ``src/metrics/video_inception_score.py``; the original is
  ``pfnet-research/tgan2`` ``tgan2/models/c3d/c3d_ucf101.py``). It takes uint8 RGB clips
  [B, 3, 16, H, W], preprocesses inside (TGAN2's C3D does RGB -> BGR, resize to 112x112 and mean
  subtraction in its first layer) and returns class probabilities: StyleGAN-V takes their log as
  they are. ``TorchScriptC3DClassifier`` feeds it as StyleGAN-V does.
* ``c3d_state_dict``: weights of ``C3D`` below; ``C3DClassifier`` applies TGAN's preprocessing and
  a softmax outside the network.

Wrapping the TorchScript file in ``C3DClassifier`` preprocesses twice and takes a softmax of
probabilities, which is nearly uniform: IS near 1 whatever the videos.

``C3D`` is the Caffe/Chainer architecture: eight 3x3x3 convolutions, five max-pools, fc6/fc7 of
4096, a 101-way fc8, on 16x112x112 clips. Module names (``conv1`` ... ``conv5b``, ``fc6`` ...
``fc8``) are those of the usual PyTorch port, so converted state dicts load as they are.
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

# Values of ``metric.is.detector``; ``auto`` picks by the file's format.
DETECTORS = ("auto", "torchscript", "c3d_state_dict")


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


def _first_frames(videos: Tensor, num_frames: int) -> Tensor:
    if videos.shape[1] < num_frames:
        raise ValueError(f"C3D needs {num_frames} frames, got {videos.shape[1]}")
    return videos[:, :num_frames]


class C3DClassifier(nn.Module):
    """State-dict kind: videos [B, F, 3, H, W] in [-1, 1] -> probabilities [B, num_classes].

    TGAN's preprocessing: the first 16 frames, each resized to 128x128 (bilinear), RGB -> BGR,
    0-255, the Sports-1M mean subtracted, then the central 112x112 crop; softmax of the logits.

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
        videos = _first_frames(videos, self.num_frames)
        b = videos.shape[0]
        frames = videos.flatten(0, 1).float()
        frames = F.interpolate(frames, size=(128, 128), mode="bilinear", align_corners=False)
        x = (frames.clamp(-1, 1) + 1) * 127.5
        x = x.flip(1).unflatten(0, (b, self.num_frames)).transpose(1, 2)  # BGR, [B, 3, T, H, W]
        x = x - self.mean
        return x[..., 8:120, 8:120]

    @torch.no_grad()
    def forward(self, videos: Tensor) -> Tensor:
        return self.network(self.preprocess(videos)).float().softmax(dim=-1)


class TorchScriptC3DClassifier(nn.Module):
    """TorchScript kind: videos [B, F, 3, H, W] in [-1, 1] -> probabilities [B, num_classes].

    Fed as StyleGAN-V feeds ``c3d_ucf101.pt`` (``src/metrics/metric_utils.py``,
    ``compute_feature_stats_for_generator`` with ``temporal_detector=True``): the first 16 frames,
    ``(x * 127.5 + 128).clamp(0, 255).to(uint8)``, layout [B, 3, 16, H, W], RGB, at the videos'
    own resolution (its resize calls are commented out; the module resizes inside), no keyword
    arguments. The output is used as probabilities as it is: no softmax.

    Args:
        network: the TorchScript module (or a stand-in with the same interface).
    """

    def __init__(self, network: nn.Module, num_frames: int = 16) -> None:
        super().__init__()
        self.network, self.num_frames = network, num_frames

    def preprocess(self, videos: Tensor) -> Tensor:
        """[B, F, 3, H, W] in [-1, 1] -> [B, 3, 16, H, W] uint8 (0-255, RGB)."""
        x = _first_frames(videos, self.num_frames).float()
        x = (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)  # truncation, as StyleGAN-V
        return x.transpose(1, 2).contiguous()

    @torch.no_grad()
    def forward(self, videos: Tensor) -> Tensor:
        probs = self.network(self.preprocess(videos)).float()
        # A module returning logits would give a meaningless IS without any error; catch it here.
        sums = probs.sum(-1)
        if (
            probs.dim() != 2
            or (probs < 0).any()
            or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3)
        ):
            raise ValueError(
                "metric.is.detector=torchscript: the module must return probabilities [B, K] "
                f"(rows >= 0 summing to 1), got shape {tuple(probs.shape)} with row sums "
                f"{sums.flatten()[:4].tolist()}; for a network returning logits use a C3D state "
                "dict with metric.is.detector=c3d_state_dict"
            )
        return probs


def check_detector(detector: str, key: str = "metric.is.detector") -> str:
    """Return ``detector`` if it is one of ``DETECTORS``, else raise naming ``key``."""
    if detector not in DETECTORS:
        raise ValueError(
            f"{key}={detector!r} is not a detector kind; allowed: {', '.join(DETECTORS)}"
        )
    return detector


def load_c3d(
    path: str | Path | None, detector: str = "auto", key: str = "metric.is.weights"
) -> C3DClassifier | TorchScriptC3DClassifier:
    """Load the UCF101 C3D from a local file as the classifier of the Inception Score.

    Args:
        path: StyleGAN-V's TorchScript ``c3d_ucf101.pt``, or a ``C3D`` state dict (``.pt`` or
            ``.safetensors``, keys conv1 ... fc8, optional ``mean``).
        detector: ``torchscript`` (``TorchScriptC3DClassifier``), ``c3d_state_dict``
            (``C3DClassifier``), or ``auto``: torchscript if the file is a TorchScript archive.
            A kind that contradicts the file's format raises, naming ``metric.is.detector``.
        key: the config key holding ``path``, for error messages.
    """
    check_detector(detector)
    path = require_file(
        path,
        key,
        "StyleGAN-V's TorchScript C3D c3d_ucf101.pt (returns probabilities), or a state dict "
        "of the UCF101-fine-tuned C3D (TGAN's IS protocol; keys conv1 ... fc8, optional 'mean')",
    )
    scripted = is_torchscript(path)
    if detector == "auto":
        detector = "torchscript" if scripted else "c3d_state_dict"
    if scripted != (detector == "torchscript"):
        found = "a TorchScript archive" if scripted else "not a TorchScript archive"
        raise ValueError(
            f"metric.is.detector={detector} but {key}={path} is {found}; set "
            f"metric.is.detector={'torchscript' if scripted else 'c3d_state_dict'} or auto"
        )
    if scripted:
        return TorchScriptC3DClassifier(torch.jit.load(str(path), map_location="cpu").eval())
    state = load_state_dict(path)
    mean = state.pop("mean", None)
    network = C3D(num_classes=state["fc8.weight"].shape[0])
    network.load_state_dict(state)
    return C3DClassifier(network.eval(), mean=mean)
