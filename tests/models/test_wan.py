"""The Wan adapter against diffusers' own ``WanImageToVideoPipeline`` (tiny random configurations
of the real classes, as diffusers' Wan I2V tests build them), and its condition noise in closed
form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cil_lightning.diffusion.cond_noise import ConstantCondNoise, TimeNoise
from cil_lightning.diffusion.loss import DenoisingLoss
from cil_lightning.diffusion.schedules import FlowSchedule
from cil_lightning.models.wan import tiny_wan, to_pipeline
from cil_lightning.sampling import Sampler

from .images import random_image

FRAMES, SIZE, STEPS = 9, 32, 4


def _ladder_scheduler(ladder: torch.Tensor):
    """diffusers' flow Euler, told to run exactly our ladder (shift 1: sigmas used as given)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    class Ladder(FlowMatchEulerDiscreteScheduler):
        def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
            super().set_timesteps(sigmas=ladder[:-1].tolist(), device=device)

    return Ladder(shift=1.0)


@pytest.mark.parametrize("style", ["concat", "replace"])
@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_sampler_reproduces_the_stock_pipeline(style, guidance):
    """Our Sampler (flow Euler from the full start) and ``WanImageToVideoPipeline`` give the same
    latents for the same seed, prompt embeddings and condition: conditioning (mask + latent of
    [image, zeros] on channels, CLIP tokens; or the replaced first frame with per-token timestep
    0), timestep scale, velocity sign, latent normalisation and text-only guidance agree."""
    denoiser = tiny_wan(style=style, seed=0).eval()
    pil, frame = random_image(SIZE)
    cond = denoiser.sampling_condition(frame, FRAMES)
    sampler = Sampler(
        step="flow_euler", num_steps=STEPS, min_guidance=guidance, max_guidance=guidance
    )
    ours = sampler(denoiser, cond, FRAMES, torch.Generator().manual_seed(7)).latents

    x_T = torch.randn(ours.shape, generator=torch.Generator().manual_seed(7))
    ladder = denoiser.schedule.sampling_times(STEPS)
    pipe = to_pipeline(denoiser, scheduler=_ladder_scheduler(ladder))
    # The pipeline refuses image and image_embeds together; its CLIP preprocessing (PIL) is
    # compared separately below, so it gets our tokens here.
    pipe.encode_image = lambda image, device: cond.image_embeds
    theirs = pipe(
        image=pil,
        prompt_embeds=denoiser.prompt_embeds[None],
        negative_prompt_embeds=denoiser.negative_prompt_embeds[None],
        height=SIZE,
        width=SIZE,
        num_frames=FRAMES,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        latents=x_T.transpose(1, 2),
        output_type="latent",
    ).frames
    theirs = theirs.transpose(1, 2)
    assert ours.shape == (1, 3, 16, 4, 4)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    # Not trivially equal: the network moved the sample away from the start.
    assert (ours - x_T).abs().mean() > 0.1


def test_flow_ladder_is_shifted_and_starts_at_t_M():
    """t = shift u / (1 + (shift - 1) u) on a uniform u ladder; from t_M = 0.9 it starts there."""
    denoiser = tiny_wan(schedule=FlowSchedule(shift=3.0), clip=False)
    full = denoiser.schedule.sampling_times(4).double()
    u = torch.linspace(1, 0, 5, dtype=torch.float64)
    torch.testing.assert_close(full, 3 * u / (1 + 2 * u), rtol=1e-6, atol=1e-6)
    assert denoiser.schedule.sampling_times(4, 0.9)[0].item() == pytest.approx(0.9)


def test_concat_condition_noise_touches_only_the_image_latent():
    """TimeNoise on the concat style noises y = latent of [image, zeros] by beta eps (all its
    frames, the same eps stream), leaves the text and CLIP tokens alone; the mask is built in
    forward and never noised."""
    denoiser = tiny_wan(clip=True, cfg_dropout=0.0)
    _, frame = random_image(SIZE)
    cond = denoiser.encode_condition(frame.expand(2, -1, -1, -1), FRAMES)
    beta = 0.7
    noisy = denoiser.training_condition(
        cond, torch.tensor([0.2, 0.9]), ConstantCondNoise(beta), torch.Generator().manual_seed(3)
    )
    eps = torch.randn(cond.video_latent.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(noisy.video_latent, cond.video_latent + beta * eps)
    torch.testing.assert_close(noisy.latent, noisy.video_latent[:, 0])
    torch.testing.assert_close(noisy.noise_level, torch.full((2,), beta))
    assert torch.equal(noisy.text, cond.text) and torch.equal(noisy.image_embeds, cond.image_embeds)


def test_replace_condition_noise_is_the_bounded_flow_point():
    """Token-replace style: the condition becomes (1 - s) c + s eps with s = beta / (1 + beta),
    and its tokens get timestep 1000 s (the model is told the condition's noise level)."""
    denoiser = tiny_wan(style="replace", cfg_dropout=0.0)
    _, frame = random_image(SIZE)
    cond = denoiser.encode_condition(frame, FRAMES)
    beta = 3.0
    noisy = denoiser.training_condition(
        cond, torch.tensor([0.5]), ConstantCondNoise(beta), torch.Generator().manual_seed(4)
    )
    eps = torch.randn(cond.latent.shape, generator=torch.Generator().manual_seed(4))
    s = beta / (1 + beta)
    torch.testing.assert_close(noisy.latent, (1 - s) * cond.latent + s * eps)

    seen = {}

    def grab(module, args, kwargs):
        seen["timestep"] = kwargs["timestep"]

    handle = denoiser.unet.register_forward_pre_hook(grab, with_kwargs=True)
    x = torch.randn(1, 3, 16, 4, 4)
    denoiser(x, torch.tensor([0.6]), noisy)
    handle.remove()
    per_token = seen["timestep"].view(1, 3, 2, 2)  # [B, f, h / 2, w / 2] patches
    torch.testing.assert_close(per_token[:, 0], torch.full((1, 2, 2), 1000 * s))
    torch.testing.assert_close(per_token[:, 1:], torch.full((1, 2, 2, 2), 600.0))


def test_cfg_dropout_swaps_in_the_negative_prompt():
    denoiser = tiny_wan(clip=False, cfg_dropout=0.5)
    _, frame = random_image(SIZE)
    cond = denoiser.encode_condition(frame.expand(64, -1, -1, -1), FRAMES)
    out = denoiser.training_condition(
        cond, torch.rand(64), ConstantCondNoise(0.0), torch.Generator().manual_seed(0)
    )
    is_neg = (out.text == cond.negative_text).flatten(1).all(1)
    is_pos = (out.text == cond.text).flatten(1).all(1)
    assert bool((is_neg ^ is_pos).all())  # each sample is one or the other, never a mix
    assert 16 < int(is_neg.sum()) < 48  # about half of 64


def test_loss_trains_the_transformer_only():
    """One DenoisingLoss step with TimeNoise: the loss is finite, the transformer gets gradients,
    the frozen VAE and CLIP tower none."""
    denoiser = tiny_wan(clip=True).train()
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, FRAMES, 3, SIZE, SIZE, generator=g) * 2 - 1
    x0 = denoiser.encode_video(video, generator=g)
    cond = denoiser.encode_condition(video[:, 0], FRAMES)
    loss = DenoisingLoss(TimeNoise(beta_m=25.0, a=1.0))(denoiser, x0, cond, g).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in denoiser.trainable_parameters())
    frozen = [*denoiser.vae.parameters(), *denoiser.image_encoder.parameters()]
    assert all(p.grad is None for p in frozen)


def test_clip_tokens_preprocess_as_the_image_processor():
    """CLIPImageTokens' torch preprocessing (short side to the input size, centre crop, CLIP
    normalisation) matches transformers' CLIPImageProcessor on a non-square image, up to the
    PIL-vs-torch bicubic difference."""
    from transformers import CLIPImageProcessor

    from cil_lightning.models.wan.pretrained import CLIPImageTokens

    rng = np.random.default_rng(1)
    # A smooth image: resampling differences stay small where there is no aliasing.
    yy, xx = np.mgrid[0:48, 0:80]
    array = np.stack([127 + 100 * np.sin(xx / 9 + c) * np.cos(yy / 7) for c in range(3)], -1)
    array = (array + rng.normal(0, 1, array.shape)).clip(0, 255).astype(np.uint8)
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    expected = proc(images=Image.fromarray(array), return_tensors="pt")["pixel_values"]

    seen = {}

    class Tower(torch.nn.Module):
        config = type("C", (), {"image_size": 32})()

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, pixels, output_hidden_states=True):
            seen["pixels"] = pixels
            return type("O", (), {"hidden_states": [pixels, pixels]})()

    tokens = CLIPImageTokens(Tower(), proc.image_mean, proc.image_std)
    frame = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 127.5 - 1
    tokens(frame)
    assert seen["pixels"].shape == expected.shape == (1, 3, 32, 32)
    assert (seen["pixels"] - expected).abs().mean() < 0.05
    # A squashed (uncropped) resize would differ by far more on this image.
    squashed = torch.nn.functional.interpolate(frame, (32, 32), mode="bicubic", antialias=True)
    squashed = ((squashed + 1) / 2 - tokens.mean) / tokens.std
    assert (squashed - expected).abs().mean() > 0.2


def test_export_loads_in_the_stock_pipeline(tmp_path):
    """A trained adapter's transformer saved as a pipeline folder loads with from_pretrained and
    predicts what the adapter's transformer predicts."""
    from diffusers import WanTransformer3DModel

    denoiser = tiny_wan(clip=False, seed=1)
    with torch.no_grad():
        for p in denoiser.unet.parameters():
            p.add_(0.01)  # a "fine-tune": differs from a fresh init of the same seed
    to_pipeline(denoiser).save_pretrained(tmp_path)
    loaded = WanTransformer3DModel.from_pretrained(tmp_path / "transformer")
    x = torch.randn(1, 36, 3, 4, 4)
    text = denoiser.prompt_embeds[None]
    args = dict(timestep=torch.tensor([500.0]), encoder_hidden_states=text, return_dict=False)
    torch.testing.assert_close(loaded(x, **args)[0], denoiser.unet(x, **args)[0])


def test_wan_tiny_experiment_trains_through_the_configs(tmp_path):
    """``+experiment=wan_tiny_timenoise`` composes into the module ``train`` builds; its loss on a
    fixed batch of the shipped clips falls with a few optimiser steps (TimeNoise on)."""
    from hydra.utils import instantiate

    from ..conftest import compose

    cfg = compose("train", ["+experiment=wan_tiny_timenoise", "data.batch_size=2"], tmp_path)
    assert cfg.data.num_frames == 9 and cfg.sampler.step == "flow_euler"
    module = instantiate(cfg.module)(run_config={})
    assert type(module.denoiser).__name__ == "WanDenoiser"
    assert type(module.loss.cond_noise).__name__ == "TimeNoise"
    batch = next(iter(instantiate(cfg.data).train_dataloader()))

    def fixed_loss():
        with torch.no_grad():
            return module._loss(batch, torch.Generator().manual_seed(7)).mean().item()

    torch.manual_seed(0)
    opt = torch.optim.AdamW(module.denoiser.trainable_parameters(), lr=3e-3)
    before = fixed_loss()
    for step in range(15):
        opt.zero_grad()
        module._loss(batch, torch.Generator().manual_seed(100 + step)).mean().backward()
        opt.step()
    assert fixed_loss() < 0.8 * before


def test_real_wan_experiment_names_the_missing_folder(tmp_path):
    """``+experiment=wan_timenoise`` with a folder that is not a Wan folder fails naming the key
    and the layout expected, before any weights load."""
    from hydra.utils import instantiate

    from ..conftest import compose

    overrides = [
        "+experiment=wan_timenoise",
        f"model.pretrained_path={tmp_path / 'nowhere'}",
        f"model.prompt_embeds={tmp_path / 'prompt.safetensors'}",
    ]
    cfg = compose("train", overrides, tmp_path)
    assert (cfg.data.num_frames - 1) % 4 == 0 and cfg.sampler.M == 0.9
    from hydra.errors import InstantiationException

    # Hydra wraps the adapter's FileNotFoundError, keeping its message.
    with pytest.raises(InstantiationException, match="model.pretrained_path=.*Wan-AI/Wan2.1-I2V"):
        instantiate(cfg.model)
