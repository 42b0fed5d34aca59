"""The SVD adapter with the real diffusers / transformers classes at tiny random sizes."""

import math

import pytest
import torch

from cil_lightning.diffusion.analytic_init import LatentStats
from cil_lightning.diffusion.cond_noise import ConstantCondNoise, TimeNoise
from cil_lightning.diffusion.loss import DenoisingLoss
from cil_lightning.diffusion.rng import randn
from cil_lightning.models.svd import check_svd_folder, load_svd, to_pipeline
from cil_lightning.models.tiny import tiny_svd
from cil_lightning.sampling import Sampler


@pytest.fixture(scope="module")
def svd_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("svd") / "tiny-svd"
    to_pipeline(tiny_svd(seed=1)).save_pretrained(path)
    return path


def _pipeline_kwargs(F, steps, strength):
    return dict(
        height=32,
        width=32,
        num_frames=F,
        num_inference_steps=steps,
        fps=7,
        motion_bucket_id=20,
        noise_aug_strength=strength,
        min_guidance_scale=1.0,
        max_guidance_scale=3.0,
        decode_chunk_size=F,
        output_type="latent",
    )


@pytest.mark.parametrize("strength", [0.0, 0.1])
def test_our_euler_sampler_matches_the_stock_pipeline(svd_folder, strength):
    """M = T, plain start, SVD's settings: pins preconditioning, ladder, CFG ramp, init noise and
    the inference noise augmentation (pixel noise before the VAE, fed as added_time_ids[2])."""
    from diffusers import StableVideoDiffusionPipeline

    den = load_svd(str(svd_folder), cfg_dropout=0.0, noise_aug_strength=strength).eval()
    pipe = StableVideoDiffusionPipeline.from_pretrained(svd_folder, local_files_only=True)
    image01 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    F, steps = 4, 6
    kwargs = _pipeline_kwargs(F, steps, strength)
    theirs = pipe(image01, generator=torch.Generator().manual_seed(42), **kwargs).frames

    g = torch.Generator().manual_seed(42)
    cond = den.sampling_condition(
        image01 * 2 - 1, fps=torch.tensor([7.0]), motion_bucket_id=torch.tensor([20.0]), generator=g
    )
    torch.testing.assert_close(cond.noise_level, torch.tensor([strength]))
    sampler = Sampler(step="euler", num_steps=steps, M=None, min_guidance=1.0, max_guidance=3.0)
    ours = sampler(den, cond, F, g).latents
    assert ours.shape == theirs.shape == (1, F, 4, 16, 16)
    torch.testing.assert_close(ours, theirs, rtol=2e-4, atol=2e-4)


def test_analytic_init_from_sigma_100_matches_the_closed_form_and_the_pipeline(svd_folder):
    """The reference's start sigma_max = M = 100 with Analytic-Init: x_M is
    E[x0] + sqrt(100^2 + tr(Cov)/d) eps (METHOD.md section 4, EDM), and sampling on from x_M equals
    the stock pipeline whose Karras ladder starts at 100, given that x_M as its latents."""
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline

    strength, F, steps, M = 0.02, 4, 5, 100.0
    den = load_svd(str(svd_folder), cfg_dropout=0.0, noise_aug_strength=strength).eval()
    pipe = StableVideoDiffusionPipeline.from_pretrained(svd_folder, local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, sigma_max=M)
    image01 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    # Statistics far from N(0, I), so a dropped mean or variance shows.
    gs = torch.Generator().manual_seed(7)
    stats = LatentStats().update(3.0 + 2.0 * torch.randn(64, F, 4, 16, 16, generator=gs))
    mean, tr_cov_d = stats.mean.float(), stats.tr_cov_d
    assert 3.5 < tr_cov_d < 4.5

    g = torch.Generator().manual_seed(42)
    cond = den.sampling_condition(
        image01 * 2 - 1, fps=torch.tensor([7.0]), motion_bucket_id=torch.tensor([20.0]), generator=g
    )
    sampler = Sampler(step="euler", num_steps=steps, M=M, stats=stats, max_guidance=3.0)
    out = sampler(den, cond, F, g, return_intermediates=True)
    # The closed form, from an independent replay of the generator: condition noise, then eps.
    replay = torch.Generator().manual_seed(42)
    randn((1, 3, 32, 32), replay)
    eps = randn((1, F, 4, 16, 16), replay)
    x_M = mean + math.sqrt(M**2 + tr_cov_d) * eps
    torch.testing.assert_close(out.trajectory[0], x_M, rtol=1e-5, atol=1e-4)

    # The pipeline scales given latents by init_noise_sigma, which follows the ladder once set.
    pipe.scheduler.set_timesteps(steps)
    init_sigma = float(pipe.scheduler.init_noise_sigma)
    assert init_sigma == pytest.approx(math.sqrt(M**2 + 1))
    theirs = pipe(
        image01,
        generator=torch.Generator().manual_seed(42),
        latents=x_M / init_sigma,
        **_pipeline_kwargs(F, steps, strength),
    ).frames
    torch.testing.assert_close(out.latents, theirs, rtol=2e-4, atol=2e-4)


def test_beta_reaches_added_time_ids_and_encoders_get_no_gradient():
    den = tiny_svd(cfg_dropout=0.0)
    seen = {}
    den.unet.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.update(ids=kwargs["added_time_ids"].clone()),
        with_kwargs=True,
    )
    video = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    x0 = den.encode_video(video)
    cond = den.encode_condition(video[:, 0], fps=torch.tensor([8.0, 6.0]))
    loss = DenoisingLoss(ConstantCondNoise(0.37))(den, x0, cond).mean()
    loss.backward()
    torch.testing.assert_close(seen["ids"][:, 2], torch.full((2,), 0.37))
    torch.testing.assert_close(seen["ids"][:, 0], torch.tensor([7.0, 5.0]))
    assert all(p.grad is None for p in den.vae.parameters())
    assert all(p.grad is None for p in den.image_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in den.unet.parameters())
    trainable = {id(p) for p in den.trainable_parameters()}
    assert trainable == {id(p) for p in den.unet.parameters()}


def test_timenoise_noises_the_unscaled_condition_latent_not_the_clean_copy():
    den = tiny_svd(cfg_dropout=0.0)
    cond = den.encode_condition(torch.rand(2, 3, 32, 32) * 2 - 1)
    clean = cond.latent.clone()
    t_norm = torch.tensor([0.0, 1.0])
    noisy = den.training_condition(
        cond, t_norm, TimeNoise(beta_m=15, a=5), torch.Generator().manual_seed(0)
    )
    assert torch.equal(cond.latent, clean)
    resid = (noisy.latent - clean).flatten(1).std(1)
    torch.testing.assert_close(resid, noisy.noise_level, rtol=0.15, atol=0)
    torch.testing.assert_close(noisy.embed, cond.embed)  # the reference leaves CLIP clean


def test_pixel_space_noise_goes_through_the_vae():
    den = tiny_svd(cfg_dropout=0.0, noise_space="pixel")
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    cond = den.encode_condition(image)
    out = den.training_condition(
        cond, torch.rand(2), ConstantCondNoise(0.5), torch.Generator().manual_seed(0)
    )
    g = torch.Generator().manual_seed(0)
    expected = den.encode_condition(image + 0.5 * randn(image.shape, g)).latent
    torch.testing.assert_close(out.latent, expected)


def test_latent_cache_reuses_the_posterior():
    den = tiny_svd(cache_latents=True)
    video = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    calls = []
    den.vae.encoder.register_forward_hook(lambda *a: calls.append(1))
    torch.manual_seed(0)
    a = den.encode_video(video, names=["x", "y"])
    n = len(calls)
    torch.manual_seed(0)
    b = den.encode_video(video * 0, names=["x", "y"])  # cached by name: frames are not re-read
    assert len(calls) == n and torch.equal(a, b)


def test_missing_weights_name_the_file_and_the_layout(tmp_path, svd_folder):
    with pytest.raises(FileNotFoundError, match="model.pretrained_path"):
        check_svd_folder(tmp_path / "nope")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(svd_folder, broken)
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_svd(str(broken))
    msg = str(err.value)
    assert "vae/diffusion_pytorch_model.safetensors" in msg and "image_encoder/" in msg


def test_tiny_svd_loss_falls_on_a_fixed_batch():
    den = tiny_svd(cfg_dropout=0.0)
    video = torch.rand(2, 4, 3, 32, 32) * 2 - 1
    torch.manual_seed(0)
    x0 = den.encode_video(video)
    cond = den.encode_condition(video[:, 0])
    tn = TimeNoise(beta_m=15, a=5)

    def fixed():
        with torch.no_grad():
            g = torch.Generator().manual_seed(3)
            return DenoisingLoss(tn)(den, x0, cond, generator=g).mean().item()

    before = fixed()
    # 20 steps at 3e-3 reach 0.75-0.77 of the start over seeds (60 at 1e-3 took 3x the time)
    opt = torch.optim.AdamW(den.trainable_parameters(), lr=3e-3)
    for _ in range(20):
        opt.zero_grad()
        DenoisingLoss(tn)(den, x0, cond).mean().backward()
        opt.step()
    assert fixed() < 0.85 * before


def test_the_temporal_vae_decodes_the_whole_clip_by_default():
    """Chunks of frames are decoded independently by the temporal decoder: a seam that flow-based
    metrics read as motion. The default decodes each clip in one call."""
    den = tiny_svd().eval()
    latents = torch.randn(2, 4, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = [
            den.vae.decode(z / den.scaling_factor, num_frames=4).sample.clamp(-1, 1)
            for z in latents
        ]
        chunked = tiny_svd(decode_chunk_size=2).eval().decode_video(latents)
    torch.testing.assert_close(den.decode_video(latents), torch.stack(whole))
    assert not torch.allclose(chunked, torch.stack(whole), atol=1e-3)
