"""The I2VGen-XL adapter against diffusers' own ``I2VGenXLPipeline`` (tiny random configurations
of the real classes, as diffusers' I2VGen-XL tests build them): the framework's VP path (DDIM from
M, VP Analytic-Init, TimeNoise at t / T) checked against a stock pipeline."""

from __future__ import annotations

import pytest
import torch

from cil_lightning.diffusion.analytic_init import LatentStats
from cil_lightning.diffusion.cond_noise import ConstantCondNoise, TimeNoise
from cil_lightning.diffusion.loss import DenoisingLoss
from cil_lightning.diffusion.schedules import VPSchedule
from cil_lightning.models.i2vgen_xl import tiny_i2vgenxl, to_pipeline, vp_schedule_from_config
from cil_lightning.sampling import Sampler

from .images import random_image

FRAMES, SIZE, STEPS = 4, 32, 4


# each prediction type and each guidance path once (the four pairs cost twice the time and
# exercise no other line): v with the pipeline's guidance 9 (the released model), eps unguided
@pytest.mark.parametrize("prediction, guidance", [("v", 9.0), ("eps", 1.0)])
def test_ddim_reproduces_the_stock_pipeline(prediction, guidance, monkeypatch):
    """Our Sampler (DDIM, eta 0, trailing ladder from the full start) and ``I2VGenXLPipeline``
    give the same latents for the same x_T, embeddings and image: the image latents with their
    frame-position masks, fps, prediction type and the pipeline's guidance (negative prompt and
    zero image embedding) agree."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    schedule = VPSchedule(rescale_zero_terminal_snr=prediction == "v", prediction=prediction)
    denoiser = tiny_i2vgenxl(schedule=schedule, seed=0).eval()
    pil, frame = random_image(SIZE)
    cond = denoiser.sampling_condition(frame, fps=torch.tensor([8.0]), num_frames=FRAMES)
    sampler = Sampler(step="ddim", num_steps=STEPS, min_guidance=guidance, max_guidance=guidance)
    ours = sampler(denoiser, cond, FRAMES, torch.Generator().manual_seed(3)).latents

    x_T = torch.randn(ours.shape, generator=torch.Generator().manual_seed(3))
    pipe = to_pipeline(denoiser)
    embeds = cond.embed
    if guidance > 1:
        embeds = torch.cat([torch.zeros_like(embeds), embeds])
    # The pipeline's CLIP preprocessing goes through PIL (compared for SVD's embedder already);
    # its condition latent is a posterior sample from the global RNG, ours the mode.
    monkeypatch.setattr(pipe, "_encode_image", lambda image, device, n: embeds)
    monkeypatch.setattr(
        DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode()
    )
    theirs = pipe(
        image=pil,
        prompt_embeds=denoiser.prompt_embeds[None],
        negative_prompt_embeds=denoiser.negative_prompt_embeds[None],
        height=SIZE,
        width=SIZE,
        target_fps=8,
        num_frames=FRAMES,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        eta=0.0,
        latents=x_T.transpose(1, 2),
        output_type="latent",
    ).frames
    torch.testing.assert_close(ours, theirs.transpose(1, 2), rtol=1e-4, atol=1e-4)
    assert (ours - x_T).abs().mean() > 0.1


def test_analytic_init_start_from_M_is_the_closed_form():
    """From M = 940 with statistics, the sampler's first sample is alpha_M E[x0] +
    sqrt(sigma_M^2 + alpha_M^2 tr(Cov)/d) eps, with (alpha, sigma) at step M - 1."""
    denoiser = tiny_i2vgenxl(seed=0).eval()
    _, frame = random_image(SIZE)
    cond = denoiser.encode_condition(frame, num_frames=FRAMES)
    shape = (FRAMES, 4, SIZE, SIZE)
    data = torch.randn((20, *shape), generator=torch.Generator().manual_seed(1)) * 0.5 + 0.2
    stats = LatentStats().update(data)
    out = Sampler(step="ddim", num_steps=2, M=940, stats=stats)(
        denoiser, cond, FRAMES, torch.Generator().manual_seed(5), return_intermediates=True
    )
    alpha, sigma = (float(v) for v in denoiser.schedule.alpha_sigma(torch.tensor(939.0)))
    eps = torch.randn((1, *shape), generator=torch.Generator().manual_seed(5))
    expected = alpha * stats.mean + (sigma**2 + alpha**2 * stats.tr_cov_d) ** 0.5 * eps
    torch.testing.assert_close(out.trajectory[0], expected.float(), rtol=1e-5, atol=1e-5)
    assert 0.01 < alpha < 0.3  # a real earlier start on this schedule, not the pure-noise end


def test_condition_noise_on_the_first_frame_latent_only():
    """TimeNoise noises the first-frame latent by beta eps; the frame-position masks the UNet
    sees are unchanged, and the image embedding too unless ``noise_embed``."""
    denoiser = tiny_i2vgenxl(cfg_dropout=0.0)
    _, frame = random_image(SIZE)
    cond = denoiser.encode_condition(frame.expand(2, -1, -1, -1), num_frames=FRAMES)
    noisy = denoiser.training_condition(
        cond, torch.tensor([0.1, 0.8]), ConstantCondNoise(0.5), torch.Generator().manual_seed(2)
    )
    eps = torch.randn(cond.latent.shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(noisy.latent, cond.latent + 0.5 * eps)
    assert torch.equal(noisy.embed, cond.embed)
    before, after = denoiser.image_latents(cond, 5), denoiser.image_latents(noisy, 5)
    torch.testing.assert_close(after[:, :, 1:], before[:, :, 1:])
    expected = torch.tensor([0.25, 0.5, 0.75, 1.0])
    torch.testing.assert_close(before[0, 0, 1:, 0, 0], expected)


def test_schedule_from_the_weights_config():
    s = vp_schedule_from_config(
        {
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "prediction_type": "v_prediction",
            "rescale_betas_zero_snr": True,
        }
    )
    assert s.prediction == "v" and float(s.alpha_sigma(torch.tensor(999.0))[0]) == 0.0
    with pytest.raises(ValueError, match="beta_schedule='squaredcos_cap_v2'"):
        vp_schedule_from_config({"beta_schedule": "squaredcos_cap_v2"})
    with pytest.raises(ValueError, match="prediction_type='sample'"):
        vp_schedule_from_config({"prediction_type": "sample"})


def test_loss_trains_the_unet_only():
    denoiser = tiny_i2vgenxl().train()
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, FRAMES, 3, SIZE, SIZE, generator=g) * 2 - 1
    x0 = denoiser.encode_video(video, generator=g)
    cond = denoiser.encode_condition(video[:, 0], num_frames=FRAMES)
    loss = DenoisingLoss(TimeNoise(beta_m=100.0, a=5.0))(denoiser, x0, cond, g).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in denoiser.trainable_parameters())
    assert all(
        p.grad is None for p in [*denoiser.vae.parameters(), *denoiser.image_encoder.parameters()]
    )


def test_export_loads_in_the_stock_pipeline(tmp_path):
    from diffusers import I2VGenXLPipeline

    denoiser = tiny_i2vgenxl(seed=1)
    with torch.no_grad():
        for p in denoiser.unet.parameters():
            p.add_(0.01)
    to_pipeline(denoiser).save_pretrained(tmp_path)
    loaded = I2VGenXLPipeline.from_pretrained(tmp_path, text_encoder=None, tokenizer=None)
    for (name, a), (_, b) in zip(
        denoiser.unet.state_dict().items(), loaded.unet.state_dict().items()
    ):
        assert torch.equal(a, b), name
    assert loaded.scheduler.config.timestep_spacing == "trailing"
