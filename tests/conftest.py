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


@pytest.fixture
def cli():
    """The shared CLI runner: ``cli("train", *overrides)`` -> CompletedProcess."""
    return run_cli
