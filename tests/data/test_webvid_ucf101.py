import shutil
import warnings

import pytest

from cil_lightning.data.base import stable_fraction
from cil_lightning.data.ucf101 import UCF101, class_caption
from cil_lightning.data.webvid import WebVid, webvid_path

SPEC = {"num_frames": 4, "height": 16, "width": 16, "stride": 2}


@pytest.fixture
def webvid_root(tmp_path, footage):
    videos = tmp_path / "videos"
    rows = [
        ("1066", "a man rides a bike", "000001_000050"),
        ("2077", "a rabbit, waking", "000051_000100"),
        ("3088", "missing on disk", "000051_000100"),
    ]
    for (vid, _, page), src in zip(rows[:2], footage):
        (videos / page).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, videos / page / f"{vid}.mp4")
    csv = tmp_path / "results_2M_train.csv"
    lines = ["videoid,contentUrl,duration,page_dir,name"]
    lines += [f'{v},https://x/{v}.mp4,PT00H00M10S,{p},"{n}"' for v, n, p in rows]
    csv.write_text("\n".join(lines) + "\n")
    return tmp_path


def test_webvid_paths_and_captions_come_from_the_csv(webvid_root):
    ds = WebVid(str(webvid_root / "results_2M_train.csv"), str(webvid_root / "videos"), SPEC)
    assert len(ds) == 3
    assert ds.path(0) == str(webvid_root / "videos" / "000001_000050" / "1066.mp4")
    assert ds.path(0) == str(webvid_path(webvid_root / "videos", "000001_000050", "1066"))
    assert ds.captions[1] == "a rabbit, waking"  # quoted commas survive
    item = ds[0]
    assert item["name"] == "1066" and item["caption"] == "a man rides a bike"
    assert item["video"].shape == (4, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ds[2]["name"] in ("1066", "2077")  # the missing file is replaced ...
    assert ds.skipped_paths() == [ds.path(2)]  # ... and counted


def test_webvid_missing_csv_folder_or_column_fail_naming_them(webvid_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        WebVid(str(tmp_path / "nope.csv"), str(webvid_root / "videos"), SPEC)
    with pytest.raises(FileNotFoundError, match="novideos"):
        WebVid(str(webvid_root / "results_2M_train.csv"), str(tmp_path / "novideos"), SPEC)
    bad = tmp_path / "bad.csv"
    bad.write_text("videoid,name\n1,x\n")
    with pytest.raises(ValueError, match="page_dir"):
        WebVid(str(bad), str(webvid_root / "videos"), SPEC)


def test_webvid_split_is_stable_and_disjoint(webvid_root):
    args = (str(webvid_root / "results_2M_train.csv"), str(webvid_root / "videos"), SPEC)
    # A fraction between the ids' hashes, so both splits are non-empty.
    frac = sorted(stable_fraction(v) for v in ("1066", "2077", "3088"))[1] + 1e-9
    train = WebVid(*args, split="train", val_fraction=frac)
    val = WebVid(*args, split="val", val_fraction=frac)
    ids = lambda d: {d.name(i) for i in range(len(d))}  # noqa: E731
    assert ids(train) | ids(val) == {"1066", "2077", "3088"} and not ids(train) & ids(val)
    assert len(val) == 2 and ids(WebVid(*args, split="train", val_fraction=frac)) == ids(train)


@pytest.fixture
def ucf_root(tmp_path, footage):
    classes = ["ApplyEyeMakeup", "Biking", "YoYo"]
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    train, test = [], []
    for k, cls in enumerate(classes):
        (tmp_path / "UCF-101" / cls).mkdir(parents=True)
        for g in (1, 8):
            name = f"{cls}/v_{cls}_g{g:02d}_c01.avi"
            shutil.copy(footage[(k + g) % len(footage)], tmp_path / "UCF-101" / name)
            (test if g == 1 else train).append(name)
    (lists / "trainlist01.txt").write_text("".join(f"{n} {k + 1}\r\n" for k, n in enumerate(train)))
    (lists / "testlist01.txt").write_text("".join(f"{n}\r\n" for n in test))
    return tmp_path


def test_ucf101_split_lists_labels_and_captions(ucf_root):
    train = UCF101(str(ucf_root), SPEC, split="train", fold=1)
    test = UCF101(str(ucf_root), SPEC, split="test", fold=1)
    assert len(train) == 3 and len(test) == 3
    assert train.labels.tolist() == [0, 1, 2]  # from the class folder, 0-based
    assert test.path(2).endswith("UCF-101/YoYo/v_YoYo_g01_c01.avi")
    item = train[0]
    assert item["caption"] == "apply eye makeup" and int(item["label"]) == 0
    assert item["video"].shape == (4, 3, 16, 16)  # .avi names, decoded by content
    with pytest.raises(FileNotFoundError, match="testlist02.txt"):
        UCF101(str(ucf_root), SPEC, split="test", fold=2)
    with pytest.raises(FileNotFoundError, match="ucf_nowhere"):
        UCF101(str(ucf_root / "ucf_nowhere"), SPEC)


def test_class_captions():
    assert class_caption("ApplyEyeMakeup") == "apply eye makeup"
    assert class_caption("YoYo") == "yo yo"
    assert class_caption("PlayingDaf") == "playing daf"
