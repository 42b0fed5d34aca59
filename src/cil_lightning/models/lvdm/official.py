"""Official lvdm checkpoints <-> our :class:`LvdmNetwork`: prefixes, renames, strict key checks.

An official ``.ckpt`` (DynamiCrafter 256/512/1024, VideoCrafter1) holds one ``state_dict`` with
``model.diffusion_model.*`` (UNet), ``image_proj_model.*`` (Resampler), ``first_stage_model.*``
(VAE), ``cond_stage_model.*`` / ``embedder.*`` (open_clip towers) and schedule buffers. Our network
is UNet + Resampler; this module maps those two prefixes, renames the 256 model's
``framestride_embed`` to ``fps_embedding`` (as the official loader does), and fails naming the
first missing or unexpected key and the file, before any training.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

#: official prefix -> our LvdmNetwork child
PREFIXES = {"model.diffusion_model.": "diffusion_model.", "image_proj_model.": "image_proj_model."}
#: old key fragment -> current one (DynamiCrafter 256 stores its frame-stride embedding so)
RENAMES = {"framestride_embed.": "fps_embedding."}


class CheckpointKeyError(KeyError):
    """A checkpoint that does not fit the network: names the first offending key and the file."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The ``state_dict`` of an official ``.ckpt`` (or a bare one, or a safetensors file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path} (lvdm models load local files only: put the official "
            "model.ckpt there or point the model's `ckpt` at it)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a truncated or foreign file: name it
        raise CheckpointKeyError(f"{path}: not a readable checkpoint ({err})") from err
    return ckpt.get("state_dict", ckpt)


def network_state_from_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our network's entries of an official state dict: prefixes mapped, renames applied; keys
    under other prefixes (VAE, CLIP, schedule buffers) are left out."""
    out = {}
    for key, value in state.items():
        for theirs, ours in PREFIXES.items():
            if key.startswith(theirs):
                name = ours + key[len(theirs) :]
                for old, new in RENAMES.items():
                    name = name.replace(old, new)
                out[name] = value
    return out


def to_official_key(key: str) -> str:
    """Our network's key -> the official checkpoint's."""
    for theirs, ours in PREFIXES.items():
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    raise ValueError(f"{key!r} is not under {sorted(PREFIXES.values())}")


def official_state_from_network(network: nn.Module) -> dict[str, Tensor]:
    """Our network's state dict under the official prefixes (for an official-layout export)."""
    return {to_official_key(k): v for k, v in network.state_dict().items()}


def load_official(
    network: nn.Module,
    source: str | Path | Mapping[str, Tensor],
    name: str | None = None,
    assign: bool = False,
) -> nn.Module:
    """Load an official checkpoint (path or state dict) into ``network`` strictly
    (``assign``: take the tensors themselves, for a network built on the meta device).

    Raises:
        CheckpointKeyError: naming the first missing key (in the network's order), else the first
            unexpected one, a shape mismatch, and the file (``name`` for a dict).
    """
    where = name or (str(source) if isinstance(source, (str, Path)) else "the given state dict")
    state = read_state_dict(source) if isinstance(source, (str, Path)) else source
    mapped = network_state_from_official(state)
    expected = network.state_dict()
    check_keys(expected, mapped, where, to_official_key)
    network.load_state_dict(mapped, strict=True, assign=assign)
    return network


def check_keys(
    expected: Mapping[str, Tensor],
    got: Mapping[str, Tensor],
    where: str,
    name: Callable[[str], str] = str,
) -> None:
    """Raise :class:`CheckpointKeyError` naming the first missing key (in ``expected``'s order),
    else the first unexpected one, else the first shape mismatch; ``name`` maps a key to the
    name the user's file spells."""
    missing = [k for k in expected if k not in got]
    if missing:
        raise CheckpointKeyError(
            f"{where}: missing key {name(missing[0])!r} "
            f"({len(missing)} of {len(expected)} missing; wrong model or truncated file?)"
        )
    unexpected = [k for k in got if k not in expected]
    if unexpected:
        raise CheckpointKeyError(
            f"{where}: unexpected key {name(unexpected[0])!r} "
            f"({len(unexpected)} unexpected; a checkpoint of a different configuration?)"
        )
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape):
            raise CheckpointKeyError(
                f"{where}: key {name(k)!r} has shape {tuple(got[k].shape)}, "
                f"the network expects {tuple(v.shape)} (a different model size?)"
            )


def merge_official(
    source: Mapping[str, Tensor], ours: Mapping[str, Tensor], where: str
) -> dict[str, Tensor]:
    """``source`` (an official state dict) with ``ours`` (entries in official names) written over
    it: every other entry (VAE, encoders, schedule buffers, ``scale_arr``) is kept as it is, and
    source entries under our network prefixes that ``ours`` renames (the 256 model's
    ``framestride_embed``) go. Raises :class:`CheckpointKeyError` naming the first entry of
    ``ours`` that ``source`` lacks, or the first network entry of ``source`` that ``ours`` lacks
    (a model of another configuration than ``where``)."""
    renamed = {_renamed(k): k for k in source}
    missing = [k for k in ours if k not in renamed]
    if missing:
        raise CheckpointKeyError(
            f"{where}: has no key {missing[0]!r} of the exported model ({len(missing)} of "
            f"{len(ours)} absent; the model was not built from this checkpoint?)"
        )
    extra = [k for k in renamed if k.startswith(tuple(PREFIXES)) and k not in ours]
    if extra:
        raise CheckpointKeyError(
            f"{where}: has key {renamed[extra[0]]!r} that the exported network lacks "
            f"({len(extra)} such; the model was not built from this checkpoint?)"
        )
    # in the source's order, our entries in place of its network's
    return {_renamed(k): ours.get(_renamed(k), v) for k, v in source.items()}


def _renamed(key: str) -> str:
    """An official key under our network prefixes with the known renames applied."""
    if key.startswith(tuple(PREFIXES)):
        for old, new in RENAMES.items():
            key = key.replace(old, new)
    return key


def export_official(network: nn.Module, source: str | Path, out: str | Path) -> Path:
    """Write ``network`` (a fine-tuned UNet + Resampler) as an official-layout ``.ckpt``.

    Every other entry (VAE, encoders, schedule buffers) is copied from the official ``source``
    file it was loaded from (:func:`merge_official`), so the official inference scripts load the
    result with ``strict=True``. Returns the written path.
    """
    state = merge_official(
        read_state_dict(source), official_state_from_network(network), str(source)
    )
    return save_official(state, out)


def save_official(state: Mapping[str, Tensor], out: str | Path) -> Path:
    """``torch.save({"state_dict": state})`` as the official loaders read it (CPU, contiguous).

    Written to a temporary name and renamed: ``state`` may hold tensors memory-mapped from
    ``out`` itself (``read_state_dict``), which truncating ``out`` would pull from under them.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save(
        {"state_dict": {k: v.detach().cpu().contiguous() for k, v in state.items()}}, partial
    )
    os.replace(partial, out)
    return out
