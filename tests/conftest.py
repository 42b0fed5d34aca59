"""Shared fixtures: compose the real Hydra configs with tiny overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "src" / "cil_lightning" / "conf"  # shipped in the package (cli.conf_dir)


def compose(config_name: str = "train", overrides: list[str] | None = None, output_dir=None):
    """Compose the package's ``conf/<config_name>.yaml`` as the CLI would, with ``hydra:``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = hydra_compose(config_name, overrides=overrides or [], return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def compose_cfg():
    return compose


# A tiny run: a few steps, CSV logs, few sampling steps. Tests append it to a task's own overrides
# (later overrides win, so a test can still change any of these).
TINY = [
    "logger=csv",
    "trainer.max_steps=3",
    "trainer.log_every_n_steps=1",
    "sampler.num_steps=2",
    "clip.num_frames=4",
    "clip.height=16",
    "clip.width=16",
]


def run_cli(
    *args: str, timeout: float = 600, env: dict | None = None, module: str = "cil_lightning"
):
    """``python -m cil_lightning <args>`` in a subprocess (W&B offline); the CompletedProcess."""
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
        cwd=ROOT,
    )


def run_ok(*args: str, **kwargs):
    """``run_cli`` that fails the test, with the output's tail, unless the command succeeded."""
    out = run_cli(*args, **kwargs)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def run_task(*args: str, env: dict | None = None):
    """``cil_lightning.cli.main(args)`` in this process (from the repository root, W&B offline):
    the same code path as ``python -m cil_lightning`` without the ~6 s of imports a subprocess
    pays. Returns a CompletedProcess (exit code, captured stdout/stderr). The environment, argv,
    working directory, root logging handlers, RNG states and Hydra's global state are restored
    afterwards, so a run leaves nothing behind for the next test (seed_everything sets env vars).
    Tests of signals, DDP or process exit stay on :func:`run_cli`."""
    import contextlib
    import io
    import logging
    import os
    import random
    import subprocess
    import sys

    import numpy as np
    import torch
    from hydra.core.global_hydra import GlobalHydra

    from cil_lightning import cli as cil_cli

    environ, argv, cwd = dict(os.environ), list(sys.argv), os.getcwd()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    rng = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    out, err = io.StringIO(), io.StringIO()
    os.environ.update({"WANDB_MODE": "offline", **(env or {})})
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cil_cli.main(list(args)) or 0
            except SystemExit as exit_:  # the CLI's clear-error exit: SystemExit(message)
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
            except Exception:  # what a subprocess would print before exiting with 1
                import traceback

                traceback.print_exc()
                code = 1
    finally:
        GlobalHydra.instance().clear()
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        sys.argv = argv
        root.handlers[:] = handlers
        root.setLevel(level)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.random.set_rng_state(rng[2])
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def task_ok(*args: str, **kwargs):
    """``run_task`` that fails the test, with the output's tail, unless the task succeeded."""
    out = run_task(*args, **kwargs)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture
def cli():
    """The shared CLI runner: ``cli("train", *overrides)`` -> CompletedProcess."""
    return run_cli
