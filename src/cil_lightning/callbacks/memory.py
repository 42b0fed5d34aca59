"""No silent death by memory: estimate a training step's memory before the first one, and leave a
checkpoint and advice when a GPU runs out during training.

The estimate counts, on the device the run uses: the gradients and AdamW's two moments of the
trainable parameters, an EMA copy when the run keeps one, and the activations a step saves for
its backward pass, measured with ``torch.autograd.graph.saved_tensors_hooks`` on probe steps of
one clip of a few frames (at the run's resolution, or two smaller ones extrapolated from) and
scaled linearly to the batch and the clip length. Transient buffers (the VAE encoder's,
attention scratch) are not counted: it is a lower bound, and a run it stops would not have fitted.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

KNOBS = (
    "data.batch_size (and trainer.accumulate_grad_batches to keep the effective batch), "
    "clip.num_frames, clip.height / clip.width, model.gradient_checkpointing=true, "
    "trainer.precision=bf16-mixed on a GPU, data.num_workers (each worker holds batches)"
)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def saved_activation_bytes(fn, params: list[nn.Parameter]) -> int:
    """Bytes of the distinct tensors autograd saves for backward while ``fn()`` runs (parameters
    excluded; a storage saved twice counted once)."""
    skip = {p.data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip and ptr not in seen:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def free_bytes(device: torch.device) -> int:
    """Memory this process can still take on ``device``: the GPU's free memory, or the host's
    available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


class MemoryCheck(Callback):
    """Stop before the first step when a step will not fit; checkpoint and advise on a GPU OOM.

    Args:
        num_frames, height, width, batch_size: the run's clip size and micro-batch
            (``${clip.*}``, ``${data.batch_size}``).
        probe_frames: frames of the probe clip (a Wan-like adapter with a temporal factor k gets
            k + 1).
        probe_pixels: largest probe resolution (pixels per frame); larger runs are extrapolated
            from two smaller probes, whose sides are multiples of ``probe_multiple`` (64: the
            latent UNets' VAE x down-sampling factor).
        margin: fraction of the free memory a step may use (the rest for the allocator, workers and
            everything not counted).
        limit_bytes: the memory to compare with instead of the device's free memory (tests).
        dirpath: where the checkpoint of an out-of-memory run goes.
    """

    def __init__(
        self,
        num_frames: int,
        height: int,
        width: int,
        batch_size: int,
        probe_frames: int = 2,
        probe_pixels: int = 128 * 128,
        probe_multiple: int = 64,
        margin: float = 0.9,
        limit_bytes: int | None = None,
        dirpath: str | None = None,
    ) -> None:
        self.num_frames, self.height, self.width = int(num_frames), int(height), int(width)
        self.batch_size, self.probe_frames = int(batch_size), int(probe_frames)
        self.probe_pixels, self.probe_multiple = int(probe_pixels), int(probe_multiple)
        self.margin, self.limit_bytes, self.dirpath = float(margin), limit_bytes, dirpath
        self.estimate: dict[str, float] | None = None

    def _probe_frames(self, denoiser) -> int:
        fixed = getattr(denoiser, "num_frames", None)
        if isinstance(fixed, int):  # an adapter built for one clip length (lvdm)
            return fixed
        k = getattr(denoiser, "temporal_factor", None)
        if k is not None:  # clips of k n + 1 frames
            return min(self.num_frames, int(k) + 1)
        return min(self.num_frames, self.probe_frames)

    def _probe(self, pl_module, trainable, frames: int, height: int, width: int) -> int:
        """Activation bytes saved by one step on one clip of ``frames`` x ``height`` x ``width``."""
        video = torch.zeros(1, frames, 3, height, width, device=pl_module.device)
        batch = {"video": video, "cond_frame": video[:, 0]}
        generator = torch.Generator(device=pl_module.device).manual_seed(0)
        was_training = pl_module.training
        pl_module.train()
        try:
            return saved_activation_bytes(
                lambda: pl_module._loss(batch, generator).mean(), trainable
            )
        finally:
            pl_module.train(was_training)
            pl_module.denoiser.zero_grad(set_to_none=True)

    def probe_sizes(self) -> list[tuple[int, int]]:
        """The probe resolutions: the run's own when it has at most ``probe_pixels`` pixels, else
        two smaller ones of about its aspect (sides multiples of ``probe_multiple``) to
        extrapolate from, so that the probe cannot take the memory it is there to predict."""
        if self.height * self.width <= self.probe_pixels:
            return [(self.height, self.width)]
        m = self.probe_multiple

        def fit(x: float) -> int:
            return max(m, int(x) // m * m)

        scale = (self.probe_pixels / (self.height * self.width)) ** 0.5
        big = (fit(self.height * scale), fit(self.width * scale))
        small = (fit(big[0] / 2), fit(big[1] / 2))
        return [big] if small == big else [big, small]

    def estimate_bytes(self, pl_module) -> dict[str, float]:
        """The parts of a step's memory beyond the resident weights, in bytes.

        Activations: probes of one clip of a few frames, scaled linearly to the batch and the
        clip length, and over the resolution as (area ratio)^p with p fitted on two probe sizes
        (clamped to [1, 2]: convolutions are linear in pixels, materialised attention quadratic)."""
        denoiser = pl_module.denoiser
        trainable = [p for p in denoiser.parameters() if p.requires_grad]
        weights = sum(p.numel() * p.element_size() for p in trainable)
        f = self._probe_frames(denoiser)
        sizes = self.probe_sizes()
        saved = [self._probe(pl_module, trainable, f, h, w) for h, w in sizes]
        area = self.height * self.width
        if len(sizes) == 1:
            activations = saved[0]
        else:
            (h1, w1), (h2, w2) = sizes
            p = 1.0
            if saved[1] > 0 and h1 * w1 > h2 * w2:
                p = math.log(saved[0] / saved[1]) / math.log(h1 * w1 / (h2 * w2))
            activations = saved[0] * (area / (h1 * w1)) ** min(max(p, 1.0), 2.0)
        return {
            "activations": activations * self.batch_size * self.num_frames / f,
            "gradients": weights,
            "optimizer": 2 * sum(p.numel() * 4 for p in trainable),  # AdamW moments, fp32
            "ema": weights if getattr(pl_module, "ema", None) is not None else 0,
        }

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.global_step > 0:
            return  # resumed: this run has trained at this size before
        self.estimate = self.estimate_bytes(pl_module)
        total = sum(self.estimate.values())
        limit = self.limit_bytes if self.limit_bytes is not None else free_bytes(pl_module.device)
        if total > self.margin * limit:
            parts = ", ".join(f"{k} {_gib(v)}" for k, v in self.estimate.items())
            raise MemoryError(
                f"a training step needs at least {_gib(total)} ({parts}; batch {self.batch_size} "
                f"x {self.num_frames} frames at {self.height}x{self.width}), but "
                f"{_gib(limit)} is free on {pl_module.device} ({self.margin:.0%} usable). "
                f"Lower: {KNOBS}"
            )

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, torch.OutOfMemoryError):
            return
        # The failing step stopped before the optimiser: the weights are the last good step's.
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        path = None
        if self.dirpath is not None:
            path = Path(self.dirpath) / f"oom_step{trainer.global_step}.ckpt"
            trainer.save_checkpoint(path)
        where = f"; the last good step is saved in {path} (ckpt_path=... resumes)" if path else ""
        print(
            f"cil_lightning: out of memory at step {trainer.global_step}{where}. Lower: {KNOBS}",
            file=sys.stderr,
        )
