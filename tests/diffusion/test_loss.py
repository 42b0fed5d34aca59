"""The loss object: the family's objective through the schedule's weight, draws in a fixed order."""

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from torch import nn

from cil_lightning.diffusion.cond_noise import TimeNoise
from cil_lightning.diffusion.loss import DenoisingLoss
from cil_lightning.diffusion.rng import randn
from cil_lightning.diffusion.schedules import EDMSchedule, FlowSchedule, VPSchedule
from cil_lightning.lit_module import I2VLitModule

from ..conftest import compose


def _pairs():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 10, generator=g)
    x0_hat = x0 + 0.3 * torch.randn(16, 10, generator=g)
    eps = torch.randn(16, 10, generator=g)
    return x0, x0_hat, eps


@pytest.mark.parametrize(
    "schedule, kind",
    [(VPSchedule(), "eps"), (VPSchedule(prediction="v"), "v"), (FlowSchedule(), "flow")],
)
def test_weighting_turns_x0_mse_into_the_family_objective(schedule, kind):
    x0, x0_hat, eps = _pairs()
    t = schedule.sample_training_time(16, generator=torch.Generator().manual_seed(1)).double()
    a, s = (v[:, None] for v in schedule.alpha_sigma(t))
    x0, x0_hat, eps = x0.double(), x0_hat.double(), eps.double()
    x_t = a * x0 + s * eps
    eps_hat = (x_t - a * x0_hat) / s
    if kind == "eps":
        target, pred = eps, eps_hat
    elif kind == "v":
        target, pred = a * eps - s * x0, a * eps_hat - s * x0_hat
    else:
        target, pred = eps - x0, eps_hat - x0_hat
    direct = (pred - target).pow(2).mean(1)
    via_x0 = schedule.loss_weight(t) * (x0_hat - x0).pow(2).mean(1)
    torch.testing.assert_close(via_x0, direct)


def test_edm_weighting_closed_form():
    sigma = torch.tensor([0.1, 1.0, 10.0])
    w = EDMSchedule(sigma_data=0.5).loss_weight(sigma)
    torch.testing.assert_close(w, (sigma**2 + 0.25) / (sigma * 0.5) ** 2)
    with pytest.raises(ValueError, match="prediction"):
        VPSchedule(prediction="l1")


def test_the_weighting_is_the_schedules_not_a_free_choice():
    """A VP schedule cannot be given EDM weighting: no schedule takes a weighting, its prediction
    type names its objective, and the run config has no weighting key any more."""
    for family in (EDMSchedule, VPSchedule, FlowSchedule):
        with pytest.raises(TypeError, match="weighting"):
            family(weighting="edm")
    with pytest.raises(ValueError, match="prediction must be 'eps' or 'v'"):
        VPSchedule(prediction="edm")
    with pytest.raises(ConfigCompositionException, match="weighting"):
        compose("train", ["weighting=edm"])
    cfg = compose("train", ["+model.schedule.weighting=edm"])
    with pytest.raises(Exception, match="weighting"):
        instantiate(cfg.model.schedule)
    assert "weighting" not in cfg and "weighting" not in cfg.module


class RecordingAdapter:
    """Stands in for a model adapter: records what the loss feeds it, predicts a fixed x0."""

    def __init__(self, schedule, prediction):
        self.schedule, self.prediction, self.seen = schedule, prediction, {}

    def training_condition(self, cond, t_norm, cond_noise, generator=None):
        noisy, beta = cond_noise.apply(cond, t_norm, generator=generator)
        self.seen.update(t_norm=t_norm, beta=beta, cond=noisy)
        return noisy

    def __call__(self, x_t, t, cond):
        self.seen.update(x_t=x_t, t=t)
        return self.prediction


def _closed_form_weight(schedule, alpha, sigma):
    """The weights of ``diffusion/loss.py``'s docstring, written out by family."""
    if schedule.family == "edm":
        sd = schedule.sigma_data
        return (sigma**2 + sd**2) / (sigma * sd) ** 2
    if schedule.family == "vp" and schedule.prediction == "eps":
        return alpha**2 / sigma**2
    if schedule.family == "vp":
        return (alpha**2 + sigma**2) ** 2 / sigma**2
    return (alpha + sigma) ** 2 / sigma**2


SCHEDULES = [
    EDMSchedule(),
    EDMSchedule(sigma_data=0.5),
    VPSchedule(),
    VPSchedule(prediction="v", rescale_zero_terminal_snr=True),
    FlowSchedule(shift=3.0),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.family)
def test_loss_draws_in_order_noises_condition_at_own_time_and_scores(schedule):
    B = 6
    g0 = torch.Generator().manual_seed(3)
    x0 = torch.randn(B, 4, 3, 5, 5, generator=g0)
    cond = torch.randn(B, 3, 5, 5, generator=g0)
    pred = x0 + 0.1
    adapter = RecordingAdapter(schedule, pred)
    tn = TimeNoise(beta_m=15.0, a=1.0)
    loss = DenoisingLoss(tn)(adapter, x0, cond, generator=torch.Generator().manual_seed(11))
    # Replay the same draws by hand: t, then beta and the condition noise, then eps.
    g = torch.Generator().manual_seed(11)
    t = schedule.sample_training_time(B, generator=g)
    t_norm = schedule.normalized_time(t)
    cond_noisy, beta = tn.apply(cond, t_norm, generator=g)
    eps = randn(x0.shape, g)
    a, s = schedule.alpha_sigma(t)
    torch.testing.assert_close(adapter.seen["t"], t)
    torch.testing.assert_close(adapter.seen["t_norm"], t_norm)
    torch.testing.assert_close(adapter.seen["beta"], beta)
    torch.testing.assert_close(adapter.seen["cond"], cond_noisy)
    x_t = a.view(-1, 1, 1, 1, 1) * x0 + s.view(-1, 1, 1, 1, 1) * eps
    torch.testing.assert_close(adapter.seen["x_t"], x_t)
    expected = _closed_form_weight(schedule, a, s) * 0.01
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    assert loss.shape == (B,)


class ShrinkingAdapter(RecordingAdapter):
    """Predicts x0_hat = 0.8 x_t, so the loss depends on the noising, not only on the weight."""

    def __call__(self, x_t, t, cond):
        return 0.8 * x_t


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.family)
def test_loss_object_equals_the_closed_form_loss_exactly(schedule):
    """Bit for bit the formula of ``diffusion/loss.py``: x_t = alpha x0 + sigma eps, the x0-space
    MSE times the family's closed-form weight of float32 (alpha, sigma)."""
    B = 5
    g0 = torch.Generator().manual_seed(4)
    x0 = torch.randn(B, 3, 2, 4, 4, generator=g0)
    cond = torch.zeros(B, 2, 4, 4)
    tn = TimeNoise(beta_m=2.0, a=1.0)
    loss = DenoisingLoss(tn)(
        ShrinkingAdapter(schedule, None), x0, cond, generator=torch.Generator().manual_seed(5)
    )
    g = torch.Generator().manual_seed(5)
    t = schedule.sample_training_time(B, generator=g)
    tn.apply(cond, schedule.normalized_time(t), generator=g)
    eps = randn(x0.shape, g)
    alpha, sigma = (v.float() for v in schedule.alpha_sigma(t))
    x_t = alpha.view(-1, 1, 1, 1, 1) * x0 + sigma.view(-1, 1, 1, 1, 1) * eps
    mse = (0.8 * x_t - x0).pow(2).flatten(1).mean(1)
    assert torch.equal(loss, _closed_form_weight(schedule, alpha, sigma) * mse)


class ConstantV(nn.Module):
    """A UNet stand-in whose output is ``value`` everywhere: D(0; sigma) is then c_out * value."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict=False):
        return (torch.full_like(sample[:, :, :3], self.value),)


def test_edm_loss_weight_is_one_over_c_out_squared_of_the_adapter_with_sigma_data_half():
    """SVD's objective is ||F_theta - F_target||^2 (v-prediction): the x0-space MSE weighted by
    1 / c_out(sigma)^2 of the adapter's own preconditioning. With sigma_data = 0.5 that weight is
    (sigma^2 + 0.25) / (0.5 sigma)^2; a loss that assumed sigma_data = 1 would be off by up to 4x.
    """
    cfg = compose("train", ["model.schedule.sigma_data=0.5"])
    module = I2VLitModule(
        denoiser=instantiate(cfg.model),
        cond_noise=instantiate(cfg.cond_noise),
        optimizer=instantiate(cfg.optimizer),
    )
    den = module.denoiser
    assert den.sigma_data == 0.5
    seen = []
    forward = den.forward

    def recording(x, sigma, cond):  # what the loss fed the adapter, and its x0 prediction
        x0_hat = forward(x, sigma, cond)
        seen.append((sigma.detach().clone(), x0_hat.detach().clone()))
        return x0_hat

    den.forward = recording
    g = torch.Generator().manual_seed(0)
    video = torch.rand(6, 4, 3, 16, 16, generator=g) * 2 - 1
    batch = {"video": video, "cond_frame": video[:, 0], "fps": torch.full((6,), 8.0)}
    with torch.no_grad():
        loss = module._loss(batch, torch.Generator().manual_seed(1))
    ((sigma, x0_hat),) = seen
    mse = (x0_hat - video).pow(2).flatten(1).mean(1)  # pixel space: x0 is the video
    weight = loss / mse

    den.forward, den.unet = forward, ConstantV(1.0)  # read c_out off the adapter itself
    cond = den.encode_condition(batch["cond_frame"], fps=batch["fps"])
    c_out = den(torch.zeros_like(video), sigma, cond).flatten(1)
    assert torch.equal(c_out.amin(1), c_out.amax(1))  # one value per sample
    torch.testing.assert_close(weight, c_out[:, 0].pow(-2), rtol=1e-4, atol=0)
    assert sigma.min() < 0.5 < sigma.max()  # covers the range where sigma_data matters most
