"""Local weight files: resolve a configured path or fail with the key, the path and the file.

Nothing here downloads: evaluation networks (I3D, C3D, Inception, RAFT, CLIP) load from local
files named in config, because run-time hub access is off (``HF_HUB_OFFLINE=1``) and results must
not depend on what a server hands out on the day.
"""

from __future__ import annotations

from pathlib import Path


class MissingWeightsError(FileNotFoundError):
    """A configured weight file does not exist."""


def require_file(path: str | Path | None, key: str, expected: str) -> Path:
    """Return ``path`` as a Path if it is a file, else raise naming ``key`` and ``expected``.

    Args:
        path: the configured path (None counts as missing).
        key: the config key that holds it, e.g. ``metric.fvd.weights``.
        expected: what belongs there, e.g. ``i3d_torchscript.pt (StyleGAN-V's TorchScript I3D)``.
    """
    if path is not None and Path(path).is_file():
        return Path(path)
    raise MissingWeightsError(
        f"{key}: no weight file at {path!s} (expected {expected}); nothing is downloaded at run "
        f"time: put the file there or set {key}=/path/to/file"
    )


def load_state_dict(path: str | Path) -> dict:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (tensors only).

    Checkpoints that nest the weights under ``state_dict`` or ``model`` are unwrapped, and a
    ``module.`` prefix left by DataParallel is stripped.
    """
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def is_torchscript(path: str | Path) -> bool:
    """True if ``path`` is a TorchScript archive (a zip with a ``code/`` folder); False for
    ``torch.save`` files and anything else."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())
    except zipfile.BadZipFile:
        return False
