"""The package installs anywhere: a wheel carries every config and trains with no source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from .conftest import CONF, ROOT


def _yamls(conf: Path) -> dict[str, bytes]:
    return {p.relative_to(conf).as_posix(): p.read_bytes() for p in conf.rglob("*.yaml")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A non-editable wheel built offline from a copy of the checkout (no build/ left in it)."""
    src = tmp_path_factory.mktemp("checkout")
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    done = subprocess.run(
        [*cmd, "-w", str(out), str(src)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("cil_lightning-*.whl")
    return path


def test_the_wheel_holds_every_config_of_the_source_tree(wheel):
    source = _yamls(CONF)
    assert "train.yaml" in source and "experiment/svd_tiny_timenoise.yaml" in source
    prefix = "cil_lightning/conf/"
    with zipfile.ZipFile(wheel) as zf:
        shipped = {
            n[len(prefix) :]: zf.read(n)
            for n in zf.namelist()
            if n.startswith(prefix) and n.endswith(".yaml")
        }
    assert sorted(shipped) == sorted(source)
    assert shipped == source  # byte for byte


@pytest.mark.slow
def test_an_installed_wheel_trains_from_any_folder_without_the_source_tree(wheel, tmp_path):
    target, cwd, run_dir = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "run"
    cwd.mkdir()
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q"]
    done = subprocess.run(
        [*install, "--target", str(target), str(wheel)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Drop every sys.path entry that holds a cil_lightning (an editable install's source tree),
    # so only the installed copy can be imported; then run `python -m cil_lightning`.
    launcher = (
        "import runpy, sys; from pathlib import Path\n"
        f"target = {str(target)!r}\n"
        "sys.path[:] = [p for p in sys.path\n"
        "               if p == target or not (Path(p or '.') / 'cil_lightning').exists()]\n"
        "import cil_lightning; assert cil_lightning.__file__.startswith(target)\n"
        "sys.argv = ['cil_lightning', *sys.argv[1:]]\n"
        "runpy.run_module('cil_lightning', run_name='__main__', alter_sys=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CIL_LIGHTNING_CONF"}
    env.update(
        PYTHONPATH=str(target),
        WANDB_MODE="offline",
        # The shipped clips are data, not code: reuse the checkout's cache (built on first use).
        CIL_DATA_CACHE=str(ROOT / "data" / "cache"),
    )
    args = ["train", "+debug=fast", f"hydra.run.dir={run_dir}", "callbacks.validation_metrics=null"]
    done = subprocess.run(
        [sys.executable, "-c", launcher, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert list((run_dir / "checkpoints").glob("*.ckpt")), sorted(run_dir.rglob("*"))
    # The configs came from the installed package, not from a checkout.
    sources = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.config_sources
    (main,) = [s for s in sources if s.provider == "main"]
    assert Path(main.path).resolve() == (target / "cil_lightning" / "conf").resolve()
    assert not list(cwd.iterdir())  # nothing written where the command ran
