"""Latent statistics files: our safetensors format and the reference code's ``torch.save`` dicts.

``shared/METHOD.md`` section 4. :class:`StatsFiles` is the file half of
:class:`~cil_lightning.diffusion.latent_stats.LatentStats` (it inherits these methods);
``load_stats`` (in ``latent_stats``) picks the format by content.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .latent_stats import LatentStats

FORMAT_NAME = "cil_lightning.latent_stats"
FORMAT_VERSION = "1"
_RESERVED_KEYS = ("format", "format_version", "layout", "shape", "count", "latent_scaling")

# Reference-code file formats (``torch.save`` dicts), METHOD.md section 4.
_DC_KEYS = ("Expectation_X0", "Tr_Cov_d")  # DynamiCrafter / VideoCrafter1, mean (1, C, F, h, w)
_SVD_KEYS = ("Expectation_x_0", "trCov_d")  # SVD, mean (F, C, h, w)


class StatsFiles:
    """Reading and writing :class:`LatentStats` (a mixin: it uses the class's sums and state)."""

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
