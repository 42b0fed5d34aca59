"""Unusable videos are skipped, counted across workers and reported; all-bad data stops."""

import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from cil_lightning.data.datamodule import VideoDataModule
from cil_lightning.data.folder import FolderVideos
from cil_lightning.data.skips import SkippedVideosCallback

from .conftest import make_folder

SPEC = {"num_frames": 4, "height": 16, "width": 16, "stride": 2}


def folder_set(root, **kw) -> FolderVideos:
    return FolderVideos(str(root), clip=SPEC, **kw)


def test_bad_files_are_replaced_and_counted_once(bad_folder):
    ds = folder_set(bad_folder, deterministic=True)
    assert len(ds) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = [ds[i] for i in range(len(ds))] + [ds[i] for i in range(len(ds))]
    assert all(it["video"].shape == (4, 3, 16, 16) for it in items)
    assert all(it["name"].startswith("good_") for it in items)
    assert all(it["caption"] == f"caption {it['name'][-1]}" for it in items)
    assert ds.skipped == 2  # two bad files, met twice each, counted once each
    assert sorted(p.rsplit("/", 1)[-1] for p in ds.skipped_paths()) == [
        "empty_0.mp4",
        "truncated_0.mp4",
    ]
    # Deterministic items: a bad entry is replaced by the same good one every time.
    assert [it["name"] for it in items[:6]] == [it["name"] for it in items[6:]]


def test_the_counter_is_shared_by_dataloader_workers(bad_folder):
    ds = folder_set(bad_folder)
    loader = DataLoader(ds, batch_size=3, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    assert sum(len(b["name"]) for b in batches) == 6
    assert ds.skipped == 2  # counted in the workers, read in the main process
    assert ds.skips.num_events == 2


def test_a_data_set_of_only_bad_files_stops_with_a_clear_error(tmp_path, footage):
    root = make_folder(tmp_path / "bad", footage[:1], truncated=2, empty=2)
    (root / "good_0.mp4").unlink()
    ds = folder_set(root)
    with pytest.raises(RuntimeError, match="every one of the 4 videos"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds[0]


def test_too_short_videos_are_skipped(tmp_path, footage):
    root = make_folder(tmp_path / "v", footage[:2], truncated=0, empty=0)
    ds = FolderVideos(str(root), clip={**SPEC, "num_frames": 20}, deterministic=True)
    with pytest.raises(RuntimeError, match="too short for 20 frames at stride 2"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds[0]
    assert ds.skipped == 2


def test_missing_root_fails_at_construction_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        folder_set(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no file matches .*\*\.mp4"):
        folder_set(tmp_path / "*.mp4")


def test_folder_glob_split_and_sidecar_captions(tmp_path, footage):
    root = make_folder(tmp_path / "v", footage, truncated=0, empty=0)
    assert len(FolderVideos(str(root / "*.mp4"), clip=SPEC)) == len(footage)
    train = FolderVideos(str(root), clip=SPEC, split="train", val_fraction=0.3)
    val = FolderVideos(str(root), clip=SPEC, split="val", val_fraction=0.3)
    assert len(train) + len(val) == len(footage) and len(val) > 0
    assert not {train.path(i) for i in range(len(train))} & {val.path(i) for i in range(len(val))}


class _CountingLogger(L.pytorch.loggers.logger.Logger):
    def __init__(self):
        super().__init__()
        self.metrics = {}

    name, version = "mem", 0

    def log_hyperparams(self, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)


def test_short_training_run_succeeds_and_counts_two_skips(bad_folder):
    from cil_lightning.diffusion.cond_noise import TimeNoise
    from cil_lightning.lit_module import I2VLitModule
    from cil_lightning.models.tiny import tiny_pixel_svd

    L.seed_everything(0, workers=True)
    dm = VideoDataModule(
        train=folder_set(bad_folder),
        val=None,
        num_frames=4,
        height=16,
        width=16,
        batch_size=2,
    )
    module = I2VLitModule(
        denoiser=tiny_pixel_svd(seed=0),
        cond_noise=TimeNoise(beta_m=1.0, a=1.0),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-4),
    )
    logger = _CountingLogger()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=logger,
        callbacks=[SkippedVideosCallback()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    with pytest.warns(UserWarning, match=r"epoch 0: 2 unreadable.*(truncated|empty)_0\.mp4"):
        trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 3
    assert dm.skipped == 2
    assert logger.metrics["data/skipped"] == 2.0
