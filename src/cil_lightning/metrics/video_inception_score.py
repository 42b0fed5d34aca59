"""Video Inception Score with C3D on UCF101 (TGAN's classifier, StyleGAN-V's split convention).

The split convention is StyleGAN-V's ``isv2048_ucf`` (``universome/stylegan-v``,
``src/metrics/video_inception_score.py`` and ``metric_main.py``): 2048 generated videos of 16
frames; their probabilities shuffled with ``np.random.RandomState(42).shuffle``, cut into 10
parts at ``i * N // 10``; IS of each part = exp(mean KL(p(y|x) || p(y))) with the log of the
probabilities taken as they are (no eps); reported as the mean and the population std over parts.
TGAN2's ``inception_score`` (``pfnet-research/tgan2``, ``tgan2/evaluations/inception_score.py``)
uses the same cuts without the shuffle.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

SPLITS, SHUFFLE, SEED, EPS = 10, True, 42, 0.0  # StyleGAN-V's isv2048_ucf


def check_settings(splits: object, shuffle: object, seed: object, eps: object) -> None:
    """Raise ValueError naming the ``metric.is.*`` key of the first value out of range."""
    problems = []
    if not isinstance(splits, int) or isinstance(splits, bool) or splits < 1:
        problems.append(f"metric.is.splits={splits!r}; allowed: an integer >= 1")
    if not isinstance(shuffle, bool):
        problems.append(f"metric.is.shuffle={shuffle!r}; allowed: true or false")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        problems.append(f"metric.is.seed={seed!r}; allowed: an integer in [0, 2**32)")
    if (
        not isinstance(eps, (int, float))
        or isinstance(eps, bool)
        or not (math.isfinite(eps) and eps >= 0)
    ):
        problems.append(f"metric.is.eps={eps!r}; allowed: a number >= 0")
    if problems:
        raise ValueError("invalid Inception Score settings: " + "; ".join(problems))


def inception_score(
    probs: Tensor,
    splits: int = SPLITS,
    shuffle: bool = SHUFFLE,
    seed: int = SEED,
    eps: float = EPS,
) -> tuple[Tensor, Tensor]:
    """IS = exp(E_x KL(p(y|x) || p(y))) on each of ``splits`` parts; mean and std over parts.

    Args:
        probs: class probabilities [N, K], one row per video, N >= splits.
        splits: number of parts; part i holds rows ``i * N // splits`` to ``(i + 1) * N // splits``.
        shuffle: permute the rows first as ``np.random.RandomState(seed).shuffle`` does
            (StyleGAN-V); False keeps the given order (TGAN2).
        seed: the RandomState seed of the shuffle (StyleGAN-V: 42).
        eps: 0 takes the log of the probabilities as they are, with 0 log 0 = 0 (StyleGAN-V, where
            its value is finite); eps > 0 uses p (log(p + eps) - log(p(y) + eps)) (TGAN: 1e-7).

    Returns:
        (mean, std) over the parts, float64 0-d tensors; std is the population std (np.std), 0 for
        one part. Computed in float64 (StyleGAN-V: float32), so numbers agree to ~1e-6.
    """
    check_settings(splits, shuffle, seed, eps)
    n = probs.shape[0]
    if n < splits:
        raise ValueError(
            f"Inception Score of {n} videos with metric.is.splits={splits}: every split needs at "
            "least one video; evaluate more videos or lower metric.is.splits"
        )
    probs = probs.to(torch.float64)
    if shuffle:
        order = np.random.RandomState(seed).permutation(n)
        probs = probs[torch.from_numpy(order).to(probs.device)]
    scores = []
    for i in range(splits):
        part = probs[i * n // splits : (i + 1) * n // splits]
        p_y = part.mean(0, keepdim=True)
        if eps == 0:
            kl = torch.special.xlogy(part, part) - torch.special.xlogy(part, p_y)
        else:
            kl = part * ((part + eps).log() - (p_y + eps).log())
        scores.append(kl.sum(1).mean().exp())
    scores = torch.stack(scores)
    return scores.mean(), (scores.std(unbiased=False) if len(scores) > 1 else scores.new_zeros(()))


class VideoInceptionScore(Metric):
    """Inception Score of generated videos [B, F, 3, H, W] in [-1, 1] (higher is better).

    Class probabilities come from ``classifier``, or from the C3D file ``weights`` loaded as
    ``detector`` (``c3d.load_c3d``: ``torchscript``, ``c3d_state_dict`` or ``auto``). They are kept
    per video (gathered across ranks in rank order) and scored by ``inception_score`` with
    ``splits``, ``shuffle``, ``seed`` and ``eps`` (defaults: StyleGAN-V's convention). ``compute``
    returns the mean over the splits and sets ``std`` to their standard deviation.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        classifier: nn.Module | None = None,
        weights: str | Path | None = None,
        splits: int = SPLITS,
        shuffle: bool = SHUFFLE,
        seed: int = SEED,
        eps: float = EPS,
        detector: str = "auto",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        from .c3d import check_detector, load_c3d

        check_settings(splits, shuffle, seed, eps)
        check_detector(detector)
        if classifier is None:
            classifier = load_c3d(weights, detector=detector)
        self.classifier = classifier.eval().requires_grad_(False)
        self.splits, self.shuffle, self.seed, self.eps = splits, shuffle, seed, eps
        self.std: Tensor | None = None
        self.add_state("probs", [], dist_reduce_fx="cat")

    def update(self, videos: Tensor) -> None:
        """Add generated videos [B, F, 3, H, W] in [-1, 1]."""
        with torch.no_grad():
            self.probs.append(self.classifier(videos).to(torch.float64))

    def update_videos(self, generated: Tensor, reference=None, condition=None) -> None:
        self.update(generated)

    def compute(self) -> Tensor:
        mean, self.std = inception_score(
            dim_zero_cat(self.probs), self.splits, self.shuffle, self.seed, self.eps
        )
        return mean
