import shutil
import warnings

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DistributedSampler

from cil_lightning.data.datamodule import VideoDataModule, seed_worker
from cil_lightning.data.folder import FolderVideos
from cil_lightning.data.shards import write_shards

from ..conftest import compose
from .conftest import make_folder

SPEC = {"num_frames": 4, "height": 16, "width": 16, "stride": [1, 3], "crop": "random", "flip": 0.5}


def epoch(dm: VideoDataModule, seed: int) -> list[dict]:
    L.seed_everything(seed, workers=True, verbose=False)
    return list(dm.train_dataloader())


@pytest.mark.parametrize("workers", [0, 2])
def test_a_seeded_epoch_is_deterministic(tmp_path, footage, workers):
    root = make_folder(tmp_path / "v", footage, truncated=0, empty=0)
    dm = VideoDataModule(
        FolderVideos(str(root), SPEC),
        num_frames=4,
        height=16,
        width=16,
        batch_size=3,
        num_workers=workers,
        persistent_workers=False,
    )
    a, b, c = epoch(dm, 7), epoch(dm, 7), epoch(dm, 8)
    assert [x["name"] for x in a] == [x["name"] for x in b]
    assert all(torch.equal(x["video"], y["video"]) for x, y in zip(a, b))
    assert all(torch.equal(x["stride"], y["stride"]) for x, y in zip(a, b))
    assert any(not torch.equal(x["video"], y["video"]) for x, y in zip(a, c))


def test_ranks_see_disjoint_samples_and_differently_seeded_workers(tmp_path, footage):
    root = make_folder(tmp_path / "v", footage[:10], truncated=0, empty=0)
    ds = FolderVideos(str(root), SPEC)
    # What Lightning's use_distributed_sampler puts in front of a map-style data set.
    parts = [list(DistributedSampler(ds, num_replicas=2, rank=r, seed=1)) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 5 and not set(parts[0]) & set(parts[1])
    assert set(parts[0]) | set(parts[1]) == set(range(len(ds)))
    seeds = []
    for rank in (0, 1):
        torch.manual_seed(123)  # every rank seeded alike, as seed_everything does
        seed_worker(0, rank=rank)
        seeds.append(torch.initial_seed())
    assert seeds[0] != seeds[1]


def test_clip_size_must_match_the_datamodule(tmp_path, footage):
    root = make_folder(tmp_path / "v", footage[:2], truncated=0, empty=0)
    with pytest.raises(ValueError, match="makes clips of"):
        VideoDataModule(FolderVideos(str(root), SPEC), num_frames=8, height=16, width=16)


def test_default_config_serves_shipped_clips(tmp_path, shipped_dir):
    cfg = compose("train", [f"data.train.cache_dir={shipped_dir}"], tmp_path)
    dm = instantiate(cfg.data)
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (4, 8, 3, 32, 32) and batch["cond_frame"].shape == (4, 3, 32, 32)
    assert batch["fps"].dtype == torch.float32 and batch["motion"].shape == (4, 3)
    assert len(batch["name"]) == 4 and len(batch["caption"]) == 4
    assert len(dm.val_set) > 2 and dm.val_set[0]["name"] == dm.val_set[0]["name"]
    assert torch.equal(dm.val_set[1]["video"], dm.val_set[1]["video"])  # fixed validation
    assert dm.skipped == 0


@pytest.fixture
def layouts(tmp_path, footage):
    """One small root per data config: folder, WebVid, UCF101 and shards."""
    roots = {}
    roots["folder"] = make_folder(tmp_path / "folder", footage, truncated=0, empty=0)
    web = tmp_path / "webvid"
    for split, folder in (("train", "videos"), ("val", "videos_val")):
        (web / folder / "p0").mkdir(parents=True)
        rows = ["videoid,name,page_dir"]
        for i, src in enumerate(footage[:3]):
            shutil.copy(src, web / folder / "p0" / f"{i}.mp4")
            rows.append(f"{i},clip {i},p0")
        (web / f"results_2M_{split}.csv").write_text("\n".join(rows) + "\n")
    roots["webvid"] = web
    ucf = tmp_path / "ucf"
    (ucf / "UCF-101" / "Biking").mkdir(parents=True)
    (ucf / "ucfTrainTestlist").mkdir()
    for i, src in enumerate(footage[:4]):
        shutil.copy(src, ucf / "UCF-101" / "Biking" / f"v_Biking_g0{i}_c01.avi")
    (ucf / "ucfTrainTestlist" / "classInd.txt").write_text("1 Biking\n")
    (ucf / "ucfTrainTestlist" / "trainlist01.txt").write_text(
        "Biking/v_Biking_g00_c01.avi 1\nBiking/v_Biking_g01_c01.avi 1\n"
    )
    (ucf / "ucfTrainTestlist" / "testlist01.txt").write_text(
        "Biking/v_Biking_g02_c01.avi\nBiking/v_Biking_g03_c01.avi\n"
    )
    roots["ucf101"] = ucf
    shards = tmp_path / "shards"
    write_shards(
        [(f"k{i}", p, "c") for i, p in enumerate(footage[:4])], shards / "train-%06d.tar", 2
    )
    write_shards(
        [(f"v{i}", p, "c") for i, p in enumerate(footage[4:6])], shards / "val-%06d.tar", 2
    )
    roots["shards"] = shards
    return roots


@pytest.mark.parametrize("name", ["folder", "webvid", "ucf101", "shards", "panned"])
def test_every_data_config_composes_and_serves_a_batch(name, layouts, tmp_path):
    overrides = [
        f"data={name}",
        "data.num_frames=4",
        "data.height=16",
        "data.width=24",
        "data.batch_size=2",
        "data.num_workers=0",
    ]
    if name in layouts:
        overrides.append(f"data.root={layouts[name]}")
    if name == "folder":
        overrides.append("data.train.val_fraction=0.5")
    cfg = compose("train", overrides, tmp_path)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = next(iter(dm.train_dataloader()))
        val = dm.val_set[0]
    assert batch["video"].shape == (2, 4, 3, 16, 24)
    assert batch["video"].min() >= -1 and batch["video"].max() <= 1
    assert val["video"].shape == (4, 3, 16, 24) and isinstance(val["name"], str)
    assert dm.skipped == 0
