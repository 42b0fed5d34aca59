"""Any folder or glob of videos; a caption comes from a sidecar ``.txt`` next to a video."""

from __future__ import annotations

import glob
import warnings
from pathlib import Path

from .base import VideoClipDataset, stable_fraction
from .video import VIDEO_EXTENSIONS, ClipSpec

SPLITS = ("all", "train", "val")


def list_videos(root: str | Path, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[Path]:
    """Video files under a folder (recursive) or matching a glob pattern, sorted.

    Raises FileNotFoundError naming ``root`` when it is neither an existing folder nor a pattern
    with matches.
    """
    root_s = str(root)
    if any(ch in root_s for ch in "*?["):
        files = [Path(p) for p in glob.glob(root_s, recursive=True)]
        if not files:
            raise FileNotFoundError(f"no file matches the video glob {root_s!r}")
    else:
        path = Path(root_s)
        if not path.is_dir():
            raise FileNotFoundError(f"video folder not found: {path.resolve()}")
        files = [p for p in path.rglob("*") if p.is_file()]
    exts = tuple(e.lower() for e in extensions)
    return sorted(p for p in files if p.suffix.lower() in exts)


def split_files(files: list[Path], base: Path, val_fraction: float) -> dict[str, list[Path]]:
    """``{"train": [...], "val": [...]}``: a file goes to ``val`` when the stable hash of its path
    relative to ``base`` is below ``val_fraction``, so adding files does not move others. A
    folder of two or more files has at least one in each split: when the hash gives ``val`` none
    (or every file), the file of lowest (highest) hash moves. A single file is training only.
    """
    ranked = sorted(files, key=lambda f: stable_fraction(_rel(f, base)))
    n_val = sum(stable_fraction(_rel(f, base)) < val_fraction for f in ranked)
    n_val = min(max(n_val, 1), len(ranked) - 1) if len(ranked) >= 2 else 0
    val = set(ranked[:n_val])
    return {"train": [f for f in files if f not in val], "val": [f for f in files if f in val]}


class FolderVideos(VideoClipDataset):
    """Every video under ``root`` (a folder, searched recursively, or a glob pattern).

    Args:
        root: folder or glob (``/data/clips/**/*.mp4``).
        split: ``all``, or ``train`` / ``val`` by a stable hash of each file's relative path
            (``val_fraction`` of the files go to ``val``, at least one of two or more; see
            :func:`split_files`). ``val`` of a one-video folder is empty, with a warning.
        clip, deterministic, seed, max_retries: see :class:`VideoClipDataset`.
    """

    def __init__(
        self,
        root: str,
        clip: ClipSpec | dict,
        split: str = "all",
        val_fraction: float = 0.05,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
        deterministic: bool = False,
        seed: int = 0,
        max_retries: int = 50,
    ) -> None:
        super().__init__(clip, deterministic, seed, max_retries)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        all_files = list_videos(root, tuple(extensions))
        base = Path(str(root).split("*")[0]) if "*" in str(root) else Path(root)
        files = all_files if split == "all" else split_files(all_files, base, val_fraction)[split]
        if split == "val" and len(all_files) == 1:
            warnings.warn(
                f"validation skipped: {root} holds one video, kept for training; validation "
                "needs a folder of two or more",
                stacklevel=2,
            )
            self.root = str(root)
            self._set_entries([], [])
            return
        if not files:
            raise FileNotFoundError(
                f"no videos ({', '.join(extensions)}) for split {split!r} in {root}"
            )
        captions = [sidecar_caption(f) for f in files]
        self.root = str(root)
        self._set_entries([str(f) for f in files], captions)


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def sidecar_caption(path: Path) -> str:
    """The caption of a video or image: its sidecar ``<name>.txt`` (stripped), else ""."""
    txt = path.with_suffix(".txt")
    return txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""
