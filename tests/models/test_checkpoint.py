"""Sampling defaults to the SVD conditioning a checkpoint was trained with (fps, motion bucket)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cil_lightning.lit_module import I2VLitModule
from cil_lightning.models.checkpoint import CONDITIONING_KEY, load_denoiser

from ..conftest import compose


@pytest.fixture
def module(tmp_path):
    # model=tiny defaults to fps 8 and motion bucket 127; the batches below feed other fps.
    cfg = compose("train", ["data.num_frames=3", "data.height=16", "data.width=16"], tmp_path)
    return cfg, I2VLitModule(
        denoiser=instantiate(cfg.model),
        cond_noise=instantiate(cfg.cond_noise),
        optimizer=instantiate(cfg.optimizer),
        run_config={"model": OmegaConf.to_container(cfg.model, resolve=True)},
    )


def _batch(fps: list[float]) -> dict:
    g = torch.Generator().manual_seed(0)
    video = torch.rand(len(fps), 3, 3, 16, 16, generator=g) * 2 - 1
    return {"video": video, "cond_frame": video[:, 0], "fps": torch.tensor(fps)}


def test_checkpoint_records_the_fed_conditioning_and_load_restores_it(module, tmp_path):
    cfg, lit = module
    lit.train()
    with torch.no_grad():
        lit._loss(_batch([3.0, 3.0]), torch.Generator().manual_seed(1))
        lit._loss(_batch([6.0]), torch.Generator().manual_seed(2))
        lit.eval()
        lit._loss(_batch([30.0]), torch.Generator().manual_seed(3))  # validation: not training
    ckpt = {"state_dict": {f"denoiser.{k}": v for k, v in lit.denoiser.state_dict().items()}}
    lit.on_save_checkpoint(ckpt)
    assert ckpt[CONDITIONING_KEY]["mean"] == pytest.approx({"fps": 4.0, "motion_bucket_id": 127.0})

    resumed = I2VLitModule(
        denoiser=instantiate(cfg.model),
        cond_noise=instantiate(cfg.cond_noise),
        optimizer=instantiate(cfg.optimizer),
    )
    resumed.on_load_checkpoint(ckpt)  # a resumed run keeps counting from the saved sums
    assert resumed.training_conditioning() == pytest.approx(lit.training_conditioning())

    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    denoiser, _ = load_denoiser(path)
    assert (denoiser.fps, denoiser.motion_bucket_id) == pytest.approx((4.0, 127.0))
    # The sampling condition carries them: fps - 1 and the bucket reach the UNet's time ids.
    cond = denoiser.sampling_condition(torch.zeros(1, 3, 16, 16))
    assert float(cond.fps) == pytest.approx(4.0)


def test_sampling_condition_adds_the_inference_noise_before_the_encoder(module):
    _, lit = module
    den = lit.denoiser.eval()
    frame = torch.rand(2, 3, 16, 16) * 2 - 1
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    cond = den.sampling_condition(frame, generator=gens)
    # Pixel space (no VAE): the condition latent is the frame plus strength * eps, per seed.
    eps = torch.stack(
        [torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (5, 6)]
    )
    torch.testing.assert_close(cond.latent, frame + den.noise_aug_strength * eps)
    torch.testing.assert_close(cond.noise_level, torch.full((2,), den.noise_aug_strength))
    assert den.noise_aug_strength == 0.02
    clean = den.encode_condition(frame)
    assert torch.equal(clean.latent, frame) and torch.equal(clean.noise_level, torch.zeros(2))
