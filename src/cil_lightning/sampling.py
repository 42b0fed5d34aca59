"""The sampler: one frozen object holding every sampling setting, called on a denoiser.

``conf/sampler/*.yaml`` are ``_target_`` nodes of :class:`Sampler`; tasks, callbacks, the leakage
diagnostic and the studies receive the object and never assemble sampling themselves (DESIGN
principle 3). The step functions stay in ``diffusion/samplers.py`` and Analytic-Init in
``diffusion/analytic_init.py``; this module only glues them to a model adapter, so the validation
callback, the ``sample`` task and the diagnostic produce the same videos for the same seeds.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from .diffusion.analytic_init import LatentStats, analytic_init, load_stats
from .diffusion.guidance import rescaled_guidance
from .diffusion.rng import Generator
from .diffusion.samplers import (
    SAMPLERS,
    classifier_free_guidance,
    get_sampler,
    svd_guidance_scale,
)

# Loaded statistics by (absolute path, modification time): a frozen Sampler holds the path and
# loads the file once per process, however often it is copied with ``replace``.
_STATS_CACHE: dict[tuple[str, int], LatentStats] = {}


def cached_stats(path: str | os.PathLike) -> LatentStats:
    """``load_stats(path)``, read once per process (again when the file changes)."""
    full = os.path.abspath(os.fspath(path))
    if not os.path.isfile(full):
        return load_stats(path)  # raises FileNotFoundError naming the path as given
    key = (full, os.stat(full).st_mtime_ns)
    if key not in _STATS_CACHE:
        _STATS_CACHE[key] = load_stats(full)
    return _STATS_CACHE[key]


def latent_shape(denoiser, cond, num_frames: int) -> tuple[int, ...]:
    """Latent shape [B, f, C, h, w] of ``num_frames`` frames of ``cond``: the adapter's
    ``latent_shape`` when it compresses time (Wan: f = (F - 1) / 4 + 1), else one latent frame per
    frame of ``cond.latent`` [B, C, h, w]'s shape."""
    if hasattr(denoiser, "latent_shape"):
        return tuple(denoiser.latent_shape(cond, num_frames))
    return (cond.latent.shape[0], int(num_frames), *cond.latent.shape[1:])


@dataclass
class Samples:
    """What a :class:`Sampler` call returns.

    Attributes:
        latents: the final sample [B, F, C, h, w] (the denoiser's latent space).
        video: ``denoiser.decode_video(latents)``, frames [B, F, 3, H, W] in [-1, 1].
        trajectory: [x_M, x_1, ..., latents], num_steps + 1 tensors [B, F, C, h, w], when asked.
        x0_predictions: the denoiser's x0 prediction at each step, num_steps tensors, when asked.
    """

    latents: Tensor
    video: Tensor
    trajectory: list[Tensor] | None = None
    x0_predictions: list[Tensor] | None = None


@dataclass(frozen=True)
class Sampler:
    """Image-to-video sampling settings; ``sampler(denoiser, cond, num_frames, generator)``.

    These are the only defaults: ``conf/sampler/*.yaml`` override some of them, and
    ``replace(M=..., stats=...)`` gives the settings of another start.

    Args:
        step: the step function of ``diffusion.samplers.SAMPLERS``: ``euler`` (EDM Euler, the
            SVD reference), ``heun`` (EDM only), ``ddim`` (any family), ``flow_euler``.
        num_steps: number of steps of the ladder ``schedule.sampling_times(num_steps, M)``.
        M: start point in the schedule's native units (EDM: sigma_max, reference 100; VP: a step
            count, e.g. 940; flow: t_M); None starts at the schedule's full start.
        stats: Analytic-Init statistics (METHOD.md section 4), a file (ours, or a reference
            ``.pt``; ``diffusion.analytic_init.load_stats``) or a ``LatentStats``; None starts
            from the plain Gaussian N(0, (sigma_M^2 + alpha_M^2) I).
        min_guidance, max_guidance: SVD's classifier-free guidance ramp over frames; both 1
            disable guidance (one forward pass per step).
        eta: DDIM stochasticity in [0, 1] (``ddim`` only).
        guidance_rescale: phi in [0, 1] of Lin et al.'s guidance rescale, applied in the
            network's output space (``diffusion/guidance.py``; DynamiCrafter's reference: 0.7);
            0 leaves guidance plain.
    """

    step: str = "euler"
    num_steps: int = 25
    M: float | None = None
    stats: str | os.PathLike | LatentStats | None = None
    min_guidance: float = 1.0
    max_guidance: float = 1.0
    eta: float = 0.0
    guidance_rescale: float = 0.0

    def __post_init__(self) -> None:
        # The numeric ranges are checked with the config (``config/checks.py``, before any import);
        # the step's name is known only here, next to the registry.
        if self.step not in SAMPLERS:
            raise ValueError(f"sampler.step={self.step!r} is unknown; allowed: {sorted(SAMPLERS)}")

    def replace(self, **changes) -> Sampler:
        """A copy with some settings changed, e.g. ``replace(M=10.0, stats=None)``."""
        return dataclasses.replace(self, **changes)

    @property
    def latent_stats(self) -> LatentStats | None:
        """The Analytic-Init statistics, loaded (once per file) when ``stats`` is a path."""
        if self.stats is None or isinstance(self.stats, LatentStats):
            return self.stats
        return cached_stats(self.stats)

    @property
    def guided(self) -> bool:
        """Whether classifier-free guidance runs (a second, unconditional pass per step)."""
        return max(self.min_guidance, self.max_guidance) != 1.0 or (
            self.min_guidance != self.max_guidance
        )

    def settings(self) -> dict:
        """The settings as plain values for records (``stats`` as its path or repr)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        stats = out["stats"]
        if isinstance(stats, LatentStats):
            out["stats"] = repr(stats)
        elif stats is not None:
            out["stats"] = os.fspath(stats)
        return out

    def check_stats(self, stats: LatentStats | None, denoiser, num_frames: int, cond) -> None:
        """Raise ``ValueError`` naming ``sampler.stats`` when the statistics' latent shape
        [f, C, h, w] is not the one of ``num_frames`` frames of this condition."""
        if stats is None or stats.shape is None:
            return
        expected = latent_shape(denoiser, cond, num_frames)[1:]
        if tuple(stats.shape) != expected:
            raise ValueError(
                f"sampler.stats={self.settings()['stats']!r} has latent shape "
                f"{tuple(stats.shape)}, but {num_frames} frames of this condition "
                f"({tuple(cond.latent.shape[1:])} latents per frame) give latents {expected}"
            )

    @torch.no_grad()
    def __call__(
        self,
        denoiser,
        cond,
        num_frames: int,
        generator: Generator = None,
        *,
        return_intermediates: bool = False,
    ) -> Samples:
        """Sample videos for a batch of B conditions.

        Args:
            denoiser: a model adapter (``models/``): ``denoiser(x_t, t, cond) -> x0_hat``,
                ``schedule``, ``decode_video``.
            cond: the condition of B frames (``denoiser.sampling_condition`` or
                ``encode_condition``); ``cond.latent`` is [B, C, h, w].
            num_frames: F, frames per video.
            generator: None, one generator, or B per-sample generators (batch-size-independent
                results); x_M is drawn from it first, then any step noise.
            return_intermediates: also keep the trajectory and the x0 predictions.

        Returns:
            :class:`Samples` with ``latents`` [B, F, C, h, w] and ``video`` [B, F, 3, H, W].
        """
        stats = self.latent_stats
        self.check_stats(stats, denoiser, num_frames, cond)
        schedule, latent = denoiser.schedule, cond.latent
        shape = latent_shape(denoiser, cond, num_frames)
        x = analytic_init(schedule, self.M, stats, shape, generator, device=latent.device)
        times = schedule.sampling_times(self.num_steps, self.M, device=latent.device)

        def conditional(x_t: Tensor, t: Tensor) -> Tensor:
            return denoiser(x_t, t, cond)

        fn = conditional
        if self.guided:
            uncond = cond.unconditional()
            scale = svd_guidance_scale(
                shape[1], self.min_guidance, self.max_guidance, device=latent.device
            )
            unconditional = lambda x_t, t: denoiser(x_t, t, uncond)  # noqa: E731
            if self.guidance_rescale > 0:
                fn = rescaled_guidance(
                    conditional, unconditional, scale, self.guidance_rescale, schedule
                )
            else:
                fn = classifier_free_guidance(conditional, unconditional, scale)
        kwargs = {"eta": self.eta} if self.step == "ddim" else {}
        out = get_sampler(self.step)(
            fn,
            schedule,
            x,
            times,
            generator=generator,
            return_intermediates=return_intermediates,
            **kwargs,
        )
        return Samples(
            latents=out.sample,
            video=denoiser.decode_video(out.sample),
            trajectory=out.trajectory,
            x0_predictions=out.x0_predictions,
        )
