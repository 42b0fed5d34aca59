"""WebDataset tar shards: stream clips from shared storage without a file per video.

A shard is a tar whose members are grouped by key: ``{key}.mp4`` (or another video extension)
and optionally ``{key}.txt`` (caption) or ``{key}.json`` (``{"caption": ...}``), the layout that
``webdataset.TarWriter`` writes. Shards are split across DDP ranks first, then across the
DataLoader workers of each rank, so every (rank, worker) reads disjoint shards; shard order and
the sample shuffle buffer change every epoch from ``seed``.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .base import _mix
from .sampling import rank_and_world
from .skip_counter import SkipCounter
from .video import VIDEO_EXTENSIONS, ClipSpec, VideoError, load_clip


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Brace patterns (``shard-{000000..000099}.tar``), globs, or lists of them -> shard urls."""
    from braceexpand import braceexpand

    out: list[str] = []
    for url in [urls] if isinstance(urls, str) else list(urls):
        for u in braceexpand(str(url)):
            if any(ch in u for ch in "*?[") and "://" not in u and not u.startswith("pipe:"):
                matches = sorted(glob.glob(u))
                if not matches:
                    raise FileNotFoundError(f"no shard matches {u!r}")
                out.extend(matches)
            else:
                out.append(u)
    return out


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def write_shards(
    samples: Iterable[tuple[str, str | Path | bytes, str]],
    pattern: str | Path,
    maxcount: int = 100,
) -> list[Path]:
    """Write (key, video path or bytes, caption) samples into tar shards.

    ``pattern`` holds one ``%d``-style field (``out/shard-%06d.tar``); each shard holds at most
    ``maxcount`` samples. Returns the shard paths.
    """
    import webdataset as wds

    paths: list[Path] = []
    writer = None
    for i, (key, video, caption) in enumerate(samples):
        if i % maxcount == 0:
            if writer is not None:
                writer.close()
            paths.append(Path(str(pattern) % len(paths)))
            paths[-1].parent.mkdir(parents=True, exist_ok=True)
            writer = wds.TarWriter(str(paths[-1]))
        ext = "mp4" if isinstance(video, bytes) else Path(video).suffix.lstrip(".").lower()
        data = video if isinstance(video, bytes) else Path(video).read_bytes()
        writer.write({"__key__": str(key), ext: data, "txt": caption})
    if writer is not None:
        writer.close()
    return paths


def _iter_tar(url: str) -> Iterator[dict]:
    """Samples of one shard as dicts ``{"__key__", ext: bytes}``, streamed in order."""
    import webdataset as wds

    stream = wds.gopen(url) if not _is_local(url) else open(url, "rb")  # noqa: SIM115
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            current: dict | None = None
            for member in tar:
                if not member.isfile():
                    continue
                name = os.path.basename(member.name)
                key, _, ext = name.partition(".")
                key = os.path.join(os.path.dirname(member.name), key)
                data = tar.extractfile(member).read()
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key}
                current[ext.lower()] = data
            if current is not None:
                yield current
    finally:
        stream.close()


def _caption(sample: dict) -> str:
    if "txt" in sample:
        return sample["txt"].decode("utf-8").strip()
    if "json" in sample:
        meta = json.loads(sample["json"])
        return str(meta.get("caption", meta.get("name", "")))
    return ""


def _video_bytes(sample: dict) -> bytes | None:
    for ext in VIDEO_EXTENSIONS:
        if ext[1:] in sample:
            return sample[ext[1:]]
    return None


class ShardVideos(IterableDataset):
    """Clips streamed from WebDataset tar shards.

    Items are dicts like :class:`~cil_lightning.data.base.VideoClipDataset`'s: ``video``
    [F, 3, H, W] in [-1, 1], ``cond_frame`` [3, H, W], ``fps``, ``stride``, ``name`` (the key),
    ``path`` (``shard_url#key``) and ``caption``.

    Args:
        urls: shard urls, brace patterns or globs (local paths, ``pipe:`` commands, http).
        clip: a :class:`ClipSpec` (or its fields).
        shuffle: shuffle shard order (per epoch) and samples (through a buffer of ``buffer``).
        deterministic: the same clips every epoch (validation); otherwise clip randomness changes
            with the epoch.
        seed: base seed of shard order, buffer and clip randomness.
        length: the number of samples, for ``len()`` when shards are not local files (local
            shards are counted from their tar headers on first use).
        max_retries: consecutive unusable samples tolerated before giving up.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        clip: ClipSpec | dict,
        shuffle: bool = True,
        buffer: int = 64,
        deterministic: bool = False,
        seed: int = 0,
        length: int | None = None,
        max_retries: int = 50,
    ) -> None:
        super().__init__()
        self.clip = clip if isinstance(clip, ClipSpec) else ClipSpec(**dict(clip))
        self.urls = expand_urls(urls)
        if not self.urls:
            raise FileNotFoundError(f"no shards in {urls!r}")
        for url in self.urls:
            if _is_local(url) and not Path(url).is_file():
                raise FileNotFoundError(f"shard not found: {Path(url).resolve()}")
        self.shuffle, self.buffer, self.deterministic = shuffle, buffer, deterministic
        self.seed, self.max_retries, self._length = seed, max_retries, length
        self.skips = SkipCounter(0)
        self.epoch = 0
        self.rank: int | None = None
        self.world_size: int | None = None
        self.root = str(urls)
        self._peeked: list[dict] = []

    @property
    def num_frames(self) -> int:
        return self.clip.num_frames

    @property
    def skipped(self) -> int:
        """Samples skipped so far over all workers (repeats across epochs included)."""
        return self.skips.num_events

    def skipped_paths(self) -> list[str]:
        return []

    def set_rank(self, rank: int, world_size: int) -> None:
        """Fix this process's DDP rank (the datamodule calls it in ``setup``)."""
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shards_for(self, rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
        """The shards one (rank, worker) reads this epoch: disjoint across ranks and workers."""
        order = list(range(len(self.urls)))
        if self.shuffle:
            g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
            order = torch.randperm(len(order), generator=g).tolist()
        mine = order[rank::world_size][worker::num_workers]
        return [self.urls[i] for i in mine]

    def __len__(self) -> int:
        if self._length is None:
            if not all(_is_local(u) for u in self.urls):
                raise TypeError("ShardVideos over remote shards needs length= for len()")
            self._length = sum(
                len({m.name.split("/")[-1].partition(".")[0] for m in tarfile.open(u)})
                for u in self.urls
            )
        return self._length

    def _decode(self, sample: dict, url: str) -> dict:
        data = _video_bytes(sample)
        key = sample["__key__"]
        if data is None:
            raise VideoError(f"no video member for key {key!r} in {url}")
        epoch = 0 if self.deterministic else self.epoch
        gen = torch.Generator().manual_seed(_mix(self.seed, epoch, key))
        clip = load_clip(data, self.clip, gen)
        return {
            "video": clip["video"],
            "cond_frame": clip["cond_frame"],
            "cond_index": clip["cond_index"],
            "fps": clip["fps"],
            "stride": clip["stride"],
            "name": os.path.basename(key),
            "path": f"{url}#{key}",
            "caption": _caption(sample),
        }

    def _samples(self, urls: list[str]) -> Iterator[dict]:
        failures, good = [], 0
        for url in urls:
            try:
                for sample in _iter_tar(url):
                    try:
                        item = self._decode(sample, url)
                    except VideoError as e:
                        self.skips.mark()
                        failures.append(str(e))
                        warnings.warn(f"skipping unusable video: {e}", stacklevel=2)
                        if len(failures) >= self.max_retries and good == 0:
                            raise RuntimeError(
                                f"{len(failures)} unusable samples and none readable in "
                                f"{self.root}; last errors: {failures[-3:]}"
                            ) from e
                        continue
                    good += 1
                    yield item
            except (tarfile.TarError, OSError) as e:
                self.skips.mark()
                failures.append(f"{url}: {e}")
                warnings.warn(f"skipping the rest of unreadable shard {url}: {e}", stacklevel=2)
        if good == 0 and failures:
            raise RuntimeError(
                f"every sample of the shards {urls[:3]}... is unusable; last error: {failures[-1]}"
            )

    def __iter__(self) -> Iterator[dict]:
        rank, world = (self.rank, self.world_size) if self.rank is not None else rank_and_world()
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        urls = self.shards_for(rank, world, worker, num_workers)
        if not urls:
            warnings.warn(
                f"rank {rank} worker {worker} has no shard ({len(self.urls)} shards for "
                f"{world} ranks x {num_workers} workers)",
                stacklevel=2,
            )
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch, rank, worker))
        self.epoch += 1  # persistent workers keep their copy: the next pass is a new epoch
        if not self.shuffle or self.buffer <= 1:
            yield from self._samples(urls)
            return
        pool: list[dict] = []
        for item in self._samples(urls):
            pool.append(item)
            if len(pool) >= self.buffer:
                yield pool.pop(int(torch.randint(len(pool), (), generator=g)))
        while pool:
            yield pool.pop(int(torch.randint(len(pool), (), generator=g)))

    def __getitem__(self, index: int) -> dict:
        """The ``index``-th sample in shard order, without shuffling (for previews and callbacks).

        Reads shards sequentially from the start; meant for the first few items only.
        """
        while len(self._peeked) <= index:
            start = len(self._peeked)
            self._peeked = []
            for i, item in enumerate(self._samples(self.urls)):
                self._peeked.append(item)
                if i >= max(index, start):
                    break
            if len(self._peeked) <= index:
                raise IndexError(index)
        return self._peeked[index]
