import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import Dataset

from cil_lightning.callbacks.metrics import ValidationMetrics
from cil_lightning.data.datamodule import VideoDataModule
from cil_lightning.lit_module import I2VLitModule
from cil_lightning.metrics import (
    CLIPImageAlignment,
    CLIPTemporalConsistency,
    FarnebackFlow,
    FrechetVideoDistance,
    MotionScore,
    MotionScoreError,
)

from ..conftest import compose
from .helpers import MeanPoolFeatures, pan, photo, tiny_clip_encoder


class Pans(Dataset):
    """Real-photograph pans [4, 3, size, size] at known speeds: item i moves i px per frame."""

    def __init__(self, n: int = 4, size: int = 16, scale: float = 0.25) -> None:
        image = torch.nn.functional.interpolate(photo("chelsea")[None], scale_factor=scale)[0]
        self.items = [pan(image, dx, 0, frames=4, size=size) for dx in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        video = self.items[i]
        return {
            "video": video,
            "cond_frame": video[0].clone(),
            "fps": torch.tensor(8.0),
            "name": f"pan{i}",
        }


def test_validation_metrics_callback_samples_scores_and_logs(tmp_path):
    cfg = compose("train", ["data.num_frames=4", "data.height=16", "data.width=16"], tmp_path)
    torch.manual_seed(0)
    module = I2VLitModule(
        denoiser=instantiate(cfg.model),
        cond_noise=instantiate(cfg.cond_noise),
        optimizer=instantiate(cfg.optimizer),
    )
    dm = VideoDataModule(Pans(), Pans(), num_frames=4, height=16, width=16, batch_size=2)
    clip = tiny_clip_encoder()
    flow = FarnebackFlow()
    callback = ValidationMetrics(
        dirpath=str(tmp_path / "videos"),
        sampler={"name": "euler", "num_steps": 2},
        metrics={
            "fvd": FrechetVideoDistance(MeanPoolFeatures(4)),
            "motion_score": MotionScore(flow),
            "ms_error": MotionScoreError(flow),
            "clip_alignment": CLIPImageAlignment(clip),
            "temporal_consistency": CLIPTemporalConsistency(clip),
        },
        settings=[{"M": None, "analytic_init": False}, {"M": 10.0, "analytic_init": True}],
        num_conditions=3,
        seeds=(0, 1),
    )
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(tmp_path, name="csv"),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    values = callback.last
    for name in ("fvd", "motion_score", "ms_error", "clip_alignment", "temporal_consistency"):
        assert math.isfinite(values[f"val/{name}"])
        assert values[f"val/{name}"] == values[f"val/{name}/full"]
        assert math.isfinite(values[f"val/{name}/M10_ai"])
    assert len(list((tmp_path / "videos" / "step000001" / "M10_ai").glob("*.mp4"))) == 6
    assert callback._stats is not None and callback._stats.count == 4  # estimated from 4 clips
    # Same seeds, same weights: a second run gives the same numbers.
    again = callback.run(trainer, module)
    assert again == values
    logged = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text()
    assert "val/fvd" in logged and "val/ms_error/M10_ai" in logged


def test_ms_error_scores_the_generated_videos_against_the_real_clips(tmp_path):
    """Known pans: the clips move 0, 1, 2, 3 px per frame; a stand-in generator whose every video
    pans 2 px per frame vertically. ms_error must be mean |2 - k| = 1 over the clips; scored
    against the generated videos themselves (a mix-up of arguments) it would be 0."""
    cfg = compose("train", ["data.num_frames=4", "data.height=32", "data.width=32"], tmp_path)
    denoiser = instantiate(cfg.model)
    image = torch.nn.functional.interpolate(photo("chelsea")[None], scale_factor=0.5)[0]
    moving = pan(image, 0, 2, frames=4, size=32)

    def predicts_the_pan(x, sigma, cond):  # x0 prediction: the pan, whatever the input
        return moving.expand(x.shape[0], -1, -1, -1, -1).to(x.dtype)

    denoiser.forward = predicts_the_pan  # the Euler ladder's last step returns it exactly
    flow = FarnebackFlow()
    ms, ms_error = MotionScore(flow), MotionScoreError(flow)
    callback = ValidationMetrics(
        dirpath=str(tmp_path / "videos"),
        sampler={"name": "euler", "num_steps": 2},
        metrics={"motion_score": ms, "ms_error": ms_error},
        num_conditions=4,
        save_videos=False,
        log_videos=False,
    )
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(val_set=Pans(4, size=32, scale=0.5)),
        world_size=1,
        global_rank=0,
        is_global_zero=True,
        loggers=[],
        global_step=0,
    )
    values = callback.run(trainer, SimpleNamespace(denoiser=denoiser, device=torch.device("cpu")))
    generated, reference, _ = ms_error.per_video().T
    torch.testing.assert_close(reference, torch.arange(4.0).double(), atol=0.1, rtol=0.0)
    torch.testing.assert_close(generated, torch.full((4,), 2.0).double(), atol=0.1, rtol=0.0)
    assert values["val/ms_error"] == pytest.approx(1.0, abs=0.1)
    assert values["val/motion_score"] == pytest.approx(2.0, abs=0.1)  # of the generated videos
