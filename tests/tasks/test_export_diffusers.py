"""The export task on Wan and I2VGen-XL training checkpoints: diffusers pipeline folders whose
trained network loads back with ``from_pretrained`` and holds the checkpoint's weights."""

from __future__ import annotations

import pytest
import torch

from cil_lightning.config.checks import ConfigError
from cil_lightning.models.checkpoint import CONFIG_KEY
from cil_lightning.tasks.export import export

from ..conftest import compose

FAMILIES = {
    "wan": ("cil_lightning.models.wan.tiny_wan", "transformer", "WanTransformer3DModel"),
    "i2vgenxl": ("cil_lightning.models.i2vgen_xl.tiny_i2vgenxl", "unet", "I2VGenXLUNet"),
}


def _checkpoint(family: str, folder):
    """(path, trained network): a training checkpoint of the tiny model whose network weights
    moved away from its initialisation, as ``train`` writes one."""
    from hydra.utils import instantiate

    target = FAMILIES[family][0]
    model = instantiate({"_target_": target, "seed": 1}).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    path = folder / "last.ckpt"
    state = {"denoiser." + k: v for k, v in model.state_dict().items()}
    torch.save({CONFIG_KEY: {"model": {"_target_": target, "seed": 1}}, "state_dict": state}, path)
    return path, model.unet


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_export_writes_a_pipeline_whose_network_is_the_trained_one(family, tmp_path, capsys):
    import diffusers

    ckpt, unet = _checkpoint(family, tmp_path)
    out = tmp_path / "export"
    export(compose("export", [f"ckpt={ckpt}", f"out={out}"], out))
    assert "Pipeline folder to" in capsys.readouterr().out
    _, subfolder, cls = FAMILIES[family]
    loaded = getattr(diffusers, cls).from_pretrained(out / subfolder)
    expected, got = unet.state_dict(), loaded.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    with pytest.raises(ConfigError, match="exports as diffusers"):
        export(compose("export", [f"ckpt={ckpt}", f"out={tmp_path / 'x'}", "format=official"]))
