import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from cil_lightning.data.shards import ShardVideos, expand_urls, write_shards

SPEC = {"num_frames": 4, "height": 16, "width": 16, "stride": 2}


@pytest.fixture(scope="module")
def shards(footage, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    samples = [(f"clip{i:02d}", p, f"caption {i}") for i, p in enumerate(footage)]
    samples.insert(3, ("broken", footage[0].read_bytes()[:500], "truncated"))
    paths = write_shards(samples, out / "train-%06d.tar", maxcount=3)
    return out, paths, len(footage)


def names(dataset) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [item["name"] for item in dataset]


def test_shards_stream_every_good_sample_and_count_the_bad_one(shards):
    out, paths, n_good = shards
    assert len(paths) == 4 and expand_urls(str(out / "train-{000000..000003}.tar")) == [
        str(p) for p in paths
    ]
    ds = ShardVideos(str(out / "train-*.tar"), SPEC, shuffle=False)
    ds.set_rank(0, 1)
    got = names(ds)
    assert sorted(got) == [f"clip{i:02d}" for i in range(n_good)]
    assert ds.skipped == 1 and len(ds) == n_good + 1
    item = ds[0]
    assert item["video"].shape == (4, 3, 16, 16) and item["caption"] == "caption 0"
    assert item["path"].endswith("train-000000.tar#clip00")


def test_ranks_and_workers_read_disjoint_shards(shards):
    out, _, n_good = shards
    seen = []
    for rank in (0, 1):
        ds = ShardVideos(str(out / "train-*.tar"), SPEC, shuffle=True, seed=3)
        ds.set_rank(rank, 2)
        seen.append(names(ds))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [f"clip{i:02d}" for i in range(n_good)]
    ds = ShardVideos(str(out / "train-*.tar"), SPEC, shuffle=True, seed=3)
    parts = [ds.shards_for(r, 2, w, 2) for r in (0, 1) for w in (0, 1)]
    assert sorted(sum(parts, [])) == sorted(ds.urls) and all(len(p) == 1 for p in parts)


def test_shard_epochs_are_seeded_and_workers_cover_everything(shards):
    out, _, n_good = shards
    a = ShardVideos(str(out / "train-*.tar"), SPEC, seed=5, buffer=4)
    b = ShardVideos(str(out / "train-*.tar"), SPEC, seed=5, buffer=4)
    a.set_rank(0, 1)
    b.set_rank(0, 1)
    first, second = names(a), names(a)
    assert first == names(b)  # same seed, same epoch: same order
    assert first != second  # the next epoch reshuffles
    loader = DataLoader(
        ShardVideos(str(out / "train-*.tar"), SPEC, seed=5), batch_size=2, num_workers=2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = [n for batch in loader for n in batch["name"]]
    assert sorted(got) == [f"clip{i:02d}" for i in range(n_good)]
    assert loader.dataset.skipped == 1
    assert torch.is_tensor(next(iter(loader))["video"])


def test_missing_shards_fail_at_construction(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shard matches"):
        ShardVideos(str(tmp_path / "x-*.tar"), SPEC)
    with pytest.raises(FileNotFoundError, match="x-000001.tar"):
        ShardVideos(str(tmp_path / "x-{000001..000002}.tar"), SPEC)
