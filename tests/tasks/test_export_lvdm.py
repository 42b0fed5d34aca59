"""The export task on an lvdm training checkpoint: official .ckpt and safetensors folder, the
format and source options, and their errors."""

from __future__ import annotations

import pytest
import torch

from cil_lightning.config.checks import ConfigError
from cil_lightning.models.checkpoint import CONFIG_KEY
from cil_lightning.models.lvdm.export import load_safetensors_export, official_checkpoint
from cil_lightning.models.lvdm.official import load_official, read_state_dict, save_official
from cil_lightning.models.lvdm.tiny import tiny_dynamicrafter
from cil_lightning.tasks.export import export

from ..conftest import compose
from ..models.lvdm.weights import det_state

MODEL = {
    "_target_": "cil_lightning.models.lvdm.tiny.tiny_dynamicrafter",
    "num_frames": 3,
    "fps": 8,
    "seed": 1,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint path, model): a training checkpoint as ``train`` writes one, of a tiny
    DynamiCrafter whose network holds non-zero "trained" weights."""
    model = tiny_dynamicrafter(num_frames=3, fps=8, seed=1).eval()
    model.unet.load_state_dict(det_state(model.unet))
    path = tmp_path_factory.mktemp("run") / "last.ckpt"
    state = {"denoiser." + k: v for k, v in model.state_dict().items()}
    torch.save({CONFIG_KEY: {"model": MODEL}, "state_dict": state}, path)
    return path, model


def _export(ckpt, out, *overrides):
    return export(compose("export", [f"ckpt={ckpt}", f"out={out}", *overrides], out))


def _predict(model):
    g = torch.Generator().manual_seed(2)
    image, x_t = (
        torch.rand(1, 3, 32, 32, generator=g) * 2 - 1,
        torch.randn(1, 3, 4, 16, 16, generator=g),
    )
    with torch.no_grad():
        return model(x_t, torch.tensor([500.0]), model.encode_condition(image))


def test_default_writes_both_layouts_that_load_back(trained, tmp_path, capsys):
    ckpt, model = trained
    out = tmp_path / "export"
    _export(ckpt, out)
    printed = capsys.readouterr().out
    # a tiny model has no official source: the file holds only what we own, and says so
    assert "lacks first_stage_model.* (VAE)" in printed and "strict=True" in printed
    fresh = tiny_dynamicrafter(num_frames=3, fps=8, seed=1).eval()
    load_official(fresh.unet, out / "model.ckpt")
    for (k, a), b in zip(model.unet.state_dict().items(), fresh.unet.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(_predict(load_safetensors_export(out)), _predict(model))


def test_official_format_with_a_source_copies_its_other_entries(trained, tmp_path):
    ckpt, model = trained
    source, _ = official_checkpoint(tiny_dynamicrafter(num_frames=3, seed=1), None)
    source["first_stage_model.decoder.conv_out.bias"] = torch.randn(3)
    source["betas"] = torch.rand(1000)
    save_official(source, tmp_path / "official.ckpt")
    out = tmp_path / "export"
    _export(ckpt, out, "format=official", f"source={tmp_path / 'official.ckpt'}")
    written = read_state_dict(out / "model.ckpt")
    assert list(written) == list(source) and not (out / "config.json").exists()
    assert torch.equal(written["betas"], source["betas"])
    key = "model.diffusion_model.out.2.weight"
    assert torch.equal(written[key], model.unet.diffusion_model.out[2].weight)


def test_safetensors_format_writes_only_the_folder(trained, tmp_path):
    out = tmp_path / "export"
    _export(trained[0], out, "format=safetensors")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "image_encoder.safetensors",
        "unet.safetensors",
    ]


@pytest.mark.parametrize(
    "override, message",
    [
        ("format=onnx", "format='onnx' is out of range; allowed: null (the model's default) or "),
        ("format=diffusers", "format='diffusers': a LvdmDenoiser model exports as both, official"),
        ("source=/nowhere/model.ckpt", "source='/nowhere/model.ckpt' is not an existing file"),
    ],
)
def test_bad_options_fail_naming_them(trained, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _export(trained[0], tmp_path / "export", override)
    assert not (tmp_path / "export" / "model.ckpt").exists()
