"""Video Inception Score with C3D on UCF101 (the TGAN protocol: 112x112, 16 frames, 10 splits)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat


def inception_score(probs: Tensor, splits: int = 10, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    """IS = exp(E_x KL(p(y|x) || p(y))) on each of ``splits`` consecutive chunks.

    Args:
        probs: class probabilities [N, K].

    Returns:
        (mean, std) over the splits, float64 0-d tensors (std is 0 for one split).
    """
    probs = probs.to(torch.float64)
    scores = []
    for chunk in probs.chunk(splits):
        p_y = chunk.mean(0, keepdim=True)
        # eps as the TGAN reference, so identical inputs give identical numbers.
        kl = (chunk * ((chunk + eps).log() - (p_y + eps).log())).sum(1).mean()
        scores.append(kl.exp())
    scores = torch.stack(scores)
    return scores.mean(), (scores.std(unbiased=False) if len(scores) > 1 else scores.new_zeros(()))


class VideoInceptionScore(Metric):
    """Inception Score of generated videos [B, F, 3, H, W] in [-1, 1] (higher is better).

    Class probabilities come from ``classifier`` (default: C3D fine-tuned on UCF101, loaded from
    ``weights``; ``c3d.C3DClassifier`` documents the preprocessing). Probabilities are kept per
    video (gathered across ranks), split into ``splits`` chunks in order; ``compute`` returns the
    mean over the splits and ``std`` holds their standard deviation after it.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        classifier: nn.Module | None = None,
        weights: str | Path | None = None,
        splits: int = 10,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if classifier is None:
            from .c3d import load_c3d

            classifier = load_c3d(weights)
        self.classifier = classifier.eval().requires_grad_(False)
        self.splits = splits
        self.std: Tensor | None = None
        self.add_state("probs", [], dist_reduce_fx="cat")

    def update(self, videos: Tensor) -> None:
        """Add generated videos [B, F, 3, H, W] in [-1, 1]."""
        with torch.no_grad():
            self.probs.append(self.classifier(videos).to(torch.float64))

    def update_videos(self, generated: Tensor, reference=None, condition=None) -> None:
        self.update(generated)

    def compute(self) -> Tensor:
        mean, self.std = inception_score(dim_zero_cat(self.probs), self.splits)
        return mean
