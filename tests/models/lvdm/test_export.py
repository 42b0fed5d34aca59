"""Exporting an lvdm adapter: official-layout .ckpt and safetensors folder, round trips to
identical predictions, the full-size official key set, and corrupted exports named by key."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from cil_lightning.models.lvdm.export import (
    FROM_SOURCE,
    load_safetensors_export,
    official_checkpoint,
    write_official,
    write_safetensors,
)
from cil_lightning.models.lvdm.official import (
    CheckpointKeyError,
    load_official,
    read_state_dict,
    save_official,
)
from cil_lightning.models.lvdm.pretrained import lvdm_encoders, lvdm_network, lvdm_vae
from cil_lightning.models.lvdm.tiny import tiny_dynamicrafter

from .test_pretrained import _official_meta_state
from .weights import det_state

#: the tiny model as the run config names it (rebuilds it, weights from seed 0)
TINY_CFG = {
    "_target_": "cil_lightning.models.lvdm.tiny.tiny_dynamicrafter",
    "num_frames": 3,
    "fps": 8,
    "seed": 1,  # the trained model's: the frozen VAE and the null text come from it
}
#: DDPM.register_schedule's persistent buffers of the official LatentVisualDiffusion
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)  # fmt: skip


@pytest.fixture(scope="module")
def trained():
    """A "fine-tuned" tiny model: every network weight non-zero (the zero-initialised output
    layer included, so predictions depend on the network) and unlike a fresh seed-0 build."""
    model = tiny_dynamicrafter(num_frames=3, fps=8, seed=1).eval()
    model.unet.load_state_dict(det_state(model.unet))
    return model


@pytest.fixture(scope="module")
def inputs(trained):
    g = torch.Generator().manual_seed(3)
    image = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    x_t = torch.randn(2, 3, 4, 16, 16, generator=g)
    return image, x_t, torch.tensor([120.0, 870.0])


def _predict(denoiser, inputs):
    image, x_t, t = inputs
    with torch.no_grad():
        return denoiser(x_t, t, denoiser.encode_condition(image))


def test_official_export_without_source_loads_strictly_and_predicts_identically(
    trained, inputs, tmp_path
):
    path = tmp_path / "model.ckpt"
    missing = write_official(trained, path, source=None)
    assert missing[:2] == list(FROM_SOURCE[:2]) and "embedder.*" in missing[2]
    fresh = tiny_dynamicrafter(num_frames=3, fps=8, seed=1).eval()  # untrained network
    assert not torch.equal(_predict(fresh, inputs), _predict(trained, inputs))
    load_official(fresh.unet, path)
    assert torch.equal(_predict(fresh, inputs), _predict(trained, inputs))


def test_official_export_keeps_every_source_entry_and_replaces_the_network(trained, tmp_path):
    source_model = tiny_dynamicrafter(num_frames=3, fps=8, seed=0)
    source, _ = official_checkpoint(source_model, None)
    source["first_stage_model.encoder.conv_in.weight"] = torch.randn(3)
    source["scale_arr"] = torch.linspace(1, 0.7, 1400)
    source_path = save_official(source, tmp_path / "official.ckpt")
    missing = write_official(trained, tmp_path / "out.ckpt", source_path)
    written = read_state_dict(tmp_path / "out.ckpt")
    assert missing == [] and list(written) == list(source)
    for key in ("first_stage_model.encoder.conv_in.weight", "scale_arr"):
        assert torch.equal(written[key], source[key])
    key = "model.diffusion_model.out.2.weight"
    assert torch.equal(written[key], trained.unet.diffusion_model.out[2].weight)
    assert not torch.equal(written[key], source[key])


def test_source_of_another_configuration_fails_naming_the_key(trained, tmp_path):
    source, _ = official_checkpoint(trained, None)
    del source["image_proj_model.latents"]
    save_official(source, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointKeyError, match=r"other\.ckpt: has no key 'image_proj_model\.lat"):
        write_official(trained, tmp_path / "out.ckpt", tmp_path / "other.ckpt")
    source, _ = official_checkpoint(trained, None)
    source["model.diffusion_model.extra.weight"] = torch.zeros(1)
    save_official(source, tmp_path / "more.ckpt")
    with pytest.raises(CheckpointKeyError, match=r"has key 'model\.diffusion_model\.extra\.weight"):
        write_official(trained, tmp_path / "out.ckpt", tmp_path / "more.ckpt")


def test_corrupted_official_export_fails_loading_naming_the_key(trained, tmp_path):
    path = tmp_path / "model.ckpt"
    write_official(trained, path, source=None)
    state = read_state_dict(path)
    key = "model.diffusion_model.input_blocks.3.1.transformer_blocks.0.attn2.to_k_ip.weight"
    del state[key]
    save_official(state, path)
    fresh = tiny_dynamicrafter(num_frames=3, seed=0)
    with pytest.raises(CheckpointKeyError) as err:
        load_official(fresh.unet, path)
    assert str(err.value).startswith(f"{path}: missing key {key!r}")


def test_safetensors_folder_rebuilds_the_adapter_with_identical_predictions(
    trained, inputs, tmp_path
):
    write_safetensors(trained, tmp_path, TINY_CFG)
    config = json.loads((tmp_path / "config.json").read_text())
    # the tiny model's image encoder trains, so it is stored next to the network
    assert config["modules"] == {
        "unet": "unet.safetensors",
        "image_encoder": "image_encoder.safetensors",
    }
    loaded = load_safetensors_export(tmp_path)
    assert loaded.fps == 8.0
    assert torch.equal(_predict(loaded, inputs), _predict(trained, inputs))


def test_corrupted_safetensors_folder_fails_naming_the_key_and_file(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    write_safetensors(trained, tmp_path, TINY_CFG)
    state = load_file(tmp_path / "unet.safetensors")
    del state["image_proj_model.proj_in.weight"]
    save_file(state, tmp_path / "unet.safetensors")
    with pytest.raises(
        CheckpointKeyError, match=r"unet\.safetensors: missing key 'image_proj_model\.proj_in"
    ):
        load_safetensors_export(tmp_path)


def _meta_model(size: int):
    """A full-size adapter's exported parts on the meta device (network, VAE, image tower)."""
    with torch.device("meta"):
        network, vae = lvdm_network(size), lvdm_vae()
    _, image = lvdm_encoders()
    return SimpleNamespace(unet=network, vae=vae.requires_grad_(False), image_encoder=image)


@pytest.mark.parametrize("size, keys", [(512, "keys_512.txt"), (256, "keys_256.txt")])
def test_full_size_export_has_exactly_the_official_state_dict_keys(size, keys):
    source = _official_meta_state(keys, "keys_vae.txt", "keys_clip.txt")
    source |= {k: torch.empty(1000, device="meta") for k in SCHEDULE_BUFFERS}
    if size == 256:  # the 256 file spells the fps embedding so
        source = {k.replace("fps_embedding.", "framestride_embed."): v for k, v in source.items()}
    else:
        source["scale_arr"] = torch.empty(1400, device="meta")
    model = _meta_model(size)
    state, missing = official_checkpoint(model, source)
    expected = {k.replace("framestride_embed.", "fps_embedding.") for k in source}
    assert missing == [] and set(state) == expected and len(state) == len(source)
    # network and image-tower entries are the model's tensors, the rest the source's
    for key in ("model.diffusion_model.out.2.weight", "embedder.model.visual.proj"):
        assert state[key] is not source[key]
    for key in (
        "first_stage_model.encoder.conv_in.weight",
        "betas",
        "cond_stage_model.model.ln_final.bias",
    ):
        assert state[key] is source[key]
    # what we own alone: the network's and the image tower's official names
    owned, missing = official_checkpoint(model, None)
    assert set(owned) == {
        k for k in expected if k.startswith(("model.", "image_proj_model.", "embedder."))
    }
    assert missing == list(FROM_SOURCE)
