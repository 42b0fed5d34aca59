"""The training data order resumes mid-epoch: from a loader's state, and through Lightning's
checkpoints; DDP ranks share each epoch disjointly."""

import io
import itertools

import lightning as L
import pytest
import torch
from torch.utils.data import DistributedSampler

from cil_lightning.data.datamodule import ResumableDataLoader, ResumableSampler, VideoDataModule
from cil_lightning.data.sampling import ItemKey
from cil_lightning.data.shipped import ShippedClips

# Every kind of per-item randomness: start, crop, flip and stride.
CLIP = {
    "num_frames": 4,
    "height": 16,
    "width": 16,
    "stride": [1, 3],
    "start": "random",
    "crop": "random",
    "flip": 0.5,
}
PER_EPOCH = 4  # 9 footage clips, batches of 2, the last incomplete one dropped


def footage_dm(shipped_dir, workers=0, seed=3, batch_size=2, kinds=("footage",), **kw):
    return VideoDataModule(
        ShippedClips(CLIP, split="train", cache_dir=str(shipped_dir), kinds=kinds),
        num_frames=4,
        height=16,
        width=16,
        batch_size=batch_size,
        num_workers=workers,
        seed=seed,
        **kw,
    )


def take(loader, count: int) -> list[dict]:
    """``count`` batches, going on into the next epochs as an uninterrupted run does."""
    batches: list[dict] = []
    while len(batches) < count:
        more = list(itertools.islice(loader, count - len(batches)))
        assert more, "an empty epoch"
        batches += more
    return batches


def through_a_checkpoint(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert [b["name"] for b in got] == [b["name"] for b in want]
    for g, w in zip(got, want):
        assert torch.equal(g["index"], w["index"])
        assert torch.equal(g["stride"], w["stride"])
        assert torch.equal(g["video"], w["video"])


@pytest.fixture(scope="module")
def reference(shipped_dir) -> list[dict]:
    """Three uninterrupted epochs, in the main process."""
    loader = footage_dm(shipped_dir).train_dataloader()
    assert isinstance(loader, ResumableDataLoader) and len(loader) == PER_EPOCH
    return take(loader, 3 * PER_EPOCH)


def test_the_order_and_augmentation_change_every_epoch(reference):
    epochs = [reference[e * PER_EPOCH : (e + 1) * PER_EPOCH] for e in range(3)]
    names = [[n for b in epoch for n in b["name"]] for epoch in epochs]
    assert len(set(names[0])) == 8 and names[0] != names[1] != names[2]
    # The same clip is cut differently in another epoch (start, crop, flip or stride).
    videos = [{n: v for b in epoch for n, v in zip(b["name"], b["video"])} for epoch in epochs]
    common = set(videos[0]) & set(videos[1])
    assert common and any(not torch.equal(videos[0][n], videos[1][n]) for n in common)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("k", [1, PER_EPOCH, PER_EPOCH + 2])  # mid-epoch, at its end, the next
def test_a_resumed_loader_continues_the_uninterrupted_run(
    shipped_dir, reference, workers, k, monkeypatch
):
    loader = footage_dm(shipped_dir, workers).train_dataloader()
    head = take(loader, k)
    assert_same_batches(head, reference[:k])  # the same with workers as without
    state = through_a_checkpoint(loader.state_dict())
    assert state["seed"] == 3 and state["batches"] + state["epoch"] * PER_EPOCH == k
    del loader
    # A fresh process: another run seed, the datamodule's seed left to it; the state brings 3.
    monkeypatch.setenv("PL_GLOBAL_SEED", "99")
    resumed = footage_dm(shipped_dir, workers, seed=None).train_dataloader()
    resumed.load_state_dict(state)
    assert_same_batches(take(resumed, 3 * PER_EPOCH - k), reference[k:])


def test_without_a_state_the_run_seed_sets_the_order(shipped_dir, reference, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    again = take(footage_dm(shipped_dir, seed=None).train_dataloader(), PER_EPOCH)
    assert_same_batches(again, reference[:PER_EPOCH])
    monkeypatch.setenv("PL_GLOBAL_SEED", "4")
    other = take(footage_dm(shipped_dir, seed=None).train_dataloader(), PER_EPOCH)
    assert [b["name"] for b in other] != [b["name"] for b in reference[:PER_EPOCH]]


def test_set_epoch_restarts_at_the_start_of_that_epoch(shipped_dir, reference):
    loader = footage_dm(shipped_dir).train_dataloader()
    take(loader, 1)
    loader.sampler.set_epoch(2)  # what Lightning calls at every epoch start
    assert_same_batches(take(loader, PER_EPOCH), reference[2 * PER_EPOCH : 3 * PER_EPOCH])
    assert loader.state_dict()["epoch"] == 2 and loader.state_dict()["batches"] == PER_EPOCH


def test_the_sampler_matches_torch_and_skips_whole_batches():
    data = list(range(11))
    for rank in (0, 1):
        ours = ResumableSampler(data, num_replicas=2, rank=rank, seed=5)
        ours.set_epoch(3)
        theirs = DistributedSampler(data, num_replicas=2, rank=rank, seed=5)
        theirs.set_epoch(3)
        full = list(ours)
        assert full == list(theirs) and all(isinstance(i, ItemKey) for i in full)
        assert {(i.epoch, i.seed) for i in full} == {(3, 5)}
        ours.offset = 4  # two samples per rank already served
        assert list(ours) == full[2:]


def test_two_ranks_share_each_epoch_disjointly(shipped_dir):
    """Rank 0 and rank 1 (set by hand, no process group) see disjoint halves of each epoch; a
    rank resumed from rank 0's state (the one a DDP checkpoint holds) continues its own half."""
    kinds = ("footage", "photos")  # 54 clips: each rank gets 27, batches of 9
    dms = [footage_dm(shipped_dir, kinds=kinds, batch_size=9) for _ in range(2)]
    for rank, dm in enumerate(dms):
        dm.set_rank(rank, 2)
    n = len(dms[0].train_set)
    loaders = [dm.train_dataloader() for dm in dms]
    assert n == 54 and [len(x) for x in loaders] == [3, 3]
    for _ in range(2):  # two epochs
        seen = [torch.cat([b["index"] for b in loader]).tolist() for loader in loaders]
        assert len(seen[0]) == len(seen[1]) == n // 2
        assert not set(seen[0]) & set(seen[1]) and set(seen[0]) | set(seen[1]) == set(range(n))
    rank0 = dms[0].train_dataloader()
    take(rank0, 1)
    rank1 = footage_dm(shipped_dir, kinds=kinds, batch_size=9)
    rank1.set_rank(1, 2)
    uninterrupted = take(rank1.train_dataloader(), 3)
    resumed = rank1.train_dataloader()
    resumed.load_state_dict(through_a_checkpoint(rank0.state_dict()))
    assert_same_batches(take(resumed, 2), uninterrupted[1:])


# -- through Lightning --------------------------------------------------------------------------


class NameRecorder(L.LightningModule):
    """Records, per step, the names and a checksum of the videos of its batch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[int, tuple] = {}

    def training_step(self, batch: dict, batch_idx: int):
        self.seen[self.global_step + 1] = (
            tuple(batch["name"]),
            float(batch["video"].double().sum()),
            tuple(batch["stride"].tolist()),
        )
        return (self.weight - batch["video"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(dm: VideoDataModule, max_steps: int, tmp_path, ckpt_path=None, every: int | None = None):
    module = NameRecorder()
    callbacks = []
    if every is not None:
        callbacks.append(
            L.pytorch.callbacks.ModelCheckpoint(
                dirpath=tmp_path, every_n_train_steps=every, save_top_k=-1, filename="{step}"
            )
        )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=4,  # a loader stuck on empty epochs fails rather than hangs
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=every is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module.seen


@pytest.mark.filterwarnings("ignore:.*no `validation_step`", "ignore:Be aware that when using")
@pytest.mark.parametrize(
    "k,workers",
    [(2, 0), (PER_EPOCH, 0), (PER_EPOCH + 1, 2)],  # mid-epoch, at the end of one, in the second
)
def test_a_run_resumed_from_its_checkpoint_sees_the_same_batches(shipped_dir, tmp_path, k, workers):
    total = 2 * PER_EPOCH + 1
    L.seed_everything(0, workers=True, verbose=False)
    uninterrupted = fit(footage_dm(shipped_dir, workers, seed=None), total, tmp_path / "a")
    assert sorted(uninterrupted) == list(range(1, total + 1))

    L.seed_everything(0, workers=True, verbose=False)
    first = fit(footage_dm(shipped_dir, workers, seed=None), k, tmp_path / "b", every=k)
    assert first == {s: uninterrupted[s] for s in range(1, k + 1)}
    ckpt = tmp_path / "b" / f"step={k}.ckpt"
    saved = torch.load(ckpt, weights_only=False)["loops"]["fit_loop"]["state_dict"]
    (state,) = saved["combined_loader"]  # what Lightning saved of the train loader
    assert state["epoch"] * PER_EPOCH + state["batches"] == k and state["seed"] == 0

    L.seed_everything(1, workers=True, verbose=False)  # the state, not the run seed, decides
    resumed = fit(footage_dm(shipped_dir, workers, seed=None), total, tmp_path / "c", ckpt)
    assert resumed == {s: uninterrupted[s] for s in range(k + 1, total + 1)}
