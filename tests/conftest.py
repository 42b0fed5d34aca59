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
