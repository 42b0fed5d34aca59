"""``python -m cil_lightning <task> [hydra overrides]``: task dispatch.

Nothing heavy is imported here (no torch, no Lightning): ``--help`` must answer at once, and each
task imports what it needs inside its own function.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from pathlib import Path

# task -> (module under cil_lightning.tasks, or None while it is not available; one-line summary)
TASKS: dict[str, tuple[str | None, str]] = {
    "train": ("train", "train an image-to-video denoiser (TimeNoise on the condition)"),
    "sample": ("sample", "generate videos from images, optionally with Analytic-Init"),
    "evaluate": ("evaluate", "compute FVD / IS / motion score / CLIP metrics on folders of videos"),
    "stats": ("stats", "estimate Analytic-Init latent statistics from a data set"),
    "export": ("export", "write a trained (EMA) UNet as a diffusers pipeline folder"),
    "diagnose": (
        "diagnose",
        "leakage diagnostic: one-step x0 motion vs noise level, output vs input motion",
    ),
}

USAGE = """usage: python -m cil_lightning <task> [hydra overrides ...]

tasks:
{tasks}

Each task is a Hydra app with its own root config conf/<task>.yaml, shipped in the package
(cil_lightning/conf; $CIL_LIGHTNING_CONF overrides it). Examples:
  python -m cil_lightning train                                  # tiny CPU default
  python -m cil_lightning train +experiment=tiny_naive trainer.max_steps=50
  python -m cil_lightning train -m cond_noise.beta_m=25,100 cond_noise.a=1,5
  python -m cil_lightning train --cfg job                        # print the composed config
  python -m cil_lightning <task> --help                          # Hydra's help for one task
"""


def conf_dir() -> Path:
    """The Hydra configs: ``$CIL_LIGHTNING_CONF``, else the ``conf/`` shipped in the package."""
    path = Path(os.environ.get("CIL_LIGHTNING_CONF", Path(__file__).resolve().parent / "conf"))
    if not (path / "train.yaml").is_file():
        raise SystemExit(
            f"cil_lightning: no Hydra configs at {path} (expected {path / 'train.yaml'}); "
            "reinstall the package (its conf/ ships inside it) or set CIL_LIGHTNING_CONF to a "
            "folder of configs"
        )
    return path


def usage() -> str:
    width = max(map(len, TASKS))
    lines = [
        f"  {name:<{width}}  {summary}" + ("" if module else "  [not available yet]")
        for name, (module, summary) in TASKS.items()
    ]
    return USAGE.format(tasks="\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    task, overrides = argv[0], argv[1:]
    if task not in TASKS:
        print(f"cil_lightning: unknown task {task!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, _ = TASKS[task]
    if module is None:
        print(
            f"cil_lightning: the '{task}' task is not available yet in this version; "
            f"available: {', '.join(t for t, (m, _) in TASKS.items() if m)}",
            file=sys.stderr,
        )
        return 2
    # No run-time hub access, ever: weights come from local folders named in config.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return import_module(f"cil_lightning.tasks.{module}").main(task, overrides)


if __name__ == "__main__":
    sys.exit(main())
