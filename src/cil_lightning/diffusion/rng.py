"""Gaussian draws from an injected generator (EDM ``generate.py::StackedRandomGenerator`` habit).

``generator`` may be None (global RNG), one ``torch.Generator``, or a list with one generator per
sample. With per-sample generators, sample i gets the same noise whatever the batch size or rank it
lands in, which is what makes seeded sampling reproducible across machines.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Generator = torch.Generator | Sequence[torch.Generator] | None


def _draw(sample: Callable[..., Tensor], shape: Sequence[int], generator: Generator, device):
    """``sample(shape, generator=..., device=...)`` under the three kinds of ``generator``.

    Draws happen on the generator's own device, then move: a CPU generator seeds a CUDA run
    identically to a CPU run. With a list, ``shape[0]`` must equal its length and sample i is
    drawn from generator i alone.
    """
    shape = tuple(shape)
    if generator is None:
        return sample(shape, device=device)
    if isinstance(generator, torch.Generator):
        out = sample(shape, generator=generator, device=generator.device)
        return out.to(device) if device is not None else out
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"{len(gens)} generators for a batch of {shape[0]}")
    out = torch.stack([sample(shape[1:], generator=g, device=g.device) for g in gens])
    return out.to(device) if device is not None else out


def randn(
    shape: Sequence[int],
    generator: Generator = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal draws of ``shape`` on ``device`` (see ``_draw`` for ``generator``)."""
    return _draw(functools.partial(torch.randn, dtype=dtype), shape, generator, device)


def rand(
    shape: Sequence[int], generator: Generator = None, *, device: torch.device | str | None = None
) -> Tensor:
    """Uniform draws in [0, 1) of ``shape`` (float32) on ``device``."""
    return _draw(torch.rand, shape, generator, device)


def randint(
    high: int,
    shape: Sequence[int],
    generator: Generator = None,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform integers in [0, high) of ``shape`` (int64) on ``device``."""
    return _draw(functools.partial(torch.randint, 0, high), shape, generator, device)


def per_sample_generators(seeds: Sequence[int], device: str = "cpu") -> list[torch.Generator]:
    """One seeded generator per sample."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]
