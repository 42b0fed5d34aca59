"""Our open_clip 3.x encoders against DynamiCrafter's (open_clip 2.22 + kornia) on a tiny CLIP.

The tiny CLIP's weights are a function of each key (``weights.det_state``, as in
tests/fixtures/lvdm/make_encoder_fixtures.py), so only inputs' seeds and outputs are stored.
"""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from cil_lightning.models.lvdm.encoders import OpenCLIPImageTokens, OpenCLIPTextContext

from .test_unet import FIXTURES
from .weights import det_state

open_clip = pytest.importorskip("open_clip")

VISION = dict(image_size=224, patch_size=14, width=32, layers=2, head_width=16)
TEXT = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=3)
CAPTIONS = ["a red car drives along a coastal road at sunset", ""]


@pytest.fixture(scope="module")
def setup():
    from open_clip.model import CLIP

    clip = CLIP(embed_dim=16, vision_cfg=VISION, text_cfg=TEXT)
    clip.load_state_dict(det_state(clip))  # strict: open_clip 3.x has the 2.22 key set
    io = load_file(FIXTURES / "encoders_io.safetensors")
    return clip.eval(), io


@torch.no_grad()
def test_text_context_reproduces_the_official_penultimate_layer(setup):
    clip, io = setup
    encoder = OpenCLIPTextContext(copy.deepcopy(clip)).eval()
    tokens = encoder.tokenizer(CAPTIONS)
    assert torch.equal(tokens, io["tokens"])  # the bundled vocabulary tokenises as 2.22 did
    out = encoder(CAPTIONS)
    assert out.shape == (2, 77, 32)
    assert (out - io["text_out"]).abs().max() < 1e-5
    # the last block matters: skipping none differs (so the penultimate choice is checked)
    assert (
        OpenCLIPTextContext(copy.deepcopy(clip), skip_last=0)(CAPTIONS) - out
    ).abs().max() > 1e-3


@torch.no_grad()
def test_image_tokens_reproduce_the_official_vision_tokens(setup):
    clip, io = setup
    frames = torch.rand(2, 3, 320, 512, generator=torch.Generator().manual_seed(5)) * 2 - 1
    assert float(frames.double().sum()) == pytest.approx(float(io["frames_sum"]), abs=1e-6)
    encoder = OpenCLIPImageTokens(copy.deepcopy(clip)).eval()
    out = encoder(frames)
    assert out.shape == (2, 257, 32)
    assert (out - io["image_out"]).abs().max() < 1e-5
    # the checkpoints' embedder.model.* keeps the text embeddings but not the text transformer
    keys = encoder.state_dict()
    assert "model.token_embedding.weight" in keys
    assert not any(k.startswith("model.transformer.") for k in keys)
