"""VideoCrafter1-I2V adapter: the reference UNet's outputs, eps -> x0 on the rescaled schedule,
TimeNoise on the image context only, the official key set, and the configs end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from cil_lightning.config.checks import ConfigError, validate
from cil_lightning.diffusion.cond_noise import NoCondNoise, TimeNoise
from cil_lightning.models.lvdm.denoiser import LvdmCondition, LvdmNetwork
from cil_lightning.models.lvdm.official import CheckpointKeyError, official_state_from_network
from cil_lightning.models.lvdm.resampler import Resampler
from cil_lightning.models.lvdm.unet import LvdmUNet
from cil_lightning.models.lvdm.videocrafter import (
    VideoCrafterDenoiser,
    load_videocrafter,
    tiny_videocrafter,
    videocrafter,
    videocrafter_network,
    videocrafter_schedule,
)

from ...conftest import compose
from ...conftest import run_ok as cli
from .test_pretrained import _official_meta_state
from .test_train_tiny import train_tiny
from .test_unet import FIXTURES
from .weights import det_state


@pytest.fixture(scope="module")
def tiny():
    return tiny_videocrafter(num_frames=3)


def _reference_schedule(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sqrt(abar_t), sqrt(1 - abar_t) and scale_arr[t] from the VideoCrafter1 config's numbers:
    lvdm "linear" betas (linspace of sqrt, squared), no zero-SNR rescale; scale_arr = linspace(1,
    0.7, 400) then 0.7 (1400 entries)."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    abar = torch.tensor(np.cumprod(1 - betas))
    arr = torch.tensor(np.concatenate([np.linspace(1.0, 0.7, 400), np.full(1000, 0.7)]))
    i = t.long()
    return abar[i].sqrt(), (1 - abar[i]).sqrt(), arr[i]


def _cond(b: int, g: torch.Generator, q: int = 4, d: int = 32) -> LvdmCondition:
    return LvdmCondition(
        latent=torch.randn(b, 4, 2, 2, generator=g),
        text=torch.ones(b, 77, d),
        tokens=torch.ones(b, 5, 48),
        null_text=torch.zeros(b, 77, d),
        null_tokens=torch.zeros(b, 5, 48),
        fs=torch.full((b,), 8),
    )


@torch.no_grad()
def test_adapter_reproduces_the_reference_unet_on_the_vc1_fixture(tiny):
    """The tiny reference VideoCrafter1 UNet (tests/fixtures/lvdm/NOTE.md) inside our adapter:
    x_t alone into the UNet (4 channels), text + image context, fps; the adapter's x0 is the
    fixture's eps output turned into x0 on the rescaled schedule."""
    unet = LvdmUNet(
        in_channels=4, out_channels=4, model_channels=64, channel_mult=(1, 1), num_res_blocks=1,
        attention_resolutions=(1, 2), num_head_channels=8, context_dim=16, default_fs=16,
    ).eval()  # fmt: skip
    unet.load_state_dict(det_state(unet), strict=True)
    proj = Resampler(dim=16, depth=1, dim_head=8, heads=2, num_queries=16, embedding_dim=8,
                     output_dim=16, video_length=None)  # fmt: skip
    adapter = VideoCrafterDenoiser(
        LvdmNetwork(unet, proj), tiny.vae, tiny.image_encoder, torch.zeros(77, 16),
        videocrafter_schedule(),
    )  # fmt: skip
    io = load_file(FIXTURES / "vc1_tiny_io.safetensors")
    text, image = io["context"][:, :77], io["context"][:, 77:]
    cond = LvdmCondition(
        latent=torch.zeros(2, 4, 8, 8), text=text, tokens=torch.zeros(2, 3, 8),
        null_text=text, null_tokens=torch.zeros(2, 3, 8), fs=io["fps"], image_replace=image,
    )  # fmt: skip
    x, t = io["x"].transpose(1, 2), io["t"].float()  # [B, F, C, h, w]
    x0 = adapter(x, t, cond)
    a, s, scale = (v.float().view(-1, 1, 1, 1, 1) for v in _reference_schedule(io["t"]))
    expected = (x - s * io["out"].transpose(1, 2)) / (a * scale)
    # x0 divides eps by alpha s (about 0.07 at t = 803): compare in eps units
    assert ((x0 - expected) * a * scale).abs().max() < 1e-5
    # the fps reaches the output (so the match checks it)
    other = adapter(x, t, LvdmCondition(**{**vars(cond), "fs": io["fps"] + 7}))
    assert ((other - x0) * a * scale).abs().max() > 1e-3


class _Oracle(nn.Module):
    """Returns a fixed eps in the UNet's [B, C, F, h, w] and records its inputs."""

    def __init__(self, eps: torch.Tensor):
        super().__init__()
        self.eps, self.seen = eps, []

    def forward(self, inp, t, text, tokens, fs, image_noise=None, image_replace=None):
        self.seen.append((inp, fs, image_noise))
        return self.eps.transpose(1, 2)


def test_x0_from_eps_in_closed_form_on_the_rescaled_schedule(tiny):
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(3, 2, 4, 4, 4, generator=g), torch.randn(3, 2, 4, 4, 4, generator=g)
    t = torch.tensor([20.0, 399.0, 900.0])
    oracle = _Oracle(eps)
    d = VideoCrafterDenoiser(oracle, tiny.vae, tiny.image_encoder, tiny.null_text,
                             videocrafter_schedule())  # fmt: skip
    out = d(x, t, _cond(3, g))
    a, s, scale = (v.float().view(-1, 1, 1, 1, 1) for v in _reference_schedule(t))
    torch.testing.assert_close(out, (x - s * eps) / (a * scale), rtol=1e-5, atol=1e-5)
    inp, fs, _ = oracle.seen[0]
    assert torch.equal(inp, x.transpose(1, 2))  # no concat latent: x_t alone, 4 channels
    assert fs.tolist() == [8, 8, 8]
    # and eps with zero terminal SNR is refused (alpha_T = 0)
    with pytest.raises(ValueError, match="zero terminal SNR"):
        VideoCrafterDenoiser(
            oracle, tiny.vae, tiny.image_encoder, tiny.null_text,
            type(videocrafter_schedule())(prediction="eps", rescale_zero_terminal_snr=True),
        )  # fmt: skip


def test_timenoise_lands_on_the_image_context_only(tiny):
    """beta = 100 sigmoid(2 t^5 - 1 + n), n ~ N(0, 1), then eps [B, Q, D], both from the given
    generator, recomputed here in closed form; concat absent, text and tokens untouched."""
    B, t_norm = 4, torch.tensor([0.0, 0.5, 0.9, 1.0])
    cond = _cond(B, torch.Generator().manual_seed(1))
    tiny.uncond_prob = 0.0
    try:
        out = tiny.training_condition(
            cond, t_norm, TimeNoise(beta_m=100.0, a=5.0), torch.Generator().manual_seed(7)
        )
    finally:
        tiny.uncond_prob = 0.2
    g = torch.Generator().manual_seed(7)
    beta = 100.0 * torch.sigmoid(2 * t_norm**5 - 1 + torch.randn(B, generator=g))
    expected = beta.view(-1, 1, 1) * torch.randn(B, 4, 32, generator=g)
    torch.testing.assert_close(out.image_noise, expected)
    assert out.concat is None and out.image_replace is None
    assert torch.equal(out.text, cond.text) and torch.equal(out.tokens, cond.tokens)
    assert torch.equal(out.latent, cond.latent) and torch.equal(out.fs, cond.fs)
    clean = tiny.training_condition(cond, t_norm, NoCondNoise(), torch.Generator())
    assert not clean.image_noise.any() and clean.concat is None


def test_cfg_dropout_is_the_reference_default_and_train_fps_replaces_the_batch_fps():
    """uncond_prob 0.2 (train.yaml sets none): 20 % text only, 20 % both, 20 % image only."""
    model = tiny_videocrafter(num_frames=3, train_fps=16)
    n, g = 20000, torch.Generator().manual_seed(2)
    out = model.training_condition(_cond(n, g), torch.zeros(n), NoCondNoise(), g)
    no_text, no_image = out.text[:, 0, 0] == 0, out.tokens[:, 0, 0] == 0
    for frac in [(no_text & ~no_image), (no_text & no_image), (~no_text & no_image)]:
        assert abs(float(frac.float().mean()) - 0.2) < 0.015
    assert float((~no_text & ~no_image).float().mean()) == pytest.approx(0.4, abs=0.015)
    assert set(out.fs.tolist()) == {16}  # the batch fed 8


def test_only_the_unet_trains_by_default():
    model = tiny_videocrafter(num_frames=3)
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in model.unet.diffusion_model.parameters()}
    both = tiny_videocrafter(num_frames=3, train_image_proj=True)
    assert len(both.trainable_parameters()) > len(model.trainable_parameters())


def _vc1_official_state() -> dict[str, torch.Tensor]:
    """DynamiCrafter 512's official keys as VideoCrafter1's (NOTE.md): conv_in takes 4 channels,
    the Resampler has 16 queries instead of 16 x 16 frames; VAE and encoders the same."""
    state = _official_meta_state("keys_512.txt", "keys_vae.txt", "keys_clip.txt")
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.empty(
        320, 4, 3, 3, device="meta"
    )
    state["image_proj_model.latents"] = torch.empty(1, 16, 1024, device="meta")
    state["scale_arr"] = torch.empty(1400, device="meta")  # schedule buffers are ignored
    return state


def test_full_size_network_has_the_official_key_set_and_loads_strictly():
    with torch.device("meta"):
        network = videocrafter_network()
    state = _vc1_official_state()
    ours = {k: tuple(v.shape) for k, v in official_state_from_network(network).items()}
    theirs = {
        k: tuple(v.shape)
        for k, v in state.items()
        if k.startswith(("model.diffusion_model.", "image_proj_model."))
    }
    assert ours == theirs
    network, vae, text, image = load_videocrafter(state)
    assert network.diffusion_model.default_fs == 16
    assert network.image_proj_model.latents.shape == (1, 16, 1024)
    # a DynamiCrafter 512 checkpoint is not VideoCrafter1: conv_in's width is named
    dc = _official_meta_state("keys_512.txt", "keys_vae.txt", "keys_clip.txt")
    with pytest.raises(CheckpointKeyError, match=r"input_blocks\.0\.0\.weight.*\(320, 8, 3, 3\)"):
        load_videocrafter(dc)
    del state["embedder.model.visual.transformer.resblocks.31.mlp.c_proj.bias"]
    with pytest.raises(CheckpointKeyError, match=r"missing key 'embedder\.model\.visual"):
        load_videocrafter(state)


def test_reference_experiment_without_weights_fails_early_naming_model_ckpt(tmp_path):
    cfg = compose(
        "train",
        ["+experiment=videocrafter_timenoise", f"data.root={tmp_path}",
         f"paths.weights_dir={tmp_path / 'weights'}"],
    )  # fmt: skip
    assert cfg.model._target_.endswith("videocrafter.videocrafter")
    with pytest.raises(ConfigError, match=r"model\.ckpt='.*VideoCrafter1_I2V_512/model\.ckpt' is"):
        validate(cfg, inputs=True)
    with pytest.raises(FileNotFoundError, match=r"model\.ckpt"):
        videocrafter(tmp_path / "weights" / "VideoCrafter1_I2V_512" / "model.ckpt")


def test_tiny_experiment_takes_a_training_step_through_its_configs():
    """The composed videocrafter_tiny_timenoise model and loss: a finite loss whose gradient
    reaches the UNet and not the frozen Resampler."""
    from hydra.utils import instantiate

    from cil_lightning.diffusion.loss import DenoisingLoss

    cfg = compose("train", ["+experiment=videocrafter_tiny_timenoise", "data.num_frames=2"])
    model, law = instantiate(cfg.model), instantiate(cfg.cond_noise)
    assert isinstance(model, VideoCrafterDenoiser) and model.train_fps == 16 and law.beta_m == 100
    g = torch.Generator().manual_seed(3)
    video = torch.rand(2, 2, 3, 32, 32, generator=g) * 2 - 1
    x0 = model.encode_video(video, generator=g)
    loss = DenoisingLoss(law)(model, x0, model.encode_condition(video[:, 0]), g)
    loss.mean().backward()
    assert torch.isfinite(loss).all()
    # lvdm zero-initialises the output layers: the first step's gradient is theirs
    assert model.unet.diffusion_model.out[2].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.unet.image_proj_model.parameters())


@pytest.mark.slow  # about 2 minutes on the shared CPU
def test_tiny_videocrafter_trains_samples_and_diagnoses_through_the_cli(tmp_path):
    run = tmp_path / "run"
    train_tiny("videocrafter_tiny_timenoise", run)
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["cil_lightning_config"]["model"]["_target_"].endswith("tiny_videocrafter")
    assert "denoiser.unet.diffusion_model.input_blocks.0.0.weight" in ckpt["state_dict"]
    conv_in = ckpt["state_dict"]["denoiser.unet.diffusion_model.input_blocks.0.0.weight"]
    assert conv_in.shape[1] == 4  # x_t alone: no concat channels
    Image.new("RGB", (40, 40), (10, 90, 220)).save(tmp_path / "blue.png")
    cli("sample", f"images={tmp_path / 'blue.png'}", f"ckpt={last}", "sampler=ddim",
        "sampler.num_steps=2", f"hydra.run.dir={tmp_path / 'sample'}")  # fmt: skip
    assert (tmp_path / "sample" / "blue_seed0.mp4").exists()
    cli("diagnose", f"ckpt={last}", "sampler=ddim", "sampler.num_steps=2", "data.num_frames=4",
        "num_clips=2", "num_levels=2", "M=[500]", f"hydra.run.dir={tmp_path / 'diag'}")  # fmt: skip
    assert (tmp_path / "diag" / "summary.json").exists()
