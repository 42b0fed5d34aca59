"""The DynamiCrafter adapter: parameterisation, condition noise, CFG dropout, encode/decode."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cil_lightning.diffusion.cond_noise import NoCondNoise, TimeNoise
from cil_lightning.diffusion.schedules import VPSchedule
from cil_lightning.models.lvdm.denoiser import LvdmCondition, LvdmDenoiser
from cil_lightning.models.lvdm.tiny import tiny_dynamicrafter


@pytest.fixture(scope="module")
def tiny():
    return tiny_dynamicrafter(num_frames=3)


class _Oracle(nn.Module):
    """Returns the exact eps or v target of known (x0, eps), in the UNet's [B, C, F, h, w]."""

    def __init__(self, x0, eps, schedule):
        super().__init__()
        self.x0, self.eps, self.schedule = x0, eps, schedule
        self.seen = []

    def forward(self, inp, t, text, tokens, fs, *image):
        self.seen.append((inp, t, fs))
        alpha, sigma = (a.view(-1, 1, 1, 1, 1) for a in self.schedule.alpha_sigma(t))
        if self.schedule.prediction == "eps":
            return self.eps.transpose(1, 2)
        return (alpha * self.eps - sigma * self.x0).transpose(1, 2)


@pytest.mark.parametrize(
    "prediction, ztsnr", [("eps", False), ("v", True), ("v", False)], ids=["eps", "v_ztsnr", "v"]
)
def test_exact_network_output_gives_back_x0(tiny, prediction, ztsnr):
    schedule = VPSchedule(prediction=prediction, rescale_zero_terminal_snr=ztsnr)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 4, 8, 8, generator=g), torch.randn(2, 3, 4, 8, 8, generator=g)
    t = torch.tensor([5.0, 900.0])
    x_t = schedule.add_noise(x0, t, eps)
    oracle = _Oracle(x0, eps, schedule)
    d = LvdmDenoiser(oracle, tiny.vae, tiny.image_encoder, tiny.null_text, schedule)
    cond = LvdmCondition(
        latent=torch.randn(2, 4, 8, 8, generator=g),
        text=torch.zeros(2, 77, 1),
        tokens=torch.zeros(2, 1, 1),
        null_text=torch.zeros(2, 77, 1),
        null_tokens=torch.zeros(2, 1, 1),
        fs=torch.tensor([3, 24]),
    )
    torch.testing.assert_close(d(x_t, t, cond), x0, atol=1e-4, rtol=1e-4)
    inp, t_seen, fs = oracle.seen[0]
    # channels: the noisy latent, then the condition latent repeated on every frame
    assert inp.shape == (2, 8, 3, 8, 8)
    assert torch.equal(inp[:, :4], x_t.transpose(1, 2))
    assert torch.equal(inp[:, 4:], cond.latent[:, :, None].expand(-1, -1, 3, -1, -1))
    assert torch.equal(t_seen, t) and torch.equal(fs, cond.fs)


def test_eps_prediction_with_zero_terminal_snr_is_refused(tiny):
    with pytest.raises(ValueError, match="zero terminal SNR"):
        LvdmDenoiser(
            tiny.unet, tiny.vae, tiny.image_encoder, tiny.null_text,
            VPSchedule(prediction="eps", rescale_zero_terminal_snr=True),
        )  # fmt: skip


def _cond(b: int, g: torch.Generator) -> LvdmCondition:
    return LvdmCondition(
        latent=torch.randn(b, 4, 2, 2, generator=g),
        text=torch.ones(b, 77, 2),
        tokens=torch.ones(b, 5, 3),
        null_text=torch.zeros(b, 77, 2),
        null_tokens=torch.zeros(b, 5, 3),
        fs=torch.full((b,), 24),
    )


def test_condition_noise_is_independent_for_each_frame_copy(tiny):
    g = torch.Generator().manual_seed(1)
    cond = _cond(64, g)
    tiny.uncond_prob = 0.0
    law = TimeNoise(beta_m=100.0, a=5.0)
    noised = tiny.training_condition(cond, torch.full((64,), 0.9), law, g)
    assert noised.concat.shape == (64, 3, 4, 2, 2)
    diff = noised.concat - cond.latent[:, None]
    # three different draws per sample, each with the sample's beta: equal spread per frame
    assert not torch.allclose(diff[:, 0], diff[:, 1])
    per_frame_std = diff.std(dim=(2, 3, 4))  # [B, F]
    ratio = per_frame_std[:, 0] / per_frame_std[:, 1]
    assert 0.5 < ratio.median() < 2.0
    clean = tiny.training_condition(cond, torch.full((64,), 0.9), NoCondNoise(), g)
    assert torch.equal(clean.concat, cond.latent[:, None].expand(-1, 3, -1, -1, -1))
    assert torch.equal(clean.tokens, cond.tokens)  # DynamiCrafter: tokens not noised


def test_cfg_dropout_matches_the_reference_proportions(tiny):
    """u < 2p: no text; p <= u < 3p: zero-image tokens; so 5 % text only, both, image only."""
    n, g = 20000, torch.Generator().manual_seed(2)
    tiny.uncond_prob = 0.05
    out = tiny.training_condition(_cond(n, g), torch.zeros(n), NoCondNoise(), g)
    no_text, no_image = out.text[:, 0, 0] == 0, out.tokens[:, 0, 0] == 0
    for frac, expected in [
        ((no_text & ~no_image).float().mean(), 0.05),
        ((no_text & no_image).float().mean(), 0.05),
        ((~no_text & no_image).float().mean(), 0.05),
    ]:
        assert abs(float(frac) - expected) < 0.006
    # the concat latent is never dropped, as the reference keeps c_concat
    assert torch.equal(out.concat[:, 0], out.latent)


def test_unconditional_swaps_text_and_tokens_only():
    cond = _cond(2, torch.Generator().manual_seed(3))
    un = cond.unconditional()
    assert torch.equal(un.text, cond.null_text) and torch.equal(un.tokens, cond.null_tokens)
    assert un.latent is cond.latent
    assert cond.repeat(3).latent.shape[0] == 6


def test_encode_decode_and_condition_shapes(tiny):
    video = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    z = tiny.encode_video(video, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 3, 4, 16, 16)
    assert tiny.decode_video(z).shape == video.shape
    cond = tiny.encode_condition(video[:, 0], fps=torch.tensor([8.4, 10.0]), num_frames=3)
    assert cond.latent.shape == (2, 4, 16, 16) and cond.tokens.shape == (2, 16, 48)
    assert cond.fs.tolist() == [8, 10] and cond.text.shape == (2, 77, 32)
    x0_hat = tiny(z, torch.tensor([10.0, 500.0]), cond)
    assert x0_hat.shape == z.shape and torch.isfinite(x0_hat).all()


def test_clip_type_2_replaces_the_image_context_by_noise_per_batch(tiny):
    g = torch.Generator().manual_seed(4)
    cond = _cond(3, g)
    tiny.uncond_prob, tiny.image_noise = 0.0, "replace"
    try:
        tiny.replace_prob = 1.0
        out = tiny.training_condition(cond, torch.zeros(3), NoCondNoise(), g)
        assert out.image_replace.shape == (3, 4 * 3, 32)  # Q = 4 queries x 3 frames, D = 32
        assert 0.8 < float(out.image_replace.std()) < 1.2 and out.image_noise is None
        tiny.replace_prob = 0.0
        assert tiny.training_condition(cond, torch.zeros(3), NoCondNoise(), g).image_replace is None
    finally:
        tiny.image_noise, tiny.replace_prob = "none", 0.95
    # the network then ignores the CLIP tokens entirely (zero-initialised layers made random, so
    # that the image context reaches the output)
    net = copy.deepcopy(tiny.unet).eval()
    for p in net.parameters():
        if not p.detach().any():
            p.data.copy_(0.1 * torch.randn(p.shape, generator=g))
    x, t, fs = torch.randn(3, 8, 3, 4, 4, generator=g), torch.tensor([5.0, 50.0, 500.0]), cond.fs
    text = torch.randn(3, 77, 32, generator=g)
    tok_a, tok_b = torch.randn(3, 16, 48, generator=g), torch.randn(3, 16, 48, generator=g)
    with torch.no_grad():
        a = net(x, t, text, tok_a, fs, image_replace=out.image_replace)
        b = net(x, t, text, tok_b, fs, image_replace=out.image_replace)
        c = net(x, t, text, tok_b, fs)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_clip_type_1_adds_condition_noise_to_the_image_context(tiny):
    g = torch.Generator().manual_seed(6)
    tiny.uncond_prob, tiny.image_noise = 0.0, "timenoise"
    try:
        law = TimeNoise(beta_m=100.0, a=5.0)
        out = tiny.training_condition(_cond(3, g), torch.full((3,), 0.99), law, g)
    finally:
        tiny.image_noise = "none"
    assert out.image_replace is None and out.image_noise.shape == (3, 12, 32)
    assert float(out.image_noise.std()) > 5.0  # beta near beta_m at t near 1
