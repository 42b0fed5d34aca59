"""Condition-noise laws (METHOD.md section 3): TimeNoise, constant, none, SVD log-normal."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats as sps

from cil_lightning.diffusion.cond_noise import (
    CondNoise,
    ConstantCondNoise,
    LogNormalCondNoise,
    NoCondNoise,
    TimeNoise,
    build_cond_noise,
)
from cil_lightning.diffusion.rng import per_sample_generators

N = 40_000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _timenoise_cdf(beta_m: float, mu: float, s: float = 1.0):
    """Exact CDF of beta_m * sigmoid(N(mu, s^2)): F(b) = Phi((logit(b / beta_m) - mu) / s)."""

    def cdf(b):
        p = b / beta_m
        return sps.norm.cdf((sps.logistic.ppf(p) - mu) / s)

    return cdf


# ---------------------------------------------------------------------------- TimeNoise law
@pytest.mark.parametrize("t", [0.0, 0.3, 0.8, 1.0])
@pytest.mark.parametrize("beta_m,a", [(100.0, 5.0), (15.0, 1.0)])
def test_timenoise_law_ks(t, beta_m, a):
    tn = TimeNoise(beta_m=beta_m, a=a)
    beta = tn.sample_beta(torch.full((N,), t), _gen(1)).double().numpy()
    mu = 2.0 * t**a - 1.0
    res = sps.kstest(beta, _timenoise_cdf(beta_m, mu))
    assert res.pvalue > 1e-3, (t, beta_m, a, res)
    # The test can fail: the law at the wrong time is rejected.
    wrong = sps.kstest(beta, _timenoise_cdf(beta_m, mu + 0.1))
    assert wrong.pvalue < 1e-3


def test_timenoise_general_mu_and_s():
    tn = TimeNoise(beta_m=7.0, a=2.0, s=0.5, mu_max=3.0)
    t = 0.6
    beta = tn.sample_beta(torch.full((N,), t), _gen(2)).double().numpy()
    mu = 2 * 3.0 * t**2 - 3.0
    assert sps.kstest(beta, _timenoise_cdf(7.0, mu, 0.5)).pvalue > 1e-3
    assert torch.allclose(tn.mu(torch.tensor([0.0, t, 1.0])), torch.tensor([-3.0, mu, 3.0]))


@pytest.mark.parametrize("t", [0.0, 0.8, 1.0])
def test_timenoise_median_closed_form(t):
    beta_m, a = 100.0, 5.0
    beta = TimeNoise(beta_m, a).sample_beta(torch.full((200_000,), t), _gen(3))
    expected = beta_m / (1.0 + math.exp(-(2.0 * t**a - 1.0)))
    assert beta.median().item() == pytest.approx(expected, rel=0.02)


def test_sample_beta_dtype_device_and_batch():
    tn = TimeNoise(100.0, 5.0)
    t = torch.rand(8, dtype=torch.float64)
    beta = tn.sample_beta(t, _gen())
    assert beta.shape == (8,) and beta.dtype == torch.float32 and beta.device == t.device
    assert bool(((beta > 0) & (beta < 100.0)).all())


def test_beta_is_per_sample_time():
    """Each sample's beta follows its own t: early times have small beta, late times large."""
    t = torch.cat([torch.zeros(5000), torch.ones(5000)])
    beta = TimeNoise(100.0, 5.0).sample_beta(t, _gen(4))
    assert beta[:5000].median() < 30 < 70 < beta[5000:].median()


# ---------------------------------------------------------------------------- apply
@pytest.mark.parametrize("per_element", [True, False])
def test_apply_shapes_and_noise_structure(per_element):
    tn = TimeNoise(10.0, 1.0, per_element=per_element)
    B = 4
    cond = torch.zeros(B, 3, 2, 16, 16)  # [B, F, C, H, W]
    t = torch.tensor([0.1, 0.4, 0.7, 1.0])
    out, beta = tn.apply(cond, t, _gen(5))
    assert out.shape == cond.shape and beta.shape == (B,)
    flat = out.flatten(1)
    if per_element:
        # per-element noise with standard deviation beta_i in each sample
        assert bool((flat.std(dim=1) > 0).all())
        ratio = flat.std(dim=1) / beta
        assert torch.allclose(ratio, torch.ones(B), rtol=0.1)
    else:
        # one scalar per sample, constant over every non-batch dim (cond = 0, so out is the noise)
        assert torch.equal(flat, flat[:, :1].expand_as(flat))
        assert not torch.equal(flat[0, 0], flat[1, 0])


def test_apply_scalar_mode_on_nonzero_condition():
    tn = TimeNoise(10.0, 1.0, per_element=False)
    cond = torch.randn(3, 2, 4, 5, 5, generator=_gen(6))
    out, beta = tn.apply(cond, torch.full((3,), 0.5), _gen(7))
    offset = (out - cond).flatten(1)
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-5)


@pytest.mark.parametrize(
    "noise",
    [NoCondNoise(), ConstantCondNoise(0.5), LogNormalCondNoise(), TimeNoise(100.0, 5.0)],
    ids=repr,
)
def test_apply_leaves_input_untouched(noise):
    cond = torch.randn(4, 2, 3, 8, 8, generator=_gen(8))
    before = cond.clone()
    out, beta = noise.apply(cond, torch.rand(4, generator=_gen(9)), _gen(10))
    assert torch.equal(cond, before)
    assert beta.shape == (4,) and beta.dtype == torch.float32
    if not isinstance(noise, NoCondNoise):
        assert out.data_ptr() != cond.data_ptr()
        assert not torch.equal(out, cond)
        # the returned tensor does not alias the input: writing to it leaves the input alone
        out.add_(1.0)
        assert torch.equal(cond, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_apply_keeps_dtype(dtype):
    cond = torch.randn(2, 4, 8, 8, generator=_gen(11)).to(dtype)
    out, beta = TimeNoise(15.0, 5.0).apply(cond, torch.tensor([0.2, 0.9]), _gen(12))
    assert out.dtype == dtype and beta.dtype == torch.float32
    # the same seed gives the same noise whatever the dtype (eps drawn in float32)
    ref, _ = TimeNoise(15.0, 5.0).apply(cond.float(), torch.tensor([0.2, 0.9]), _gen(12))
    assert torch.allclose(out.float(), ref, rtol=1e-2, atol=1e-2 * 15)


def test_apply_deterministic_and_per_sample_generators():
    tn = TimeNoise(100.0, 5.0)
    cond = torch.randn(4, 2, 3, 6, 6, generator=_gen(13))
    t = torch.tensor([0.2, 0.5, 0.9, 1.0])
    a, ba = tn.apply(cond, t, _gen(14))
    b, bb = tn.apply(cond, t, _gen(14))
    assert torch.equal(a, b) and torch.equal(ba, bb)
    c, _ = tn.apply(cond, t, _gen(15))
    assert not torch.equal(a, c)
    # per-sample generators: sample i does not depend on the batch it lands in
    full, bfull = tn.apply(cond, t, per_sample_generators([0, 1, 2, 3]))
    part, bpart = tn.apply(cond[2:], t[2:], per_sample_generators([2, 3]))
    assert torch.equal(full[2:], part) and torch.equal(bfull[2:], bpart)


def test_apply_does_not_read_values_on_host():
    """On the meta device any .item() / host branch on values would fail: apply must not sync."""
    for noise in (
        TimeNoise(100.0, 5.0),
        TimeNoise(15.0, 5.0, per_element=False),
        LogNormalCondNoise(),
        ConstantCondNoise(1.0),
        NoCondNoise(),
    ):
        cond = torch.empty(2, 3, 4, 4, device="meta")
        out, beta = noise.apply(cond, torch.empty(2, device="meta"))
        assert out.device.type == "meta" and beta.device.type == "meta"
        assert out.shape == cond.shape and beta.shape == (2,)


def test_apply_checks_shapes():
    tn = TimeNoise(100.0, 5.0)
    with pytest.raises(ValueError, match="t_norm"):
        tn.apply(torch.zeros(3, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="t_norm"):
        tn.apply(torch.zeros(3, 4), torch.zeros(3, 1))


def test_add_noise_reuses_beta():
    tn = TimeNoise(100.0, 5.0)
    beta = torch.tensor([1.0, 2.0])
    out = tn.add_noise(torch.zeros(2, 3, 4), beta, _gen(16))
    assert out.shape == (2, 3, 4)
    with pytest.raises(ValueError, match="beta"):
        tn.add_noise(torch.zeros(2, 3, 4), torch.ones(3))


# ---------------------------------------------------------------------------- other laws
def test_constant_and_none_laws():
    t = torch.rand(6, generator=_gen(17))
    assert torch.equal(ConstantCondNoise(0.7).sample_beta(t), torch.full((6,), 0.7))
    assert torch.equal(NoCondNoise().sample_beta(t), torch.zeros(6))
    cond = torch.randn(6, 3, generator=_gen(18))
    out, beta = NoCondNoise().apply(cond, t, _gen(19))
    assert out is cond and torch.equal(beta, torch.zeros(6))
    out, beta = ConstantCondNoise(0.0).apply(cond, t, _gen(19))
    assert torch.equal(out, cond)
    big = torch.zeros(4, 50_000)
    out, _ = ConstantCondNoise(2.0).apply(big, torch.zeros(4), _gen(20))
    assert out.std().item() == pytest.approx(2.0, rel=0.01)


def test_lognormal_law():
    ln = LogNormalCondNoise()
    assert (ln.P_mean, ln.P_std) == (-3.0, 0.5)
    beta = ln.sample_beta(torch.rand(N, generator=_gen(21)), _gen(22)).double()
    logb = beta.log()
    assert logb.mean().item() == pytest.approx(-3.0, abs=4 * 0.5 / math.sqrt(N))
    assert logb.std().item() == pytest.approx(0.5, rel=0.02)
    res = sps.kstest(beta.numpy(), sps.lognorm(s=0.5, scale=math.exp(-3.0)).cdf)
    assert res.pvalue > 1e-3
    custom = LogNormalCondNoise(P_mean=-1.0, P_std=0.2).sample_beta(torch.zeros(N), _gen(23))
    assert custom.double().log().mean().item() == pytest.approx(-1.0, abs=0.01)


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "factory,arg",
    [
        (lambda: TimeNoise(beta_m=0.0, a=5.0), "beta_m"),
        (lambda: TimeNoise(beta_m=-1.0, a=5.0), "beta_m"),
        (lambda: TimeNoise(beta_m=100.0, a=0.0), "a"),
        (lambda: TimeNoise(beta_m=100.0, a=5.0, s=0.0), "s"),
        (lambda: ConstantCondNoise(-0.1), "beta"),
        (lambda: LogNormalCondNoise(P_std=0.0), "P_std"),
        (lambda: build_cond_noise("gaussian"), "timenoise"),
    ],
)
def test_validation_names_the_argument(factory, arg):
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        factory()


def test_registry_and_repr():
    tn = build_cond_noise("timenoise", beta_m=100, a=5, per_element=False)
    assert isinstance(tn, TimeNoise) and not tn.per_element
    assert repr(tn) == "TimeNoise(beta_m=100.0, a=5.0, s=1.0, mu_max=1.0, per_element=False)"
    assert isinstance(build_cond_noise("none"), NoCondNoise)
    assert repr(build_cond_noise("constant", beta=0.3)) == "ConstantCondNoise(beta=0.3)"
    assert repr(build_cond_noise("lognormal")) == "LogNormalCondNoise(P_mean=-3.0, P_std=0.5)"
    assert repr(NoCondNoise()) == "NoCondNoise()"
    assert all(
        isinstance(build_cond_noise(n, **k), CondNoise)
        for n, k in [
            ("none", {}),
            ("constant", {"beta": 1}),
            ("lognormal", {}),
            ("timenoise", {"beta_m": 1, "a": 1}),
        ]
    )
