"""The paper's UCF101 evaluation clips (METHOD.md section 6, ``conf/protocol/ucf101.yaml``).

2048 clips of 16 frames, each a random real clip read with frame stride 3 (UCF101 is 25 fps, so
a clip runs at 25 / 3 = 8.3 fps, not 3 fps); its first frame is the condition and the clip itself
the reference. Both are brought to the generation resolution (default 320x512) by the same
resize and centre crop (``data.video_io.cover_center_crop``), so the reference set and the
generated videos are compared at one resolution. ``draw_clips`` fixes the list from a seed;
``export_clips`` writes ``<name>.mp4`` (the reference clip, at source fps / stride),
``<name>_cond.png`` (the condition) and ``clips.csv``, so that generated videos saved as
``<name>.mp4`` pair with the references in ``evaluate``.

    python -m cil_lightning.metrics.protocol UCF101_DIR OUT_DIR [--num-videos 2048] [--seed 0]
        [--frame-stride 3] [--height 320 --width 512]
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..tasks.evaluate_inputs import VIDEO_SUFFIXES  # the files `evaluate` reads

# Near-lossless H.264 for the reference clips: the codec should not become part of the reference.
REFERENCE_OPTIONS = {"crf": "12", "preset": "veryfast"}
MANIFEST_COLUMNS = (
    "name",
    "source",
    "start",
    "stride",
    "num_frames",
    "source_fps",
    "fps",
    "source_height",
    "source_width",
    "height",
    "width",
)


@dataclass(frozen=True)
class ClipSpec:
    name: str  # output stem, unique
    source: str  # path of the real video
    start: int  # first frame index in the source
    stride: int  # frame stride: source frames per clip frame (not fps)
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


def export_clips(
    clips: list[ClipSpec],
    out_dir: str | Path,
    height: int = 320,
    width: int = 512,
    options: Mapping[str, str] | None = None,
) -> Path:
    """Write each clip's reference ``<name>.mp4``, its condition ``<name>_cond.png`` and a
    ``clips.csv`` manifest to ``out_dir``. Returns the manifest path.

    Reference and condition are the source frames brought to ``height x width`` by
    ``cover_center_crop`` (short side scaled to cover, centre crop, bilinear with antialias), the
    condition being exactly the first reference frame before encoding. A clip's frame rate is
    the source's, read from the file, divided by the stride (UCF101: 25 / 3 = 8.33 fps); the mp4
    carries it and ``clips.csv`` records it with the source rate and sizes.
    """
    from ..data.video import open_video
    from ..data.video_io import cover_center_crop, write_mp4, write_png

    if height < 8 or width < 8:
        raise ValueError(f"height={height}, width={width}: both must be >= 8")
    options = dict(REFERENCE_OPTIONS if options is None else options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, handle, opened = [], None, None
    for clip in clips:
        if clip.source != opened:
            # The naive handle decodes every frame once, in the order count_frames counted them.
            handle, opened = open_video(clip.source, "naive"), clip.source
        video = cover_center_crop(handle.get(clip.frame_indices), height, width)
        fps = handle.fps / clip.stride
        write_mp4(out_dir / f"{clip.name}.mp4", video, fps, options)
        write_png(out_dir / f"{clip.name}_cond.png", video[0])
        rows.append(
            [clip.name, clip.source, clip.start, clip.stride, clip.num_frames]
            + [round(handle.fps, 6), round(fps, 6), *handle.size, height, width]
        )
    manifest = out_dir / "clips.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
    return manifest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source_dir", help="folder of UCF101 videos (searched recursively)")
    p.add_argument("out_dir")
    p.add_argument("--num-videos", type=int, default=2048)
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument(
        "--frame-stride",
        type=int,
        default=3,
        help="source frames per clip frame (not fps); clip fps = source fps / stride",
    )
    p.add_argument("--height", type=int, default=320, help="generation height of the model")
    p.add_argument("--width", type=int, default=512, help="generation width of the model")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key, value, lo in (
        ("--num-videos", args.num_videos, 1),
        ("--num-frames", args.num_frames, 2),
        ("--frame-stride", args.frame_stride, 1),
        ("--height", args.height, 8),
        ("--width", args.width, 8),
    ):
        if value < lo:
            raise SystemExit(f"{key}={value} is out of range; allowed: an integer >= {lo}")
    paths = sorted(
        q for q in Path(args.source_dir).rglob("*") if q.suffix.lower() in VIDEO_SUFFIXES
    )
    if not paths:
        raise SystemExit(f"no videos under {args.source_dir}")
    from tqdm import tqdm

    counts = {str(q): count_frames(q) for q in tqdm(paths, desc="counting frames")}
    clips = draw_clips(counts, args.num_videos, args.num_frames, args.frame_stride, args.seed)
    clips.sort(key=lambda c: c.source)  # decode each source once
    print(export_clips(clips, args.out_dir, args.height, args.width))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
