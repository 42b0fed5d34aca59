"""A random condition image for the pipeline-parity tests, as a PIL image (what the stock
pipelines take) and the same pixels as our tensor."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def random_image(size: int, seed: int = 0) -> tuple[Image.Image, torch.Tensor]:
    """A random RGB image size x size and the same image as a [1, 3, H, W] tensor in [-1, 1]."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    frame = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    return Image.fromarray(array), frame
