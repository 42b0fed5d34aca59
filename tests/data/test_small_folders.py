"""Small folders (issue 17): a validation split of at least one file from two files on, none
(with a warning) from one, and a validation split of only unreadable files skipped and counted."""

import shutil
import warnings
from pathlib import Path

import pytest

from cil_lightning.data.base import stable_fraction
from cil_lightning.data.datamodule import VideoDataModule
from cil_lightning.data.folder import FolderVideos, split_files

SPEC = {"num_frames": 4, "height": 16, "width": 16, "stride": 2}


def _names(n: int) -> list[Path]:
    return [Path(f"/videos/clip_{i:03d}.mp4") for i in range(n)]


@pytest.mark.parametrize("n", [2, 3, 5, 10, 20])
def test_two_or_more_files_give_both_splits_at_least_one(n):
    files = _names(n)
    split = split_files(files, Path("/videos"), 0.05)
    assert len(split["val"]) >= 1 and len(split["train"]) >= 1
    assert sorted(split["train"] + split["val"]) == files
    # The one moved into val is the file of lowest hash (independent of the listing order).
    if not any(stable_fraction(f.name) < 0.05 for f in files):
        assert split["val"] == [min(files, key=lambda f: stable_fraction(f.name))]


def test_a_large_folder_keeps_the_plain_hash_rule():
    files = _names(400)
    split = split_files(files, Path("/videos"), 0.05)
    assert split["val"] == [f for f in files if stable_fraction(f.name) < 0.05]
    assert 5 < len(split["val"]) < 40


def test_every_file_hashed_into_val_leaves_one_for_training():
    files = _names(3)
    split = split_files(files, Path("/videos"), 1.0)
    assert len(split["val"]) == 2
    assert split["train"] == [max(files, key=lambda f: stable_fraction(f.name))]


def test_a_one_video_folder_trains_and_skips_validation_with_a_warning(tmp_path, footage):
    root = tmp_path / "one"
    root.mkdir()
    shutil.copy(footage[0], root / "only.mp4")
    assert len(FolderVideos(str(root), clip=SPEC, split="train")) == 1
    with pytest.warns(UserWarning, match="validation skipped: .* one video"):
        val = FolderVideos(str(root), clip=SPEC, split="val", deterministic=True)
    assert len(val) == 0
    dm = VideoDataModule(
        FolderVideos(str(root), clip=SPEC, split="train"), val, 4, 16, 16, batch_size=1
    )
    with pytest.warns(UserWarning, match="validation skipped: the validation split is empty"):
        dm.setup("fit")
    assert dm.val_dataloader() == []


def _folder_whose_val_split_is_one_corrupt_file(root: Path, footage) -> Path:
    """Two good clips and one truncated file named so that it alone forms the val split."""
    root.mkdir()
    good = ["good_a.mp4", "good_b.mp4"]
    for name, src in zip(good, footage):
        shutil.copy(src, root / name)
    lowest = min(stable_fraction(n) for n in good)
    bad = next(f"bad_{k}.mp4" for k in range(10_000) if stable_fraction(f"bad_{k}.mp4") < lowest)
    data = footage[0].read_bytes()
    (root / bad).write_bytes(data[: len(data) // 3])
    return root


def test_a_val_split_of_only_unreadable_files_is_skipped_and_counted(tmp_path, footage):
    root = _folder_whose_val_split_is_one_corrupt_file(tmp_path / "v", footage)
    train = FolderVideos(str(root), clip=SPEC, split="train")
    val = FolderVideos(str(root), clip=SPEC, split="val", deterministic=True)
    assert [Path(p).name.startswith("bad_") for p in val.paths] == [True]
    dm = VideoDataModule(train, val, 4, 16, 16, batch_size=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("validation skipped: every one of the 1 videos") for m in messages)
    assert dm.val_set is None and dm.val_dataloader() == []
    assert dm.skipped == 1  # counted like a training skip
    assert [Path(p).name for p in dm.skipped_paths()] == [Path(val.paths[0]).name]
    assert len(train) == 2


def test_a_val_split_with_a_readable_video_is_kept(tmp_path, footage):
    root = _folder_whose_val_split_is_one_corrupt_file(tmp_path / "v", footage)
    shutil.copy(footage[2], root / "bad_00000_ok.mp4")  # a second val candidate, readable
    val = FolderVideos(str(root), clip=SPEC, split="val", val_fraction=0.5, deterministic=True)
    train = FolderVideos(str(root), clip=SPEC, split="train", val_fraction=0.5)
    assert any("ok" in p for p in val.paths)  # the hash puts the readable file in val
    dm = VideoDataModule(train, val, 4, 16, 16, batch_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup("fit")
    assert dm.val_set is val and len(dm.val_dataloader()) == len(val)
