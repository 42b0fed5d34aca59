"""No silent death by memory: estimate a training step's memory before the first one, and leave a
checkpoint and advice when a GPU runs out during training.

The estimate counts, on the device the run uses: the gradients and AdamW's two moments of the
trainable parameters, an EMA copy when the run keeps one, and the activations a step saves for
its backward pass, measured with ``torch.autograd.graph.saved_tensors_hooks`` on a probe step of
one clip of a few frames at the run's resolution and scaled linearly to the batch and the clip
length. Transient buffers (the VAE encoder's, attention scratch) are not counted: it is a lower
bound, and a run it stops would not have fitted.
"""

from __future__ import annotations

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
        margin: float = 0.9,
        limit_bytes: int | None = None,
        dirpath: str | None = None,
    ) -> None:
        self.num_frames, self.height, self.width = int(num_frames), int(height), int(width)
        self.batch_size, self.probe_frames = int(batch_size), int(probe_frames)
        self.margin, self.limit_bytes, self.dirpath = float(margin), limit_bytes, dirpath
        self.estimate: dict[str, float] | None = None

    def _probe_frames(self, denoiser) -> int:
        k = getattr(denoiser, "temporal_factor", None)
        if k is not None:  # clips of k n + 1 frames
            return min(self.num_frames, int(k) + 1)
        return min(self.num_frames, self.probe_frames)

    def estimate_bytes(self, pl_module) -> dict[str, float]:
        """The parts of a step's memory beyond the resident weights, in bytes."""
        denoiser = pl_module.denoiser
        device = pl_module.device
        trainable = [p for p in denoiser.parameters() if p.requires_grad]
        weights = sum(p.numel() * p.element_size() for p in trainable)
        f = self._probe_frames(denoiser)
        video = torch.zeros(1, f, 3, self.height, self.width, device=device)
        batch = {"video": video, "cond_frame": video[:, 0]}
        generator = torch.Generator(device=device).manual_seed(0)
        was_training = pl_module.training
        pl_module.train()
        try:
            saved = saved_activation_bytes(
                lambda: pl_module._loss(batch, generator).mean(), trainable
            )
        finally:
            pl_module.train(was_training)
            denoiser.zero_grad(set_to_none=True)
        scale = self.batch_size * self.num_frames / f
        return {
            "activations": saved * scale,
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
