"""The SVD adapter with the real diffusers / transformers classes at tiny random sizes."""

import pytest
import torch

from cil_lightning.diffusion.cond_noise import ConstantCondNoise, TimeNoise
from cil_lightning.diffusion.loss import denoising_loss
from cil_lightning.diffusion.rng import randn
from cil_lightning.generate import generate
from cil_lightning.models.svd import check_svd_folder, load_svd, to_pipeline
from cil_lightning.models.tiny import tiny_svd


@pytest.fixture(scope="module")
def svd_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("svd") / "tiny-svd"
    to_pipeline(tiny_svd(seed=1)).save_pretrained(path)
    return path


def test_our_euler_sampler_matches_the_stock_pipeline(svd_folder):
    """M = T, plain start, SVD's settings: pins preconditioning, ladder, CFG ramp and init noise."""
    from diffusers import StableVideoDiffusionPipeline

    den = load_svd(str(svd_folder), cfg_dropout=0.0).eval()
    pipe = StableVideoDiffusionPipeline.from_pretrained(svd_folder, local_files_only=True)
    image01 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    F, steps = 4, 6
    kwargs = dict(
        height=32,
        width=32,
        num_frames=F,
        num_inference_steps=steps,
        fps=7,
        motion_bucket_id=20,
        noise_aug_strength=0.0,
        min_guidance_scale=1.0,
        max_guidance_scale=3.0,
        decode_chunk_size=F,
        output_type="latent",
    )
    theirs = pipe(image01, generator=torch.Generator().manual_seed(42), **kwargs).frames

    g = torch.Generator().manual_seed(42)
    randn((1, 3, 32, 32), g)  # the pipeline's noise-augmentation draw comes first
    cond = den.encode_condition(
        image01 * 2 - 1, fps=torch.tensor([7.0]), motion_bucket_id=torch.tensor([20.0])
    )
    ours = generate(
        den,
        cond,
        num_frames=F,
        sampler="euler",
        num_steps=steps,
        M=None,
        min_guidance=1.0,
        max_guidance=3.0,
        generator=g,
    ).sample
    assert ours.shape == theirs.shape == (1, F, 4, 16, 16)
    torch.testing.assert_close(ours, theirs, rtol=2e-4, atol=2e-4)


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
    loss = denoising_loss(den, den.schedule, x0, cond, ConstantCondNoise(0.37)).mean()
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
            return denoising_loss(den, den.schedule, x0, cond, tn, generator=g).mean().item()

    before = fixed()
    opt = torch.optim.AdamW(den.trainable_parameters(), lr=1e-3)
    for _ in range(60):
        opt.zero_grad()
        denoising_loss(den, den.schedule, x0, cond, tn).mean().backward()
        opt.step()
    assert fixed() < 0.75 * before
