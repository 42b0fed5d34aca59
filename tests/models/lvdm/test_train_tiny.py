"""`+experiment=dynamicrafter_tiny_timenoise` trains through the configs; `sample` runs on it."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cil_lightning.models.lvdm.official import official_state_from_network

from ...conftest import run_ok as cli


def train_tiny(experiment: str, run) -> None:
    """Two CLI training steps of a tiny lvdm experiment into ``run`` (checkpoint at step 2)."""
    cli(
        "train",
        f"+experiment={experiment}",
        f"hydra.run.dir={run}",
        "logger=csv",
        "trainer.max_steps=2",
        "data.num_frames=4",
        "sampler.num_steps=2",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "~callbacks.validation_metrics",
    )


@pytest.mark.slow  # about 2 minutes on the shared CPU
def test_tiny_dynamicrafter_trains_and_samples_through_the_configs(tmp_path):
    run = tmp_path / "run"
    train_tiny("dynamicrafter_tiny_timenoise", run)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["cil_lightning_config"]["model"]["_target_"].endswith("tiny_dynamicrafter")
    state = ckpt["state_dict"]
    # the trained network sits in the official layout's two children
    assert "denoiser.unet.diffusion_model.init_attn.0.proj_in.weight" in state
    assert "denoiser.unet.image_proj_model.latents" in state

    from cil_lightning.models.checkpoint import load_denoiser

    denoiser, _ = load_denoiser(run / "checkpoints" / "last.ckpt")
    exported = official_state_from_network(denoiser.unet)
    assert "model.diffusion_model.out.2.weight" in exported

    Image.new("RGB", (40, 40), (10, 90, 220)).save(tmp_path / "blue.png")
    cli(
        "sample",
        f"images={tmp_path / 'blue.png'}",
        f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
        "sampler=ddim",
        "sampler.num_steps=2",
        f"hydra.run.dir={tmp_path / 'sample'}",
    )
    assert (tmp_path / "sample" / "blue_seed0.mp4").exists()
