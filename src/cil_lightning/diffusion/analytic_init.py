"""Analytic-Init: the Gaussian closest in KL to the marginal q_M at the start step M.

Zhao et al., "Identifying and Solving Conditional Image Leakage in Image-to-Video Diffusion Model",
NeurIPS 2024 (arXiv 2406.15735), "Analytic-Init", and ``shared/METHOD.md`` section 4.

Sampling starts at M < T. The marginal there, q_M(x_M) = E_{x0}[N(alpha_M x0, sigma_M^2 I)], still
carries x0; the isotropic Gaussian closest to it in KL has

    mu*      = alpha_M * E[x0]                           (a full tensor, e.g. [F, C, H, W])
    sigma*^2 = sigma_M^2 + alpha_M^2 * tr(Cov[x0]) / d   (one scalar; d = number of elements)

VP: alpha = sqrt(abar_M), sigma = sqrt(1 - abar_M) (native time M - 1, as the reference code);
EDM: alpha = 1, sigma = sigma_max; flow: alpha = 1 - t_M, sigma = t_M.

E[x0] and tr(Cov)/d live in the model's *scaled* latent space (after the VAE scaling factor) and
are estimated by streaming float64 sums of x and x^2 (``LatentStats``), mergeable across
DataLoader workers and ranks. Our canonical latent layout is (F, C, H, W) ("FCHW").
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .rng import Generator, randn
from .schedules import Schedule

__all__ = ["LatentStats", "analytic_init", "analytic_init_params", "load_stats"]

FORMAT_NAME = "cil_lightning.latent_stats"
FORMAT_VERSION = "1"
_RESERVED_KEYS = ("format", "format_version", "layout", "shape", "count", "latent_scaling")

# Reference-code file formats (``torch.save`` dicts), METHOD.md section 4.
_DC_KEYS = ("Expectation_X0", "Tr_Cov_d")  # DynamiCrafter / VideoCrafter1, mean (1, C, F, h, w)
_SVD_KEYS = ("Expectation_x_0", "trCov_d")  # SVD, mean (F, C, h, w)


class LatentStats:
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

    # ------------------------------------------------------------------ files
    def save(
        self,
        path: str | os.PathLike,
        *,
        layout: str = "FCHW",
        latent_scaling: float | None = None,
        extra_metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Write a safetensors file.

        Tensors: ``sum``, ``sum_sq`` (float64, so a loaded file can be merged further; absent for
        reference imports), and for readers ``mean`` (float64, [*shape]) and ``tr_cov_d`` (float64,
        0-d). Metadata (strings): ``format``, ``format_version``, ``layout`` (e.g. "FCHW"),
        ``shape`` (JSON list), ``count`` (int, or "none" for reference imports), ``latent_scaling``
        (the VAE scaling factor already applied to the latents, JSON; "null" if unknown), plus
        ``extra_metadata`` (non-string values are JSON-encoded).
        """
        from safetensors.torch import save_file

        if self._shape is None:
            raise ValueError("cannot save empty LatentStats")
        tensors = {
            "mean": self.mean.detach().to("cpu", torch.float64).contiguous(),
            "tr_cov_d": torch.tensor(self.tr_cov_d, dtype=torch.float64),
        }
        if not self.is_reference:
            tensors["sum"] = self._sum.detach().cpu().contiguous()
            tensors["sum_sq"] = self._sum_sq.detach().cpu().contiguous()
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "layout": str(layout),
            "shape": json.dumps(list(self._shape)),
            "count": "none" if self.is_reference else str(self._count),
            "latent_scaling": json.dumps(latent_scaling),
        }
        for key, value in (extra_metadata or {}).items():
            if key in _RESERVED_KEYS:
                raise ValueError(f"extra_metadata key {key!r} is reserved ({_RESERVED_KEYS})")
            metadata[str(key)] = value if isinstance(value, str) else json.dumps(value)
        save_file(tensors, os.fspath(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentStats:
        """Read a file written by ``save``; its metadata (strings) ends up in ``.metadata``."""
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != FORMAT_NAME:
                raise ValueError(
                    f"{path} is not a LatentStats file (format={meta.get('format')!r})"
                )
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"{path}: unsupported format_version {meta.get('format_version')!r} "
                    f"(this code reads {FORMAT_VERSION})"
                )
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        shape = tuple(json.loads(meta["shape"]))
        if meta["count"] == "none":
            state = {
                "shape": shape,
                "count": None,
                "mean": tensors["mean"],
                "tr_cov_d": float(tensors["tr_cov_d"]),
            }
        else:
            state = {
                "shape": shape,
                "count": int(meta["count"]),
                "sum": tensors["sum"],
                "sum_sq": tensors["sum_sq"],
            }
        out = cls.from_state_dict(state)
        out.metadata = meta
        return out

    @classmethod
    def from_reference(cls, path_or_dict: str | os.PathLike | Mapping[str, Any]) -> LatentStats:
        """Import the reference code's ``torch.save`` dict (file path or the dict itself).

        * DynamiCrafter / VideoCrafter1: keys ``Expectation_X0`` (layout (1, C, F, h, w)) and
          ``Tr_Cov_d``; the mean is permuted to our (F, C, h, w).
        * SVD: keys ``Expectation_x_0`` (layout (F, C, h, w)) and ``trCov_d``.

        Files are read with ``torch.load(weights_only=True)``. The result has ``count is None``.
        """
        if isinstance(path_or_dict, Mapping):
            data = path_or_dict
        else:
            data = torch.load(os.fspath(path_or_dict), map_location="cpu", weights_only=True)
            if not isinstance(data, Mapping):
                raise ValueError(f"{path_or_dict}: expected a dict, got {type(data).__name__}")
        if all(k in data for k in _DC_KEYS):
            mean = torch.as_tensor(data[_DC_KEYS[0]])
            if mean.ndim != 5 or mean.shape[0] != 1:
                raise ValueError(
                    f"{_DC_KEYS[0]} must have layout (1, C, F, h, w), got {tuple(mean.shape)}"
                )
            mean = mean[0].permute(1, 0, 2, 3)  # (C, F, h, w) -> (F, C, h, w)
            tr = data[_DC_KEYS[1]]
        elif all(k in data for k in _SVD_KEYS):
            mean = torch.as_tensor(data[_SVD_KEYS[0]])
            tr = data[_SVD_KEYS[1]]
        else:
            raise KeyError(
                f"reference stats need keys {_DC_KEYS} (DynamiCrafter/VideoCrafter1) or "
                f"{_SVD_KEYS} (SVD); got {sorted(map(str, data))}"
            )
        tr = float(torch.as_tensor(tr).detach().cpu().reshape(()))
        mean = mean.detach().to("cpu", torch.float64).contiguous()
        return cls.from_state_dict(
            {"shape": tuple(mean.shape), "count": None, "mean": mean, "tr_cov_d": tr}
        )

    def to_reference(
        self, path: str | os.PathLike, style: str = "svd", *, dtype: torch.dtype = torch.float32
    ) -> None:
        """Write the reference code's ``torch.save`` dict.

        Args:
            style: ``"svd"`` (keys ``Expectation_x_0`` (F, C, h, w), ``trCov_d``) or
                ``"dynamicrafter"`` (keys ``Expectation_X0`` (1, C, F, h, w), ``Tr_Cov_d``; also
                read by VideoCrafter1); needs 4-D stats in our (F, C, h, w) layout.
            dtype: tensor dtype (float32, as the reference code produces; float64 would promote
                the reference pipelines' latents).
        """
        mean = self.mean.detach().to("cpu", dtype)
        tr = torch.tensor(self.tr_cov_d, dtype=dtype)
        if style == "svd":
            data = {_SVD_KEYS[0]: mean.contiguous(), _SVD_KEYS[1]: tr}
        elif style == "dynamicrafter":
            if mean.ndim != 4:
                raise ValueError(f"dynamicrafter style needs (F, C, h, w) stats, got {mean.shape}")
            data = {
                _DC_KEYS[0]: mean.permute(1, 0, 2, 3).unsqueeze(0).contiguous(),
                _DC_KEYS[1]: tr,
            }
        else:
            raise ValueError(f"style must be 'svd' or 'dynamicrafter', got {style!r}")
        torch.save(data, os.fspath(path))


def analytic_init_params(
    schedule: Schedule, M: float | None, stats: LatentStats | None
) -> tuple[Tensor, float]:
    """The Analytic-Init Gaussian N(mean, std^2 I) at the start point ``M``.

    (alpha, sigma) = ``schedule.alpha_sigma(schedule.start_time(M))``;
    mean = alpha * E[x0], std = sqrt(sigma^2 + alpha^2 * tr(Cov)/d).

    ``stats=None`` means a zero-mean, unit-variance data prior: mean = 0, std^2 = sigma^2 + alpha^2.
    For VP that is N(0, I) (alpha^2 + sigma^2 = 1); for EDM it is N(0, (sigma_max^2 + 1) I), i.e.
    diffusers' ``init_noise_sigma`` for SVD; for flow (1 - t)^2 + t^2.

    Returns:
        mean: Tensor[*stats.shape] float64 (a 0-d zero when ``stats`` is None), on CPU.
        std: python float.
    """
    t = torch.tensor(float(schedule.start_time(M)), dtype=torch.float64)
    alpha_t, sigma_t = schedule.alpha_sigma(t)
    alpha, sigma = float(alpha_t), float(sigma_t)
    if stats is None:
        return torch.zeros((), dtype=torch.float64), math.sqrt(sigma**2 + alpha**2)
    mean = alpha * stats.mean.detach().to("cpu", torch.float64)
    return mean, math.sqrt(sigma**2 + alpha**2 * stats.tr_cov_d)


def analytic_init(
    schedule: Schedule,
    M: float | None,
    stats: LatentStats | None,
    shape: Sequence[int],
    generator: Generator = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw the initial sample x_M = alpha_M E[x0] + sqrt(sigma_M^2 + alpha_M^2 tr(Cov)/d) * eps.

    Args:
        schedule: the model's schedule (any family).
        M: start point in the schedule's convention (VP: step count, e.g. 940, native time M - 1;
            EDM: sigma_max, e.g. 100; flow: t_M, e.g. 0.9); None: the schedule's full start.
        stats: latent statistics of shape (F, C, H, W), or None for the plain start
            N(0, (sigma_M^2 + alpha_M^2) I) (see ``analytic_init_params``).
        shape: [B, *stats.shape], e.g. [B, F, C, H, W].
        generator: None, one generator, or B per-sample generators (``rng.randn``); eps is drawn
            in float32, so a seed gives the same eps whatever ``dtype``.
        device, dtype: of the result.

    Returns:
        x_M: Tensor[shape] on ``device`` in ``dtype``.
    """
    shape = tuple(int(s) for s in shape)
    if stats is not None and stats.shape is not None and shape[1:] != stats.shape:
        raise ValueError(f"shape {shape} must be [B, *stats.shape] with stats.shape={stats.shape}")
    mean, std = analytic_init_params(schedule, M, stats)
    eps = randn(shape, generator, device=device, dtype=torch.float32)
    work = torch.promote_types(dtype, torch.float32)
    mean = mean.to(device=eps.device, dtype=work)
    return (mean + std * eps.to(work)).to(dtype)


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
