"""The paper's UCF101 evaluation clips (METHOD.md section 6, ``conf/protocol/ucf101.yaml``).

2048 clips of 16 frames, each a random real clip read with frame stride 3; its first frame is
the condition and the clip itself the reference. ``draw_clips`` fixes the list from a seed;
``export_clips`` writes ``<name>.mp4`` (the reference clip), ``<name>_cond.png`` (the condition)
and ``clips.csv``, so that generated videos saved as ``<name>.mp4`` pair with the references in
``evaluate``.

    python -m cil_lightning.metrics.protocol UCF101_DIR OUT_DIR [--num-videos 2048] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".avi", ".gif", ".webm", ".mkv", ".mov")


@dataclass(frozen=True)
class ClipSpec:
    name: str  # output stem, unique
    source: str  # path of the real video
    start: int  # first frame index in the source
    stride: int
    num_frames: int

    @property
    def frame_indices(self) -> list[int]:
        return [self.start + i * self.stride for i in range(self.num_frames)]


def draw_clips(
    frame_counts: Mapping[str, int],
    num_videos: int = 2048,
    num_frames: int = 16,
    frame_stride: int = 3,
    seed: int = 0,
) -> list[ClipSpec]:
    """Draw ``num_videos`` clips: a uniform random video (without replacement while there are
    enough, then with), and a uniform start among those that fit ``num_frames`` at the stride.

    Args:
        frame_counts: source path -> its number of frames; videos too short are skipped.

    Returns:
        the clip list, identical for identical inputs and seed.
    """
    import torch

    span = (num_frames - 1) * frame_stride + 1
    sources = sorted(p for p, n in frame_counts.items() if n >= span)
    if not sources:
        raise ValueError(f"no video has the {span} frames a clip needs")
    g = torch.Generator().manual_seed(seed)
    picks: list[int] = []
    while len(picks) < num_videos:
        picks += torch.randperm(len(sources), generator=g).tolist()
    clips = []
    for i, k in enumerate(picks[:num_videos]):
        source = sources[k]
        room = frame_counts[source] - span + 1
        start = int(torch.randint(room, (), generator=g))
        clips.append(
            ClipSpec(f"{i:05d}_{Path(source).stem}", source, start, frame_stride, num_frames)
        )
    return clips


def count_frames(path: str | Path) -> int:
    """Number of decodable frames of a video (decodes it: container counts can be wrong)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def export_clips(clips: list[ClipSpec], out_dir: str | Path, fps: float = 8.0) -> Path:
    """Write each clip's reference ``<name>.mp4``, its condition ``<name>_cond.png`` and a
    ``clips.csv`` manifest to ``out_dir``. Returns the manifest path."""
    from ..data.video_io import read_video, write_mp4, write_png

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache: dict[str, object] = {}
    for clip in clips:
        if clip.source not in cache:
            cache.clear()  # one decoded source at a time
            cache[clip.source] = read_video(clip.source)
        frames = cache[clip.source][clip.frame_indices]
        write_mp4(out_dir / f"{clip.name}.mp4", frames, fps)
        write_png(out_dir / f"{clip.name}_cond.png", frames[0])
    manifest = out_dir / "clips.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "source", "start", "stride", "num_frames"])
        for c in clips:
            w.writerow([c.name, c.source, c.start, c.stride, c.num_frames])
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source_dir", help="folder of UCF101 videos (searched recursively)")
    p.add_argument("out_dir")
    p.add_argument("--num-videos", type=int, default=2048)
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--frame-stride", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    paths = sorted(
        q for q in Path(args.source_dir).rglob("*") if q.suffix.lower() in VIDEO_SUFFIXES
    )
    if not paths:
        raise SystemExit(f"no videos under {args.source_dir}")
    from tqdm import tqdm

    counts = {str(q): count_frames(q) for q in tqdm(paths, desc="counting frames")}
    clips = draw_clips(counts, args.num_videos, args.num_frames, args.frame_stride, args.seed)
    clips.sort(key=lambda c: c.source)  # decode each source once
    print(export_clips(clips, args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
