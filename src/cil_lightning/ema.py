"""Exponential moving average of the trained network, kept as the SVD reference keeps it.

The reference SVD training uses diffusers' ``EMAModel(decay=0.9999)``, whose decay warms up: at
the k-th update (k = 1, 2, ...) it is min(k / (9 + k), decay), i.e. 0 at the first update (the EMA
starts as a copy of the weights), then 2/11, 3/12, ... A constant 0.9999 would still weigh the
starting weights by 0.9999^20000 = 0.135 after the reference's 20k steps (METHOD.md section 5).

We keep torch's ``AveragedModel`` (its state lives in the module's state dict, so checkpoints and
resuming need nothing extra); the update count it keeps (``n_averaged``, a device tensor) gives the
warm-up without a host sync. Its ``update_parameters`` reads that count on the host twice per
update (copy at the first one), so ``DeviceEMA`` replaces it with the same arithmetic on the
device: the first update is the EMA update with decay 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import chain

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def ema_multi_avg_fn(decay: float, warmup: bool = True) -> Callable:
    """The ``multi_avg_fn`` of ``AveragedModel`` for an EMA with diffusers' warm-up.

    ``AveragedModel`` copies the weights at its first update and calls this from the second on,
    with ``num_averaged`` = n >= 1 updates done so far; this update is then the (n + 1)-th, whose
    decay in diffusers' ``EMAModel`` is min((1 + n) / (10 + n), decay). Without ``warmup`` the decay
    is the constant ``decay``.
    """

    def update(ema: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        if warmup:
            n = num_averaged.to(torch.float64)
            d = ((1.0 + n) / (10.0 + n)).clamp(max=decay)
        else:
            d = torch.tensor(decay, dtype=torch.float64, device=num_averaged.device)
        # Decay 0 at the first update (a copy; AveragedModel itself copies instead of calling).
        d = torch.where(num_averaged == 0, 0.0, d)
        # ema <- d * ema + (1 - d) * current = lerp(ema, current, 1 - d), with d a device tensor
        # (no host sync), one fused call per (device, dtype) group.
        groups: dict[tuple, tuple[list[Tensor], list[Tensor]]] = {}
        for e, c in zip(ema, current, strict=True):
            if not e.is_floating_point():  # integer buffers (counters) follow the weights
                e.copy_(c)
                continue
            es, cs = groups.setdefault((e.device, e.dtype), ([], []))
            es.append(e)
            cs.append(c.to(e.dtype))
        for (device, dtype), (es, cs) in groups.items():
            torch._foreach_lerp_(es, cs, (1.0 - d).to(device=device, dtype=dtype))

    return update


class DeviceEMA(AveragedModel):
    """``AveragedModel`` with ``use_buffers`` whose update makes no host sync."""

    def update_parameters(self, model: nn.Module) -> None:
        ema = [p.detach() for p in chain(self.module.parameters(), self.module.buffers())]
        current = chain(model.parameters(), model.buffers())
        current = [c.detach().to(e.device) for e, c in zip(ema, current, strict=True)]
        self.multi_avg_fn(ema, current, self.n_averaged)
        self.n_averaged += 1


def build_ema(module: nn.Module, decay: float, warmup: bool = True) -> AveragedModel:
    """An ``AveragedModel`` EMA of ``module`` (parameters and buffers), frozen, sync-free.

    Args:
        decay: the EMA decay once warmed up (SVD reference: 0.9999); must lie in (0, 1).
        warmup: diffusers' ``EMAModel`` warm-up min((1 + s) / (10 + s), decay) at update s + 1;
            False keeps the constant decay from the first update on.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
    ema = DeviceEMA(module, multi_avg_fn=ema_multi_avg_fn(decay, warmup), use_buffers=True)
    return ema.requires_grad_(False)


@contextmanager
def ema_weights(pl_module, enabled: bool = True) -> Iterator[None]:
    """Swap the EMA UNet into ``pl_module.denoiser`` for the block; the trained one after.

    A no-op when ``enabled`` is False or the module keeps no EMA (``pl_module.ema`` None). The
    swap replaces the module reference, so nothing is copied and the trained weights, their
    optimiser state and the EMA itself are untouched.
    """
    ema = getattr(pl_module, "ema", None)
    if not enabled or ema is None:
        yield
        return
    denoiser = pl_module.denoiser
    trained = denoiser.unet
    denoiser.unet = ema.module
    try:
        yield
    finally:
        denoiser.unet = trained
