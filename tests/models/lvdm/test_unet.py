"""Our lvdm UNet and Resampler against the official DynamiCrafter code.

Fixtures in tests/fixtures/lvdm (see NOTE.md there): the official key list at the 512 and 256
configurations, and the official modules' outputs at a tiny configuration with random weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cil_lightning.models.lvdm import LvdmUNet, Resampler

from .weights import det_state

FIXTURES = Path(__file__).parents[2] / "fixtures" / "lvdm"
UNET_PREFIX, PROJ_PREFIX = "model.diffusion_model.", "image_proj_model."


def _key_lines(unet: torch.nn.Module, resampler: torch.nn.Module) -> list[str]:
    lines = [f"{UNET_PREFIX}{k} {tuple(v.shape)}" for k, v in unet.state_dict().items()]
    return lines + [f"{PROJ_PREFIX}{k} {tuple(v.shape)}" for k, v in resampler.state_dict().items()]


@pytest.mark.parametrize(
    "size, kwargs", [("512", {}), ("256", {"image_scale_learnable": True, "default_fs": 3})]
)
def test_full_size_state_dict_equals_official_key_list(size, kwargs):
    """Every key and shape of the official checkpoint's UNet + Resampler, and nothing else."""
    with torch.device("meta"):
        ours = _key_lines(LvdmUNet(**kwargs), Resampler())
    official = (FIXTURES / f"keys_{size}.txt").read_text().splitlines()
    assert ours == official  # the same keys and shapes, in the same (state-dict) order
    missing, unexpected = sorted(set(official) - set(ours)), sorted(set(ours) - set(official))
    assert not missing and not unexpected, (missing[:5], unexpected[:5])


def _tiny():
    cfg = json.loads((FIXTURES / "tiny_config.json").read_text())
    u, r = cfg["unet"], cfg["resampler"]
    unet = LvdmUNet(
        in_channels=u["in_channels"],
        out_channels=u["out_channels"],
        model_channels=u["model_channels"],
        channel_mult=u["channel_mult"],
        num_res_blocks=u["num_res_blocks"],
        attention_resolutions=u["attention_resolutions"],
        num_head_channels=u["num_head_channels"],
        context_dim=u["context_dim"],
        image_scale_learnable=u["image_cross_attention_scale_learnable"],
        default_fs=u["default_fs"],
    )
    resampler = Resampler(**r)
    for module in (unet, resampler):
        module.load_state_dict(det_state(module), strict=True)
    return unet.eval(), resampler.eval(), load_file(FIXTURES / "tiny_io.safetensors")


@torch.no_grad()
def test_tiny_unet_reproduces_official_outputs():
    unet, _, io = _tiny()
    out = unet(io["x"], io["t"], io["context"], fs=io["fs"])
    assert (out - io["out"]).abs().max() < 1e-5
    # image tokens shared by all frames, default frame stride: the other context branch
    shared = unet(io["x"], io["t"], io["context_shared"])
    assert (shared - io["out_shared_default_fs"]).abs().max() < 1e-5
    # the two reference outputs differ, so each comparison checks its own branch
    assert (io["out"] - io["out_shared_default_fs"]).abs().max() > 1e-2
    # and fs reaches the output (64 channels: GroupNorm(32) does not cancel the embedding), so
    # the match above checks the time and fs embeddings too
    other_fs = unet(io["x"], io["t"], io["context"], fs=io["fs"] + 7)
    assert (other_fs - out).abs().max() > 1e-3


@torch.no_grad()
def test_tiny_resampler_reproduces_official_outputs():
    _, resampler, io = _tiny()
    out = resampler(io["clip_tokens"])
    assert out.shape == io["resampler_out"].shape
    assert (out - io["resampler_out"]).abs().max() < 1e-5


@pytest.mark.slow  # about 15 s on the shared CPU
def test_gradient_checkpointing_gives_the_same_gradients():
    unet, _, io = _tiny()
    grads = []
    for flag in (False, True):
        unet.gradient_checkpointing = flag
        unet.zero_grad()
        unet(io["x"], io["t"], io["context"], fs=io["fs"]).square().mean().backward()
        grads.append(unet.input_blocks[0][0].weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


@torch.no_grad()
def test_tiny_videocrafter1_unet_reproduces_the_reference_outputs():
    """VideoCrafter1-I2V's UNet class (the TimeNoise reference's copy) is ours with 4 input
    channels: image tokens shared by all frames, fps added to the time embedding."""
    unet = LvdmUNet(
        in_channels=4, out_channels=4, model_channels=64, channel_mult=(1, 1), num_res_blocks=1,
        attention_resolutions=(1, 2), num_head_channels=8, context_dim=16, default_fs=16,
    ).eval()  # fmt: skip
    unet.load_state_dict(det_state(unet), strict=True)
    io = load_file(FIXTURES / "vc1_tiny_io.safetensors")
    out = unet(io["x"], io["t"], io["context"], fs=io["fps"])
    assert (out - io["out"]).abs().max() < 1e-5
    assert (unet(io["x"], io["t"], io["context"], fs=io["fps"] + 7) - out).abs().max() > 1e-3


def test_videocrafter1_unet_key_list_is_dynamicrafter_512s_with_4_input_channels():
    """Built from the reference's VideoCrafter1 class during development: 1516 keys, equal to
    DynamiCrafter 512's UNet keys except conv_in's input width (tests/fixtures/lvdm/NOTE.md)."""
    with torch.device("meta"):
        ours = [
            f"{UNET_PREFIX}{k} {tuple(v.shape)}"
            for k, v in LvdmUNet(in_channels=4).state_dict().items()
        ]
    dc = [
        line
        for line in (FIXTURES / "keys_512.txt").read_text().splitlines()
        if line.startswith(UNET_PREFIX)
    ]
    expected = [
        line.replace("input_blocks.0.0.weight (320, 8,", "input_blocks.0.0.weight (320, 4,")
        for line in dc
    ]
    assert len(ours) == 1516 and ours == expected
