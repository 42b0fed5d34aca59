"""Full-size DynamiCrafter layout on the meta device: network and VAE against the official keys."""

from __future__ import annotations

import pytest
import torch

from cil_lightning.models.lvdm.official import (
    CheckpointKeyError,
    load_official,
    official_state_from_network,
)
from cil_lightning.models.lvdm.pretrained import (
    encoder_state_from_open_clip,
    load_dynamicrafter,
    load_official_encoders,
    load_official_vae,
    lvdm_encoders,
    lvdm_network,
    lvdm_vae,
    read_open_clip,
    vae_state_from_official,
)

from .test_unet import FIXTURES


def _official_meta_state(*names: str) -> dict[str, torch.Tensor]:
    """Meta tensors with the official keys and shapes of the given key-list fixtures."""
    state = {}
    for name in names:
        for line in (FIXTURES / name).read_text().splitlines():
            key, shape = line.split(" ", 1)
            dims = [int(d) for d in shape.strip("()").split(",") if d.strip()]
            state[key] = torch.empty(dims, device="meta")
    return state


@pytest.mark.parametrize(
    "size, keys", [(512, "keys_512.txt"), (1024, "keys_512.txt"), (256, "keys_256.txt")]
)
def test_network_exports_exactly_the_official_keys_and_loads_them(size, keys):
    official = _official_meta_state(keys)
    with torch.device("meta"):
        network = lvdm_network(size)
    exported = official_state_from_network(network)
    assert list(exported) == list(official)  # same keys, same order
    assert all(exported[k].shape == v.shape for k, v in official.items())
    load_official(network, {**official, "first_stage_model.encoder.conv_in.weight": None})


def test_official_vae_keys_convert_to_our_autoencoder_exactly():
    official = _official_meta_state("keys_vae.txt")
    with torch.device("meta"):
        vae = lvdm_vae()
    converted = vae_state_from_official(official)
    expected = vae.state_dict()
    assert set(converted) == set(expected)
    assert all(converted[k].shape == v.shape for k, v in expected.items())
    load_official_vae(vae, official, "meta.ckpt")


def test_truncated_full_size_checkpoint_fails_naming_the_key():
    official = _official_meta_state("keys_512.txt", "keys_vae.txt")
    del official["model.diffusion_model.output_blocks.11.2.transformer_blocks.0.ff.net.2.bias"]
    with torch.device("meta"):
        network, vae = lvdm_network(512), lvdm_vae()
    with pytest.raises(CheckpointKeyError, match=r"output_blocks\.11\.2\.transformer_blocks"):
        load_official(network, official, name="dc512.ckpt")
    del official["first_stage_model.decoder.mid.attn_1.q.weight"]
    with pytest.raises(CheckpointKeyError, match=r"dc512\.ckpt: missing key 'decoder\.mid_block"):
        load_official_vae(vae, official, "dc512.ckpt")


ALL_KEYS = ("keys_512.txt", "keys_vae.txt", "keys_clip.txt")


def test_encoders_hold_exactly_the_official_encoder_keys():
    official = _official_meta_state("keys_clip.txt")
    text, image = lvdm_encoders()
    ours = {f"cond_stage_model.{k}": v for k, v in text.state_dict().items()}
    ours |= {f"embedder.{k}": v for k, v in image.state_dict().items()}
    assert set(ours) == set(official)
    assert all(ours[k].shape == v.shape for k, v in official.items())


def test_whole_official_checkpoint_loads_and_a_missing_encoder_key_is_named():
    official = _official_meta_state(*ALL_KEYS)
    official["scale_arr"] = torch.empty(1400, device="meta")  # other buffers are ignored
    network, vae, text, _ = load_dynamicrafter(official, size=512)
    assert network.diffusion_model.out[2].weight.shape == (4, 320, 3, 3)
    assert text.model.attn_mask.shape == (77, 77) and text.model.attn_mask.device.type == "cpu"
    del official["embedder.model.visual.transformer.resblocks.31.mlp.c_proj.bias"]
    with pytest.raises(CheckpointKeyError, match=r"missing key 'embedder\.model\.visual"):
        load_dynamicrafter(official, size=512)


def test_an_open_clip_vit_h_14_maps_onto_exactly_the_official_encoder_keys():
    """The laion2b ViT-H-14 open_clip file (its CLIP state dict, here on the meta device) gives
    the official ``cond_stage_model.*`` and ``embedder.*`` entries, no more, no less."""
    import open_clip
    from open_clip.model import CLIP

    with torch.device("meta"):
        clip = CLIP(**open_clip.get_model_config("ViT-H-14"))
    mapped = encoder_state_from_open_clip(clip.state_dict())
    official = _official_meta_state("keys_clip.txt")
    assert set(mapped) == set(official)
    assert all(mapped[k].shape == v.shape for k, v in official.items())


def test_encoders_load_from_a_local_open_clip_folder(tmp_path):
    """A folder as laion ships it: both towers take its weights (outputs equal the source CLIP's
    towers); a folder without the file and a file without a key fail naming them."""
    import copy

    from open_clip.model import CLIP

    from cil_lightning.models.lvdm.encoders import OpenCLIPImageTokens, OpenCLIPTextContext

    vision = dict(image_size=32, patch_size=16, width=32, layers=2, head_width=16)
    text_cfg = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=3)
    torch.manual_seed(0)
    source = CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text_cfg).eval()
    with pytest.raises(FileNotFoundError, match="open_clip_model.safetensors or open_clip_pytorch"):
        read_open_clip(tmp_path)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")
    fresh = CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text_cfg)  # other random weights
    text, image = OpenCLIPTextContext(copy.deepcopy(fresh)), OpenCLIPImageTokens(fresh, 32)
    mapped, where = read_open_clip(tmp_path)
    assert where.endswith("open_clip_pytorch_model.bin")
    load_official_encoders(text, image, mapped, where, assign=False)
    captions, frames = ["a dog runs on a beach"], torch.rand(1, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(
            text.eval()(captions), OpenCLIPTextContext(copy.deepcopy(source))(captions)
        )
        torch.testing.assert_close(
            image.eval()(frames), OpenCLIPImageTokens(copy.deepcopy(source), 32)(frames)
        )
    del state["ln_final.weight"]
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")
    mapped, where = read_open_clip(tmp_path)
    with pytest.raises(CheckpointKeyError, match=r"cond_stage_model\.model\.ln_final\.weight"):
        load_official_encoders(text, image, mapped, where, assign=False)
