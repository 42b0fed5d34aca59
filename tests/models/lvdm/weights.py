"""Test weights that are a function of each parameter's name, so fixtures store no weights.

The fixture scripts in tests/fixtures/lvdm/ use the same function on the official modules.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn


def det_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every entry of ``module``'s state dict drawn from a generator seeded by the key's crc32:
    matrices N(0, 1 / fan_in), norm scales 1 + 0.2 N, biases 0.2 N (zero-initialised layers
    included, so every path reaches the output); ``out.2.weight`` (the UNet's output convolution)
    scaled by 0.1 to keep outputs near unit size."""
    out = {}
    for k, v in module.state_dict().items():
        g = torch.Generator().manual_seed(zlib.crc32(k.encode()))
        if v.dim() >= 2:
            w = torch.randn(v.shape, generator=g) / v.shape[-1] ** 0.5
        elif k.endswith("weight"):
            w = 1.0 + 0.2 * torch.randn(v.shape, generator=g)
        else:
            w = 0.2 * torch.randn(v.shape, generator=g)
        out[k] = w
    if "out.2.weight" in out:
        out["out.2.weight"] = 0.1 * out["out.2.weight"]
    return out
