"""UCF101 in its standard layout; the class name, spelt out, is the caption.

Layout (as downloaded)::

    root/UCF-101/{Class}/v_{Class}_g{GG}_c{CC}.avi
    root/ucfTrainTestlist/classInd.txt            "1 ApplyEyeMakeup"
    root/ucfTrainTestlist/trainlist0{1,2,3}.txt   "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    root/ucfTrainTestlist/testlist0{1,2,3}.txt    "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"

The evaluation protocol (METHOD.md section 6) takes 16 frames at frame stride 3 from random real
clips (``conf/data/ucf101.yaml``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .base import VideoClipDataset
from .video import ClipSpec


def class_caption(name: str) -> str:
    """``ApplyEyeMakeup`` -> ``apply eye makeup``; ``YoYo`` -> ``yo yo``."""
    return " ".join(w.lower() for w in re.findall(r"[A-Z][a-z]*|[a-z]+|\d+", name))


def read_class_index(path: Path) -> dict[str, int]:
    """classInd.txt -> {class name: 0-based label}."""
    if not path.is_file():
        raise FileNotFoundError(f"UCF101 class index not found: {path.resolve()}")
    classes = {}
    for line in path.read_text().splitlines():
        if line.strip():
            number, name = line.split()
            classes[name] = int(number) - 1
    return classes


def read_split(path: Path, classes: dict[str, int]) -> list[tuple[str, int]]:
    """A train/test list -> [(relative path, 0-based label)]; labels come from the class folder."""
    if not path.is_file():
        raise FileNotFoundError(f"UCF101 split list not found: {path.resolve()}")
    items = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rel = line.split()[0].replace("\\", "/")
        cls = rel.split("/")[0]
        if cls not in classes:
            raise ValueError(f"{path}: class {cls!r} of {rel!r} is not in classInd.txt")
        items.append((rel, classes[cls]))
    return items


class UCF101(VideoClipDataset):
    """UCF101 clips with ``label`` (0-based) and the class name as ``caption``.

    Args:
        root: the folder holding ``UCF-101/`` (or the class folders directly) and the lists.
        split: ``train`` or ``test``.
        fold: the official split number, 1, 2 or 3.
        lists_dir: where classInd.txt and the lists are (default ``root/ucfTrainTestlist``).
        clip, deterministic, seed, max_retries: see :class:`VideoClipDataset`.
    """

    def __init__(
        self,
        root: str,
        clip: ClipSpec | dict,
        split: str = "train",
        fold: int = 1,
        lists_dir: str | None = None,
        deterministic: bool = False,
        seed: int = 0,
        max_retries: int = 50,
    ) -> None:
        super().__init__(clip, deterministic, seed, max_retries)
        root_p = Path(root)
        if not root_p.is_dir():
            raise FileNotFoundError(f"UCF101 root not found: {root_p.resolve()}")
        if split not in ("train", "test") or fold not in (1, 2, 3):
            raise ValueError(f"split must be train/test and fold 1-3, got {split!r}, {fold!r}")
        lists = Path(lists_dir) if lists_dir else root_p / "ucfTrainTestlist"
        self.classes = read_class_index(lists / "classInd.txt")
        items = read_split(lists / f"{split}list0{fold}.txt", self.classes)
        videos = root_p / "UCF-101" if (root_p / "UCF-101").is_dir() else root_p
        self.class_names = sorted(self.classes, key=self.classes.get)
        self.labels = torch.tensor([label for _, label in items], dtype=torch.int64)
        self.root = str(root_p)
        self._set_entries(
            [str(videos / rel) for rel, _ in items],
            [class_caption(self.class_names[label]) for _, label in items],
        )

    def extras(self, index: int, clip: dict) -> dict:
        return {"label": self.labels[index].clone()}
