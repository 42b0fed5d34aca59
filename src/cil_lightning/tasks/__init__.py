"""Tasks: one Hydra app each, run through ``cil_lightning.cli``."""

from __future__ import annotations

import sys
from collections.abc import Callable


def choose_device(name: str):
    """The ``torch.device`` of a task's ``device`` value; ``auto``: CUDA when present, else CPU."""
    import torch

    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(str(name))


def run_hydra_task(task: str, overrides: list[str], fn: Callable, config_name: str | None = None):
    """Run ``fn(cfg)`` as a Hydra app with the root config ``conf/<task>.yaml``.

    Hydra parses ``sys.argv``, so the task word is hidden from it while it parses, and put back
    while ``fn`` runs: Lightning relaunches DDP children with ``sys.argv[1:]``, which must start
    with the task word for the child to run the same task (DESIGN principle 8).
    """
    import hydra

    from ..cli import conf_dir
    from ..config.checks import ConfigError

    argv0 = sys.argv[0]
    result = {}

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name or task)
    def _app(cfg):
        sys.argv = [argv0, task, *overrides]
        try:
            result["value"] = fn(cfg)
            return result["value"]
        except ConfigError as err:
            # What to fix, without a traceback: the message names every key (DESIGN principle 8).
            raise SystemExit(f"cil_lightning {task}: {err}") from None
        finally:
            sys.argv = [argv0, *overrides]

    saved = sys.argv
    sys.argv = [argv0, *overrides]
    try:
        _app()
    finally:
        sys.argv = saved
    return 0
