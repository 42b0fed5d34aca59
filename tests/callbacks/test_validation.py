import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import Dataset

from cil_lightning.callbacks.validation import ValidationSampling
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
from cil_lightning.sampling import Sampler

from ..conftest import compose
from ..metrics.helpers import MeanPoolFeatures, pan, photo, tiny_clip_encoder


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


def test_validation_callback_samples_saves_scores_and_logs(tmp_path):
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
    callback = ValidationSampling(
        dirpath=str(tmp_path / "videos"),
        sampler=Sampler(num_steps=2),
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
    # The first setting's videos in step<N>/ with the conditions and real clips, the others in
    # step<N>/<tag>/: 3 conditions x 2 seeds each.
    step = tmp_path / "videos" / "step000001"
    assert len(list((step / "M10_ai").glob("*.mp4"))) == 6
    assert len(list((step / "M10_ai").glob("*_seed*.gif"))) == 6
    assert sorted(p.name for p in step.glob("*_seed*.mp4")) == [
        f"pan{i}_seed{s}.mp4" for i in range(3) for s in (0, 1)
    ]
    assert len(list(step.glob("*_seed*.gif"))) == 6
    assert sorted(p.name for p in step.glob("*_cond.png")) == [f"pan{i}_cond.png" for i in range(3)]
    assert len(list(step.glob("*_real.gif"))) == 3
    assert callback.written == sorted(step.glob("*_seed*.mp4"))
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
    callback = ValidationSampling(
        dirpath=str(tmp_path / "videos"),
        sampler=Sampler(num_steps=2),
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


class Recording:
    """A stand-in metric that keeps every batch of videos it is given; its value is the number of
    updates since the last reset."""

    def __init__(self) -> None:
        self.videos: list[torch.Tensor] = []
        self.updates = 0

    def to(self, device):
        return self

    def reset(self) -> None:
        self.updates = 0

    def update_videos(self, fake, real, cond_frame) -> None:
        self.videos.append(fake.detach().clone())
        self.updates += 1

    def compute(self) -> torch.Tensor:
        return torch.tensor(float(self.updates))


def _stand_in_trainer(dataset, step=3):
    return SimpleNamespace(
        datamodule=SimpleNamespace(val_set=dataset),
        world_size=1,
        global_rank=0,
        is_global_zero=True,
        loggers=[],
        global_step=step,
    )


def test_one_generation_per_setting_feeds_files_and_metrics(tmp_path, monkeypatch):
    """Two settings: two sampler calls (one batch of all conditions and seeds each), and the
    videos written are the very videos the metrics score."""
    cfg = compose("train", ["data.num_frames=4", "data.height=16", "data.width=16"], tmp_path)
    torch.manual_seed(0)
    denoiser = instantiate(cfg.model)
    calls, written = [], {}
    call = Sampler.__call__

    def counting(self, denoiser, cond, num_frames, generator=None, **kwargs):
        calls.append((self.M, self.stats is not None, cond.latent.shape[0]))
        return call(self, denoiser, cond, num_frames, generator, **kwargs)

    monkeypatch.setattr(Sampler, "__call__", counting)
    from cil_lightning.callbacks import validation

    write_mp4 = validation.write_mp4

    def recording_mp4(path, video, fps):
        written[str(path)] = video.clone()
        return write_mp4(path, video, fps)

    monkeypatch.setattr(validation, "write_mp4", recording_mp4)
    metric = Recording()
    callback = ValidationSampling(
        dirpath=str(tmp_path / "videos"),
        sampler=Sampler(num_steps=2),
        metrics={"recording": metric},
        settings=[{"M": None, "analytic_init": False}, {"M": 10.0, "analytic_init": True}],
        num_conditions=3,
        seeds=(0, 1),
        stats_num_clips=2,
    )
    values = callback.run(
        _stand_in_trainer(Pans(4)), SimpleNamespace(denoiser=denoiser, device="cpu")
    )
    assert calls == [(None, False, 6), (10.0, True, 6)]
    assert values == {"val/recording/full": 1.0, "val/recording": 1.0, "val/recording/M10_ai": 1.0}
    step = tmp_path / "videos" / "step000003"
    for folder, videos in zip([step, step / "M10_ai"], metric.videos):
        files = [written[str(folder / f"pan{i}_seed{s}.mp4")] for i in range(3) for s in (0, 1)]
        torch.testing.assert_close(torch.stack(files), videos.cpu(), rtol=0, atol=0)
    assert not torch.equal(metric.videos[0], metric.videos[1])


def test_files_and_metrics_come_from_the_ema_weights(tmp_path, monkeypatch):
    """With an EMA whose weights differ from the trained ones, every denoiser call of the
    callback runs the EMA UNet, the videos equal a generation with the EMA UNet by hand, and the
    trained UNet is back in place afterwards (in train mode)."""
    from cil_lightning.callbacks import validation
    from cil_lightning.diffusion.rng import per_sample_generators
    from cil_lightning.ema import ema_weights

    cfg = compose("train", ["data.num_frames=4", "data.height=16", "data.width=16"], tmp_path)
    torch.manual_seed(0)
    module = I2VLitModule(
        denoiser=instantiate(cfg.model),
        cond_noise=instantiate(cfg.cond_noise),
        optimizer=instantiate(cfg.optimizer),
        ema_decay=0.9,
    )
    with torch.no_grad():
        for p in module.ema.module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    denoiser, trained, ema_unet = module.denoiser, module.denoiser.unet, module.ema.module
    denoiser.train()
    seen = []
    forward = type(denoiser).forward

    def recording(self, x, sigma, cond):
        seen.append(self.unet is ema_unet)
        return forward(self, x, sigma, cond)

    monkeypatch.setattr(type(denoiser), "forward", recording)
    written = {}
    write_mp4 = validation.write_mp4

    def recording_mp4(path, video, fps):
        written[path.name] = video.clone()
        return write_mp4(path, video, fps)

    monkeypatch.setattr(validation, "write_mp4", recording_mp4)
    metric = Recording()
    sampler = Sampler(num_steps=2)
    callback = ValidationSampling(
        dirpath=str(tmp_path / "videos"),
        sampler=sampler,
        metrics={"recording": metric},
        num_conditions=2,
        seeds=(0,),
    )
    dataset = Pans(2)
    callback.run(_stand_in_trainer(dataset), module)
    assert seen and all(seen)
    assert denoiser.unet is trained and denoiser.training

    # By hand: the same conditions and seeds with the EMA UNet, and with the trained one.
    frames = torch.stack([dataset[i]["cond_frame"] for i in range(2)])
    fps = torch.stack([dataset[i]["fps"] for i in range(2)])

    def by_hand():
        gens = per_sample_generators([0, 0])
        cond = denoiser.sampling_condition(frames, fps=fps, generator=gens)
        return sampler(denoiser, cond, 4, gens).video.float()

    denoiser.eval()
    with ema_weights(module):
        ema_videos = by_hand()
    raw_videos = by_hand()
    files = torch.stack([written["pan0_seed0.mp4"], written["pan1_seed0.mp4"]])
    torch.testing.assert_close(files, ema_videos, rtol=0, atol=0)
    torch.testing.assert_close(metric.videos[0], ema_videos, rtol=0, atol=0)
    assert (raw_videos - ema_videos).abs().max() > 1e-3


def test_ema_weights_swaps_and_restores():
    from torch import nn

    from cil_lightning.ema import build_ema, ema_weights

    trained = nn.Linear(2, 2)
    module = SimpleNamespace(denoiser=SimpleNamespace(unet=trained), ema=build_ema(trained, 0.9))
    with ema_weights(module):
        assert module.denoiser.unet is module.ema.module
    assert module.denoiser.unet is trained
    with ema_weights(module, enabled=False):
        assert module.denoiser.unet is trained
    with pytest.raises(RuntimeError), ema_weights(module):
        raise RuntimeError("restored even so")
    assert module.denoiser.unet is trained
    plain = SimpleNamespace(denoiser=SimpleNamespace(unet=trained), ema=None)
    with ema_weights(plain):
        assert plain.denoiser.unet is trained
