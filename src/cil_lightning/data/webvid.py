"""WebVid-2M/10M: a csv with ``videoid``, ``name`` (the caption) and ``page_dir``.

A clip lives at ``{video_folder}/{page_dir}/{videoid}.mp4`` (the layout of the reference code's
``results_2M_train.csv``; METHOD.md section 5). Rows are used raw, without filtering.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .base import VideoClipDataset, stable_fraction
from .video import ClipSpec

REQUIRED_COLUMNS = ("videoid", "name", "page_dir")


def webvid_path(video_folder: str | Path, page_dir: str, videoid: str, ext: str = ".mp4") -> Path:
    """``{video_folder}/{page_dir}/{videoid}{ext}``."""
    return Path(video_folder) / str(page_dir) / f"{videoid}{ext}"


def read_webvid_csv(csv_path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """(videoids, captions, page_dirs) of a WebVid csv; raises naming the path or the column."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"WebVid csv not found: {csv_path.resolve()}")
    ids, names, dirs = [], [], []
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path} lacks column(s) {missing}; has {reader.fieldnames}")
        for row in reader:
            ids.append(row["videoid"].strip())
            names.append(row["name"].strip())
            dirs.append(row["page_dir"].strip())
    return ids, names, dirs


class WebVid(VideoClipDataset):
    """WebVid clips with their captions.

    Args:
        csv_path: the metadata csv (``results_2M_train.csv``).
        video_folder: the folder holding ``{page_dir}/{videoid}.mp4``.
        split: ``all``, or ``train`` / ``val`` by a stable hash of ``videoid``
            (``val_fraction`` to ``val``).
        max_samples: keep the first N rows (after the split), for quick runs.
        clip, deterministic, seed, max_retries: see :class:`VideoClipDataset`.

    Files missing on disk are not checked up front (a 2M-row stat would take minutes); they are
    skipped and counted when met.
    """

    def __init__(
        self,
        csv_path: str,
        video_folder: str,
        clip: ClipSpec | dict,
        split: str = "all",
        val_fraction: float = 0.001,
        max_samples: int | None = None,
        ext: str = ".mp4",
        deterministic: bool = False,
        seed: int = 0,
        max_retries: int = 50,
    ) -> None:
        super().__init__(clip, deterministic, seed, max_retries)
        if not Path(video_folder).is_dir():
            raise FileNotFoundError(
                f"WebVid video folder not found: {Path(video_folder).resolve()}"
            )
        ids, names, dirs = read_webvid_csv(csv_path)
        rows = range(len(ids))
        if split != "all":
            if split not in ("train", "val"):
                raise ValueError(f"split must be 'all', 'train' or 'val', got {split!r}")
            rows = [i for i in rows if (stable_fraction(ids[i]) < val_fraction) == (split == "val")]
        rows = list(rows)[:max_samples] if max_samples else list(rows)
        if not rows:
            raise ValueError(f"no rows for split {split!r} in {csv_path}")
        self.root = str(video_folder)
        self._set_entries(
            [str(webvid_path(video_folder, dirs[i], ids[i], ext)) for i in rows],
            [names[i] for i in rows],
        )

    def name(self, index: int) -> str:
        return Path(self.paths[index]).stem  # the videoid
