"""Streaming latent statistics E[x0] and tr(Cov[x0])/d for Analytic-Init, and their one loader.

``shared/METHOD.md`` section 4. Float64 sums of x and x^2, mergeable across DataLoader workers and
ranks; the file formats are in ``stats_files``. Our canonical latent layout is (F, C, H, W).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .stats_files import StatsFiles

__all__ = ["LatentStats", "load_stats"]


class LatentStats(StatsFiles):
    """Streaming per-element statistics of latents x0 for Analytic-Init.

    Keeps float64 sums of x and x^2 over samples and their count, so partial statistics from
    DataLoader workers, files and ranks add up exactly (``merge``, ``all_reduce_``).

    Statistics imported from the reference code (``from_reference``) only carry E[x0] and
    tr(Cov)/d: they have ``count is None``; ``mean`` and ``tr_cov_d`` work, merging raises.

    Args:
        shape: per-sample shape (e.g. (F, C, H, W)); None: taken from the first ``update``.
            Give it when a rank may see no data but still joins ``all_reduce_``.
        device: where the sums live (default CPU); updates are moved there.
    """

    def __init__(
        self, shape: Sequence[int] | None = None, *, device: torch.device | str | None = None
    ) -> None:
        self._shape: tuple[int, ...] | None = None
        self._sum: Tensor | None = None
        self._sum_sq: Tensor | None = None
        self._count: int | None = 0
        self._ref_mean: Tensor | None = None  # only for reference imports (count None)
        self._ref_tr_cov_d: float | None = None
        self.metadata: dict[str, str] = {}  # filled by ``load``
        if shape is not None:
            self._init_sums(tuple(int(s) for s in shape), torch.device(device or "cpu"))

    def _init_sums(self, shape: tuple[int, ...], device: torch.device) -> None:
        self._shape = shape
        self._sum = torch.zeros(shape, dtype=torch.float64, device=device)
        self._sum_sq = torch.zeros(shape, dtype=torch.float64, device=device)

    # ------------------------------------------------------------------ accumulate
    def update(self, x: Tensor) -> LatentStats:
        """Add a batch x of shape [B, *shape] (any float dtype; summed in float64). Returns self."""
        self._require_sums("update")
        if x.ndim < 1:
            raise ValueError("x must have a batch dimension: shape [B, ...]")
        if self._shape is None:
            self._init_sums(tuple(x.shape[1:]), x.device)
        if tuple(x.shape[1:]) != self._shape:
            raise ValueError(f"x has per-sample shape {tuple(x.shape[1:])}, expected {self._shape}")
        x = x.detach().to(device=self._sum.device, dtype=torch.float64)
        self._sum += x.sum(0)
        self._sum_sq += x.square().sum(0)
        self._count += int(x.shape[0])
        return self

    # ------------------------------------------------------------------ read
    @property
    def shape(self) -> tuple[int, ...] | None:
        """Per-sample shape, or None before the first update."""
        return self._shape

    @property
    def count(self) -> int | None:
        """Number of samples summed; None for reference-imported stats (no sums)."""
        return self._count

    @property
    def is_reference(self) -> bool:
        """True for stats imported from the reference format (mean and tr_cov_d only)."""
        return self._count is None

    @property
    def mean(self) -> Tensor:
        """E[x0] per element: Tensor[*shape], float64."""
        if self.is_reference:
            return self._ref_mean
        if not self._count:
            raise ValueError("LatentStats is empty: call update() first")
        return self._sum / self._count

    @property
    def tr_cov_d(self) -> float:
        """tr(Cov[x0]) / d: mean over elements of the per-element variance.

        Population normalisation: Var = (1/n) sum x^2 - mean^2 (divides by n, not n - 1), as the
        reference code does. Tiny negative per-element values from rounding are clamped to 0.
        """
        if self.is_reference:
            return self._ref_tr_cov_d
        mean = self.mean
        var = (self._sum_sq / self._count - mean.square()).clamp_min(0.0)
        return float(var.mean())

    def __repr__(self) -> str:
        if self.is_reference:
            return f"LatentStats(shape={self._shape}, reference import, count=None)"
        return f"LatentStats(shape={self._shape}, count={self._count})"

    # ------------------------------------------------------------------ combine
    def _require_sums(self, what: str) -> None:
        if self.is_reference:
            raise ValueError(
                f"cannot {what} LatentStats imported from the reference format: it has only "
                "E[x0] and tr(Cov)/d, no sums or count. Re-estimate the statistics instead."
            )

    def merge(self, other: LatentStats) -> LatentStats:
        """A new LatentStats whose sums and count are those of ``self`` plus ``other``."""
        self._require_sums("merge")
        other._require_sums("merge")
        if self._shape is None:
            return other._copy()
        if other._shape is None:
            return self._copy()
        if self._shape != other._shape:
            raise ValueError(f"cannot merge stats of shapes {self._shape} and {other._shape}")
        out = LatentStats(self._shape, device=self._sum.device)
        out._sum = self._sum + other._sum.to(self._sum.device)
        out._sum_sq = self._sum_sq + other._sum_sq.to(self._sum.device)
        out._count = self._count + other._count
        return out

    def _copy(self) -> LatentStats:
        out = LatentStats()
        out.load_state_dict(self.state_dict())
        return out

    def all_reduce_(self, group=None) -> LatentStats:
        """Sum the sums and counts over the ranks of ``group`` (in place); no-op without
        ``torch.distributed`` initialised. Every rank must know ``shape``. Returns self."""
        self._require_sums("all-reduce")
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        if self._shape is None:
            raise ValueError(
                "all_reduce_ needs a known shape on every rank: LatentStats(shape=...)"
            )
        device = self._sum.device
        comm_device = device
        if dist.get_backend(group) == "nccl":
            comm_device = torch.device("cuda", torch.cuda.current_device())
        count = torch.tensor([float(self._count)], dtype=torch.float64)
        flat = torch.cat([self._sum.flatten().cpu(), self._sum_sq.flatten().cpu(), count])
        flat = flat.to(comm_device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        flat = flat.to(device)
        n = self._sum.numel()
        self._sum = flat[:n].reshape(self._shape).clone()
        self._sum_sq = flat[n : 2 * n].reshape(self._shape).clone()
        self._count = int(round(float(flat[-1])))
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Plain dict (tensors on CPU, python scalars) for pickling out of a DataLoader worker."""
        if self.is_reference:
            return {
                "shape": self._shape,
                "count": None,
                "mean": self._ref_mean.cpu(),
                "tr_cov_d": self._ref_tr_cov_d,
            }
        return {
            "shape": self._shape,
            "count": self._count,
            "sum": None if self._sum is None else self._sum.cpu(),
            "sum_sq": None if self._sum_sq is None else self._sum_sq.cpu(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> LatentStats:
        """Restore from ``state_dict()`` (replaces everything). Returns self."""
        shape = None if state["shape"] is None else tuple(int(s) for s in state["shape"])
        self._shape = shape
        if state["count"] is None:
            self._count = None
            self._sum = self._sum_sq = None
            self._ref_mean = state["mean"].to(torch.float64)
            self._ref_tr_cov_d = float(state["tr_cov_d"])
        else:
            self._count = int(state["count"])
            self._ref_mean = self._ref_tr_cov_d = None
            s, s2 = state.get("sum"), state.get("sum_sq")
            self._sum = None if s is None else s.to(torch.float64).clone()
            self._sum_sq = None if s2 is None else s2.to(torch.float64).clone()
            if shape is not None and self._sum is None:
                self._init_sums(shape, torch.device("cpu"))
        return self

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> LatentStats:
        return cls().load_state_dict(state)


def load_stats(path: str | os.PathLike) -> LatentStats:
    """Statistics from a file, whatever its name: our safetensors format (``LatentStats.save``),
    or a reference ``torch.save`` dict (SVD keys, or DynamiCrafter / VideoCrafter1 keys;
    ``LatentStats.from_reference``). The one loader every caller uses.

    The format is read off the content: a safetensors file starts with the 8-byte length of its
    JSON header, then ``{``; anything else goes to ``torch.load(weights_only=True)``.
    Raises FileNotFoundError naming the path when it does not exist.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Analytic-Init statistics file {path!r} not found; write one with "
            "`python -m cil_lightning stats` or give a reference-format .pt file"
        )
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        return LatentStats.load(path)
    return LatentStats.from_reference(path)
