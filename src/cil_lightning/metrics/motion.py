"""Motion score: mean optical-flow magnitude of a video, and its error against a reference.

METHOD.md section 6: the motion score (MS) of a video is the mean flow magnitude over all
consecutive frame pairs and all pixels, in pixels at the resolution it is given (``evaluate``
brings generated and reference videos to one stated resolution first, so MS errors compare motion,
not sizes); the reference code uses RAFT with 20 iterations. The MS error of a generated video
is |MS_out - MS_in|, MS_in being the MS of the real video its condition came from.

Three flow estimators (``build_flow``):

- ``RAFTFlow``: torchvision's RAFT with local weights; the paper's estimator, for numbers
  comparable with it. ``method: auto`` picks it whenever RAFT weights are configured.
- ``DISFlow``: OpenCV's dense inverse search, no weights; the default without RAFT weights.
  It reads 64 x 96 views of real photographs panned at 0.5 to 4 px/frame within 5 % of the
  true speed (0.976x to 1.042x), textured ones and ones two-thirds flat sky alike
  (tests/metrics/test_motion.py). Limits: frames of 32 px a side under-read pans of 3 px/frame
  or more; like any matcher it reads frame-to-frame noise over flat areas as motion.
- ``FarnebackFlow``: OpenCV's Farneback, no weights; kept for earlier runs only. It under-reads
  flat content (0.27x to 0.8x on the same pans of skies), so a flatter or blurrier generation
  reads as less motion: the bias a leakage study must not have.

Numbers from different estimators are not comparable: compare runs measured with the same one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from .registry import METHODS, resolve_method  # noqa: F401  (the flow names live with the table)
from .weights import load_state_dict, require_file


def _luma(x: Tensor) -> Tensor:
    """BT.601 luma (as cv2.cvtColor RGB2GRAY): [N, 3, H, W] in [-1, 1] -> [N, H, W] in 0..255."""
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return ((x.float().clamp(-1, 1) + 1) * 127.5 * w).sum(1)


class DISFlow(nn.Module):
    """Dense inverse search flow (Kroeger et al. 2016; OpenCV) on grey-level frames, no weights.

    ``forward(a, b)``: frames [N, 3, H, W] in [-1, 1] -> flow [N, 2, H, W] in pixels (x, y).
    OpenCV's MEDIUM preset refined down to full resolution (``finest_scale`` 0: the preset stops
    at half resolution, and there reads known pans at 0.86x to 1.09x), with 12 px patches (8 px
    ones read blurred, nearly featureless skies more noisily). DIS needs 8-bit frames: each
    pair's luma is stretched by one affine map to span 0..255 before rounding, so dim or
    low-contrast frames keep their sub-level detail (without it a sky pan reads 1.07x); the map
    is the same for both frames, so it leaves the flow unchanged.

    Args:
        preset: ``ultrafast``, ``fast`` or ``medium`` (OpenCV's DIS presets).
        finest_scale: pyramid level the flow is refined down to (0: full resolution).
        patch_size: side of the matched patches in pixels.
        stretch: stretch each pair's grey range to 0..255 (see above).
    """

    PRESETS = ("ultrafast", "fast", "medium")

    def __init__(
        self,
        preset: str = "medium",
        finest_scale: int = 0,
        patch_size: int = 12,
        stretch: bool = True,
    ) -> None:
        super().__init__()
        if preset not in self.PRESETS:
            raise ValueError(f"DIS preset must be one of {self.PRESETS}, got {preset!r}")
        self.preset, self.finest_scale, self.patch_size = preset, finest_scale, patch_size
        self.stretch = stretch

    def _estimator(self):
        import cv2

        dis = cv2.DISOpticalFlow_create(self.PRESETS.index(self.preset))
        dis.setFinestScale(self.finest_scale)
        dis.setPatchSize(self.patch_size)
        return dis

    def _grey_pair(self, a: Tensor, b: Tensor) -> tuple[np.ndarray, np.ndarray]:
        ya, yb = _luma(a), _luma(b)
        if self.stretch:
            lo = torch.minimum(ya.amin((-2, -1)), yb.amin((-2, -1)))[:, None, None]
            hi = torch.maximum(ya.amax((-2, -1)), yb.amax((-2, -1)))[:, None, None]
            gain = 255.0 / (hi - lo).clamp_min(1.0)  # a still, flat pair stays flat
            ya, yb = (ya - lo) * gain, (yb - lo) * gain
        return tuple(y.round().clamp(0, 255).to(torch.uint8).cpu().numpy() for y in (ya, yb))

    # DIS's pyramid with 12 px patches fails on frames under 20 px (OpenCV: "width or height
    # >= 12"); smaller frames run upsampled and their flow is brought back (``_at_min_side``).
    min_side = 32

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return _at_min_side(self._flow, a.float(), b.float(), self.min_side)

    def _flow(self, a: Tensor, b: Tensor) -> Tensor:
        dis = self._estimator()
        ga, gb = self._grey_pair(a, b)
        flows = [dis.calc(x, y, None) for x, y in zip(ga, gb)]
        return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(a.device)


class FarnebackFlow(nn.Module):
    """Dense flow by Farneback's polynomial expansion (OpenCV) on grey-level frames.

    ``forward(a, b)``: frames [N, 3, H, W] in [-1, 1] -> flow [N, 2, H, W] in pixels (x, y).
    Parameters are OpenCV's commonly used ones (pyramid 0.5 x 3 levels, 15 px window, 3
    iterations, 5 px polynomial with sigma 1.2), which track displacements of a few pixels
    per level.
    """

    def __init__(
        self,
        pyr_scale: float = 0.5,
        levels: int = 3,
        winsize: int = 15,
        iterations: int = 3,
        poly_n: int = 5,
        poly_sigma: float = 1.2,
    ) -> None:
        super().__init__()
        self.params = (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, 0)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        import cv2

        ga, gb = (_luma(x).round().to(torch.uint8).cpu().numpy() for x in (a, b))
        flows = [cv2.calcOpticalFlowFarneback(x, y, None, *self.params) for x, y in zip(ga, gb)]
        return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(a.device)


class RAFTFlow(nn.Module):
    """torchvision's RAFT: frames [N, 3, H, W] in [-1, 1] -> flow [N, 2, H, W] in pixels.

    RAFT's correlation pyramid needs sides of at least 128 and multiples of 8. Frames with a
    side under 128 are upsampled by the smallest integer factor s that reaches it (bilinear), and
    the flow is area-averaged back and divided by s; frames are then padded (edge replication) to
    multiples of 8 and the flow cropped back. Magnitudes are in pixels at the input resolution.

    Args:
        network: a torchvision ``RAFT`` (``raft_large`` or ``raft_small``).
        num_flow_updates: refinement iterations (20 as the reference motion score).
    """

    def __init__(self, network: nn.Module, num_flow_updates: int = 20) -> None:
        super().__init__()
        self.network, self.num_flow_updates = network.eval(), num_flow_updates
        self.min_side = 128

    @torch.no_grad()
    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        a, b = a.float().clamp(-1, 1), b.float().clamp(-1, 1)
        return _at_min_side(self._padded, a, b, self.min_side)

    def _padded(self, a: Tensor, b: Tensor) -> Tensor:
        hs, ws = a.shape[-2:]
        pad = (0, (-ws) % 8, 0, (-hs) % 8)
        a, b = F.pad(a, pad, mode="replicate"), F.pad(b, pad, mode="replicate")
        return self.network(a, b, num_flow_updates=self.num_flow_updates)[-1][..., :hs, :ws]


def _at_min_side(flow_fn, a: Tensor, b: Tensor, min_side: int) -> Tensor:
    """``flow_fn(a, b)`` on frames [N, 3, H, W] whose short side is under ``min_side``: run at
    the smallest integer upsampling s (bilinear) that reaches it, then area-average the flow back
    and divide by s, so magnitudes stay in pixels at the input resolution."""
    h, w = a.shape[-2:]
    s = -(-min_side // min(h, w))  # ceil
    if s <= 1:
        return flow_fn(a, b)
    a, b = (F.interpolate(x, scale_factor=s, mode="bilinear") for x in (a, b))
    return F.avg_pool2d(flow_fn(a, b), s) / s


def load_raft(
    path: str | Path | None,
    arch: str = "large",
    num_flow_updates: int = 20,
    key: str = "metric.motion.raft_weights",
) -> RAFTFlow:
    """torchvision RAFT (``arch`` ``large`` or ``small``) with a local state dict."""
    from torchvision.models.optical_flow import raft_large, raft_small

    path = require_file(
        path, key, f"a torchvision raft_{arch} state dict (e.g. raft_{arch}_C_T_SKHT_V2-*.pth)"
    )
    network = {"large": raft_large, "small": raft_small}[arch](weights=None, progress=False)
    network.load_state_dict(load_state_dict(path))
    return RAFTFlow(network, num_flow_updates)


def build_flow(
    method: str = "auto",
    raft_weights: str | Path | None = None,
    raft_arch: str = "large",
    num_flow_updates: int = 20,
) -> nn.Module:
    """A flow module ``(a, b) -> [N, 2, H, W]`` (pixels) for the motion score.

    ``method``: ``raft`` (needs ``raft_weights``), ``dis`` (no weights), ``farneback`` (no
    weights; under-reads flat content, for comparison with earlier runs) or ``auto``: RAFT when
    ``raft_weights`` is set, else DIS. Scores from different methods are not comparable.
    """
    method = resolve_method(method, raft_weights)
    if method == "raft":
        return load_raft(raft_weights, raft_arch, num_flow_updates)
    if method == "dis":
        return DISFlow()
    return FarnebackFlow()


@torch.no_grad()
def motion_scores(videos: Tensor, flow: nn.Module, max_pairs: int = 64) -> Tensor:
    """Per-video motion score: videos [B, F, 3, H, W] in [-1, 1] -> [B] (pixels per frame).

    The mean over the F - 1 consecutive pairs and all H x W pixels of |flow| = sqrt(u^2 + v^2).
    Pairs run through ``flow`` in chunks of at most ``max_pairs``.
    """
    b, f = videos.shape[:2]
    if f < 2:
        raise ValueError(f"motion score needs at least 2 frames, got {f}")
    first = videos[:, :-1].flatten(0, 1)
    second = videos[:, 1:].flatten(0, 1)
    magnitudes = []
    for i in range(0, first.shape[0], max_pairs):
        uv = flow(first[i : i + max_pairs], second[i : i + max_pairs]).float()
        magnitudes.append(uv.square().sum(1).sqrt().mean(dim=(-2, -1)))
    return torch.cat(magnitudes).view(b, f - 1).mean(1).to(torch.float64)


class _FlowMetric(Metric):
    """A metric that owns an optical-flow module (see ``build_flow`` for the arguments)."""

    is_differentiable = False
    full_state_update = False

    def __init__(
        self,
        flow: nn.Module | None = None,
        method: str = "auto",
        raft_weights: str | Path | None = None,
        raft_arch: str = "large",
        num_flow_updates: int = 20,
        max_pairs: int = 64,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.flow = flow or build_flow(method, raft_weights, raft_arch, num_flow_updates)
        self.max_pairs = max_pairs


class MotionScore(_FlowMetric):
    """Mean motion score of videos [B, F, 3, H, W] in [-1, 1], pixels per frame.

    Per-video scores are kept (gathered across ranks): ``per_video()`` returns them in update
    order; ``compute`` their mean.

    Args:
        flow: a flow module ``(a, b) -> [N, 2, H, W]``; None builds one from ``method``,
            ``raft_weights``, ``raft_arch``, ``num_flow_updates`` (``build_flow``).
    """

    higher_is_better = None

    def __init__(self, flow: nn.Module | None = None, **kwargs) -> None:
        super().__init__(flow, **kwargs)
        self.add_state("scores", [], dist_reduce_fx="cat")

    def update(self, videos: Tensor) -> None:
        self.scores.append(motion_scores(videos, self.flow, self.max_pairs))

    def update_videos(self, generated: Tensor, reference=None, condition=None) -> None:
        self.update(generated)

    def per_video(self) -> Tensor:
        """Scores [N] of every video seen so far on this rank, float64."""
        return dim_zero_cat(self.scores) if self.scores else torch.zeros(0, dtype=torch.float64)

    def compute(self) -> Tensor:
        return dim_zero_cat(self.scores).mean()


class MotionScoreError(_FlowMetric):
    """Mean |MS(generated) - MS(reference)| over paired videos [B, F, 3, H, W] in [-1, 1].

    Keeps per-pair ``generated``, ``reference`` scores (gathered across ranks); ``per_video()``
    returns [N, 3] columns (MS_generated, MS_reference, |difference|). Lower is better. Each video
    is scored at the size it is given: pass pairs at one resolution (``evaluate`` does), or the
    error measures the size ratio.
    """

    higher_is_better = False

    def __init__(self, flow: nn.Module | None = None, **kwargs) -> None:
        super().__init__(flow, **kwargs)
        self.add_state("generated", [], dist_reduce_fx="cat")
        self.add_state("reference", [], dist_reduce_fx="cat")

    def update(self, generated: Tensor, reference: Tensor) -> None:
        """Add pairs of videos; or precomputed scores [B] for both (then no flow runs)."""
        if generated.dim() == 1 and reference.dim() == 1:
            gen, ref = generated.to(torch.float64), reference.to(torch.float64)
        else:
            gen = motion_scores(generated, self.flow, self.max_pairs)
            ref = motion_scores(reference, self.flow, self.max_pairs)
        if gen.shape != ref.shape:
            raise ValueError(f"{gen.shape[0]} generated videos for {ref.shape[0]} references")
        self.generated.append(gen)
        self.reference.append(ref)

    def update_videos(self, generated: Tensor, reference: Tensor | None = None, condition=None):
        if reference is None:
            raise ValueError("ms_error needs reference videos paired with the generated ones")
        self.update(generated, reference)

    def per_video(self) -> Tensor:
        """[N, 3]: MS of the generated video, MS of its reference, their absolute difference."""
        if not self.generated:
            return torch.zeros(0, 3, dtype=torch.float64)
        gen, ref = dim_zero_cat(self.generated), dim_zero_cat(self.reference)
        return torch.stack([gen, ref, (gen - ref).abs()], dim=1)

    def compute(self) -> Tensor:
        return (dim_zero_cat(self.generated) - dim_zero_cat(self.reference)).abs().mean()
