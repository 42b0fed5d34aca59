"""Fixtures of the data tests: the shipped clips built once per session in a temporary folder,
and small folders of good and broken videos made from them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cil_lightning.data.shipped import build_shipped


@pytest.fixture(scope="session")
def shipped_dir(tmp_path_factory) -> Path:
    return build_shipped(tmp_path_factory.mktemp("cache") / "shipped")


@pytest.fixture(scope="session")
def footage(shipped_dir) -> list[Path]:
    """The real footage clips (32 frames, 25 fps, 64 pixels high)."""
    return sorted((shipped_dir / "footage").glob("*.mp4"))


def make_folder(root: Path, good: list[Path], truncated: int = 1, empty: int = 1) -> Path:
    """A folder of ``good`` clips, ``truncated`` half copies and ``empty`` zero-byte files."""
    root.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(good):
        shutil.copy(src, root / f"good_{i}.mp4")
        (root / f"good_{i}.txt").write_text(f"caption {i}\n")
    for i in range(truncated):
        data = good[i % len(good)].read_bytes()
        (root / f"truncated_{i}.mp4").write_bytes(data[: len(data) // 2])
    for i in range(empty):
        (root / f"empty_{i}.mp4").write_bytes(b"")
    return root


@pytest.fixture
def bad_folder(tmp_path, footage) -> Path:
    """Four good clips, one truncated copy of a real clip and one zero-byte file."""
    return make_folder(tmp_path / "videos", footage[:4])
