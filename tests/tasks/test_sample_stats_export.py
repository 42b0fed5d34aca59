"""The sample, stats and export tasks end to end, through the CLI, on the tiny real-class SVD."""

import json

import pytest
import torch

from cil_lightning.data.video_io import read_video
from cil_lightning.diffusion.analytic_init import LatentStats

from ..conftest import run_task
from ..conftest import task_ok as cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A few steps of svd_tiny_timenoise (with EMA), at 4 frames of 32x32."""
    run = tmp_path_factory.mktemp("train") / "run"
    cli(
        "train",
        "+experiment=svd_tiny_timenoise",
        f"hydra.run.dir={run}",
        "logger=csv",
        "trainer.max_steps=3",
        "data.num_frames=4",
        "sampler.num_steps=2",
        "callbacks.model_checkpoint.every_n_train_steps=3",
    )
    return run


def test_checkpoint_carries_config_and_ema(trained):
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["cil_lightning_config"]["model"]["_target_"].endswith("tiny_svd")
    ema = [k for k in ckpt["state_dict"] if k.startswith("ema.module.")]
    assert ema and int(ckpt["state_dict"]["ema.n_averaged"]) == 3
    # EMA with decay 0.99 after 3 updates differs from the raw weights.
    key = ema[0].removeprefix("ema.module.")
    assert not torch.equal(ckpt["state_dict"][ema[0]], ckpt["state_dict"]["denoiser.unet." + key])


def test_stats_file_is_accepted_by_sample(trained, tmp_path):
    stats_path = tmp_path / "stats.safetensors"
    cli(
        "stats",
        "model=svd_tiny",
        "data.num_frames=4",
        "max_batches=3",
        f"out={stats_path}",
        f"hydra.run.dir={tmp_path / 'stats'}",
    )
    stats = LatentStats.load(stats_path)
    assert stats.count == 12 and tuple(stats.shape) == (4, 4, 16, 16)
    assert stats.metadata["layout"] == "FCHW"

    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (48, 40), (200, 30, 60)).save(images / "red.png")
    Image.new("RGB", (40, 40), (10, 90, 220)).save(images / "blue.jpg")
    out = tmp_path / "sample"
    cli(
        "sample",
        f"images={images}",
        f"ckpt={trained / 'checkpoints' / 'last.ckpt'}",
        f"sampler.stats={stats_path}",
        "sampler.M=100",
        "sampler.num_steps=2",
        "seeds=[0,3]",
        f"hydra.run.dir={out}",
    )
    record = json.loads((out / "record.json").read_text())
    assert record["analytic_init"]["count"] == 12 and record["sampler"]["M"] == 100
    assert len(record["outputs"]) == 4 and record["num_frames"] == 4
    video = read_video(out / "blue_seed3.mp4")
    assert video.shape == (4, 3, 32, 32)
    assert (out / "red_seed0.gif").is_file()


def test_sample_rejects_stats_of_another_shape(trained, tmp_path):
    stats_path = tmp_path / "wrong.safetensors"
    LatentStats().update(torch.randn(3, 5, 4, 16, 16)).save(stats_path)
    Image = pytest.importorskip("PIL.Image")
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    out = run_task(
        "sample",
        f"images={tmp_path / 'a.png'}",
        f"ckpt={trained / 'checkpoints' / 'last.ckpt'}",
        f"sampler.stats={stats_path}",
        "sampler.num_steps=1",
        f"hydra.run.dir={tmp_path / 'o'}",
    )
    assert out.returncode != 0
    assert (
        "sampler.stats" in out.stderr + out.stdout and "(5, 4, 16, 16)" in out.stderr + out.stdout
    )


def test_exported_unet_loads_in_the_stock_pipeline(trained, tmp_path):
    from diffusers import StableVideoDiffusionPipeline

    out = tmp_path / "export"
    cli(
        "export",
        f"ckpt={trained / 'checkpoints' / 'last.ckpt'}",
        f"out={out}",
        f"hydra.run.dir={tmp_path / 'e'}",
    )
    pipe = StableVideoDiffusionPipeline.from_pretrained(out, local_files_only=True)
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = ckpt["state_dict"]
    ema = {
        k.removeprefix("ema.module."): v for k, v in state.items() if k.startswith("ema.module.")
    }
    exported = pipe.unet.state_dict()
    # The whole EMA UNet, bit for bit: every state-dict entry (parameters and any buffers), and
    # nothing the EMA does not hold.
    assert sorted(exported) == sorted(ema)
    different = [k for k in ema if not torch.equal(exported[k], ema[k])]
    assert not different, f"{len(different)} of {len(ema)} entries differ, e.g. {different[:3]}"
    raw = [k for k in ema if not torch.equal(exported[k], state["denoiser.unet." + k])]
    assert len(raw) > len(ema) // 2  # not the raw weights (EMA 0.99 over 3 steps differs)
    frames = pipe(
        torch.rand(1, 3, 32, 32),
        height=32,
        width=32,
        num_frames=4,
        num_inference_steps=2,
        decode_chunk_size=4,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).frames
    assert frames.shape == (1, 4, 3, 32, 32)
    assert torch.isfinite(frames).all()
