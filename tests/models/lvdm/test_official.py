"""Loading official-layout lvdm weights: prefixes, the 256 rename, errors naming the key."""

from __future__ import annotations

import pytest
import torch

from cil_lightning.models.lvdm.denoiser import LvdmNetwork
from cil_lightning.models.lvdm.official import (
    CheckpointKeyError,
    load_official,
    official_state_from_network,
)

from .test_unet import PROJ_PREFIX, UNET_PREFIX, _tiny
from .weights import det_state


def _network():
    unet, resampler, io = _tiny()
    fresh_unet, fresh_resampler, _ = _tiny()
    for p in (*fresh_unet.parameters(), *fresh_resampler.parameters()):
        p.data.zero_()
    return LvdmNetwork(unet, resampler), LvdmNetwork(fresh_unet, fresh_resampler), io


def _official_file():
    """The tiny weights under the official prefixes, with other entries a real .ckpt carries."""
    unet, resampler, _ = _tiny()
    state = {UNET_PREFIX + k: v for k, v in det_state(unet).items()}
    state |= {PROJ_PREFIX + k: v for k, v in det_state(resampler).items()}
    state["first_stage_model.encoder.conv_in.weight"] = torch.zeros(1)
    state["scale_arr"] = torch.ones(1400)
    return state


def test_official_state_dict_loads_and_reproduces_the_official_output(tmp_path):
    _, net, io = _network()
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": _official_file()}, path)
    load_official(net, path).eval()
    with torch.no_grad():
        unet_out = net.diffusion_model(io["x"], io["t"], io["context"], fs=io["fs"])
        tokens = net.image_proj_model(io["clip_tokens"])
    assert (unet_out - io["out"]).abs().max() < 1e-5
    assert (tokens - io["resampler_out"]).abs().max() < 1e-5


def test_round_trip_through_the_official_layout():
    reference, net, _ = _network()
    exported = official_state_from_network(reference)
    assert set(exported) == {
        k for k in _official_file() if k.startswith((UNET_PREFIX, PROJ_PREFIX))
    }
    load_official(net, exported)
    for (k, a), b in zip(reference.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k


def test_framestride_embed_of_the_256_model_is_renamed():
    _, net, _ = _network()
    state = {
        k.replace("fps_embedding.", "framestride_embed."): v for k, v in _official_file().items()
    }
    assert any("framestride_embed." in k for k in state)
    load_official(net, state)
    expected = _official_file()["model.diffusion_model.fps_embedding.0.weight"]
    assert torch.equal(net.diffusion_model.fps_embedding[0].weight, expected)


def test_truncated_checkpoint_fails_naming_the_first_missing_key_and_file(tmp_path):
    _, net, _ = _network()
    state = _official_file()
    del state["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k_ip.weight"]
    del state["image_proj_model.latents"]
    path = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointKeyError) as err:
        load_official(net, path)
    msg = str(err.value)
    assert "input_blocks.1.1.transformer_blocks.0.attn2.to_k_ip.weight" in msg
    assert "truncated.ckpt" in msg and "2 of" in msg


def test_unexpected_key_and_wrong_shape_fail_by_name():
    _, net, _ = _network()
    state = _official_file()
    state["model.diffusion_model.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointKeyError, match="unexpected key 'model.diffusion_model.extra"):
        load_official(net, state, name="x.ckpt")
    state = _official_file()
    state["image_proj_model.proj_in.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointKeyError, match="image_proj_model.proj_in.weight' has shape"):
        load_official(net, state)


def test_missing_or_unreadable_file_is_named(tmp_path):
    _, net, _ = _network()
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*absent.ckpt"):
        load_official(net, tmp_path / "absent.ckpt")
    (tmp_path / "cut.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointKeyError, match="cut.ckpt: not a readable checkpoint"):
        load_official(net, tmp_path / "cut.ckpt")


def test_export_writes_an_official_file_with_the_new_weights_and_the_rest_kept(tmp_path):
    from cil_lightning.models.lvdm.official import export_official, read_state_dict

    source = tmp_path / "official.ckpt"
    torch.save({"state_dict": _official_file()}, source)
    trained, fresh, _ = _network()
    load_official(trained, source)
    with torch.no_grad():
        trained.diffusion_model.out[2].bias.add_(1.0)  # "fine-tuning"
    out = export_official(trained, source, tmp_path / "export" / "model.ckpt")
    written = read_state_dict(out)
    original = read_state_dict(source)
    assert set(written) == set(original)
    assert torch.equal(written["scale_arr"], original["scale_arr"])
    key = "model.diffusion_model.out.2.bias"
    assert torch.equal(written[key], original[key] + 1.0)
    load_official(fresh, out)
    for a, b in zip(trained.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
