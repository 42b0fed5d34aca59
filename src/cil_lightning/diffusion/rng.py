"""Gaussian draws from an injected generator (EDM ``generate.py::StackedRandomGenerator`` habit).

``generator`` may be None (global RNG), one ``torch.Generator``, or a list with one generator per
sample. With per-sample generators, sample i gets the same noise whatever the batch size or rank it
lands in, which is what makes seeded sampling reproducible across machines.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Generator = torch.Generator | Sequence[torch.Generator] | None


def randn(
    shape: Sequence[int],
    generator: Generator = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal draws of ``shape`` on ``device``.

    Draws happen on the generator's own device, then move: a CPU generator seeds a CUDA run
    identically to a CPU run. With a list, ``shape[0]`` must equal its length.
    """
    shape = tuple(shape)
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    if isinstance(generator, torch.Generator):
        out = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
        return out.to(device) if device is not None else out
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"{len(gens)} generators for a batch of {shape[0]}")
    out = torch.stack(
        [torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype) for g in gens]
    )
    return out.to(device) if device is not None else out


def per_sample_generators(seeds: Sequence[int], device: str = "cpu") -> list[torch.Generator]:
    """One seeded generator per sample."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]
