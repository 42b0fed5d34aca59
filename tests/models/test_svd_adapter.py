import math

import pytest
import torch
from torch import nn

from cil_lightning.diffusion.schedules import EDMSchedule
from cil_lightning.models.svd import SVDCondition, SVDDenoiser
from cil_lightning.models.tiny import tiny_pixel_svd


class RecordingUNet(nn.Module):
    """Returns a fixed output and records what the adapter fed it."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value, self.calls = value, []
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict=False):
        self.calls.append((sample, timestep, encoder_hidden_states, added_time_ids))
        return (torch.full_like(sample[:, :, :3], self.value),)


class FixedEncoder(nn.Module):
    def forward(self, image):
        return image.mean(dim=(1, 2, 3))[:, None, None].expand(-1, 1, 4)


def make_cond(B=2, C=3, h=8, w=8, beta=0.0):
    g = torch.Generator().manual_seed(0)
    return SVDCondition(
        latent=torch.randn(B, C, h, w, generator=g),
        embed=torch.randn(B, 1, 4, generator=g),
        fps=torch.tensor([8.0, 6.0])[:B],
        motion_bucket_id=torch.tensor([127.0, 20.0])[:B],
        noise_level=torch.full((B,), beta),
    )


@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
def test_preconditioning_is_svd_v_prediction(sigma_data):
    sd = sigma_data
    sigma = torch.tensor([0.03, 40.0])
    x = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    cond = make_cond(beta=0.7)
    for value in (0.0, 1.0):
        unet = RecordingUNet(value)
        den = SVDDenoiser(unet, FixedEncoder(), EDMSchedule(sigma_data=sd), cfg_dropout=0.0)
        out = den(x, sigma, cond)
        s = sigma.view(-1, 1, 1, 1, 1)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = -s * sd / (s**2 + sd**2).sqrt()
        torch.testing.assert_close(out, c_skip * x + c_out * value)
        sample, timestep, ehs, ids = unet.calls[-1]
        torch.testing.assert_close(timestep, torch.tensor([math.log(0.03), math.log(40.0)]) / 4)
        torch.testing.assert_close(sample[:, :, :3], x / (s**2 + sd**2).sqrt())
        for f in range(4):  # the condition latent is concatenated to every frame, unscaled
            torch.testing.assert_close(sample[:, f, 3:], cond.latent)
        torch.testing.assert_close(ids, torch.tensor([[7.0, 127.0, 0.7], [5.0, 20.0, 0.7]]))
        torch.testing.assert_close(ehs, cond.embed)


class AddOne:
    """A condition-noise law with a fixed level, to check plumbing without randomness."""

    def apply(self, cond, t_norm, generator=None):
        return cond + 1.0, torch.full_like(t_norm, 0.25)


def test_training_condition_noises_sets_level_and_drops_together_without_mutating():
    den = SVDDenoiser(RecordingUNet(0.0), FixedEncoder(), EDMSchedule(), cfg_dropout=0.5)
    B = 64
    cond = SVDCondition(
        latent=torch.ones(B, 3, 4, 4),
        embed=torch.ones(B, 1, 4),
        fps=torch.full((B,), 8.0),
        motion_bucket_id=torch.full((B,), 127.0),
        noise_level=torch.zeros(B),
    )
    before = cond.latent.clone()
    out = den.training_condition(cond, torch.rand(B), AddOne(), torch.Generator().manual_seed(0))
    assert torch.equal(cond.latent, before)
    dropped = out.latent.flatten(1).abs().sum(1) == 0
    assert torch.equal(dropped, out.embed.flatten(1).abs().sum(1) == 0)
    assert 10 < int(dropped.sum()) < 54  # about half of 64
    assert torch.all(out.latent[~dropped] == 2.0)
    assert torch.all(out.noise_level == 0.25)


def test_tiny_model_output_shape_and_trainable_parameters():
    den = tiny_pixel_svd()
    cond = den.encode_condition(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert cond.latent.shape == (2, 3, 16, 16) and cond.embed.shape == (2, 1, 32)
    x = torch.randn(2, 5, 3, 16, 16)
    out = den(x, torch.tensor([0.5, 2.0]), cond)
    assert out.shape == x.shape
    n_params = sum(p.numel() for p in den.trainable_parameters())
    assert n_params == sum(p.numel() for p in den.parameters())


def test_tiny_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = tiny_pixel_svd(seed=3), tiny_pixel_svd(seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_unconditional_zeroes_latent_and_embed_only():
    cond = make_cond(beta=0.3)
    u = cond.unconditional()
    assert torch.all(u.latent == 0) and torch.all(u.embed == 0)
    assert torch.equal(u.fps, cond.fps) and torch.equal(u.noise_level, cond.noise_level)
    r = cond.repeat(3)
    assert r.latent.shape[0] == 6 and torch.equal(r.latent[3], cond.latent[1])
