"""Any folder or glob of videos; a caption comes from a sidecar ``.txt`` next to a video."""

from __future__ import annotations

import glob
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


class FolderVideos(VideoClipDataset):
    """Every video under ``root`` (a folder, searched recursively, or a glob pattern).

    Args:
        root: folder or glob (``/data/clips/**/*.mp4``).
        split: ``all``, or ``train`` / ``val`` by a stable hash of each file's relative path
            (``val_fraction`` of the files go to ``val``; adding files does not move others).
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
        files = list_videos(root, tuple(extensions))
        base = Path(str(root).split("*")[0]) if "*" in str(root) else Path(root)
        if split != "all":
            keep_val = split == "val"
            files = [
                f for f in files if (stable_fraction(_rel(f, base)) < val_fraction) == keep_val
            ]
        if not files:
            raise FileNotFoundError(
                f"no videos ({', '.join(extensions)}) for split {split!r} in {root}"
            )
        captions = [_sidecar_caption(f) for f in files]
        self.root = str(root)
        self._set_entries([str(f) for f in files], captions)


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _sidecar_caption(path: Path) -> str:
    txt = path.with_suffix(".txt")
    return txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""
