"""Latent statistics and Analytic-Init (METHOD.md section 4): oracles on Gaussian data."""

from __future__ import annotations

import math
import multiprocessing as mp
import sys

import pytest
import torch

from cil_lightning.diffusion.analytic_init import LatentStats, analytic_init, analytic_init_params
from cil_lightning.diffusion.rng import per_sample_generators, randn
from cil_lightning.diffusion.schedules import EDMSchedule, FlowSchedule, VPSchedule

SHAPE = (4, 3, 5, 6)  # (F, C, H, W)
D = math.prod(SHAPE)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _truth():
    """Known per-element mean and standard deviation, float64, shape SHAPE."""
    g = _gen(123)
    mean = 3.0 * torch.rand(SHAPE, generator=g, dtype=torch.float64) - 1.5
    std = 0.3 + torch.rand(SHAPE, generator=g, dtype=torch.float64)
    return mean, std


def _batches(n_batches: int, batch: int, seed: int):
    mean, std = _truth()
    g = _gen(seed)
    for _ in range(n_batches):
        yield (mean + std * torch.randn((batch, *SHAPE), generator=g, dtype=torch.float64)).float()


def _stats(n_batches=10, batch=2000, seed=0) -> LatentStats:
    s = LatentStats()
    for x in _batches(n_batches, batch, seed):
        s.update(x)
    return s


# ---------------------------------------------------------------------------- LatentStats
def test_stats_recover_mean_and_tr_cov_d():
    n = 20_000
    s = _stats(10, 2000)
    mean, std = _truth()
    assert s.count == n and s.shape == SHAPE
    assert s.mean.dtype == torch.float64 and s.mean.shape == SHAPE
    # every element within 5 standard errors
    assert bool(((s.mean - mean).abs() < 5 * std / math.sqrt(n)).all())
    var = std.square()
    tr_true = var.mean().item()
    se = math.sqrt((2 * var.square() / n).sum().item()) / D
    assert abs(s.tr_cov_d - tr_true) < 5 * se
    # the test can fail: the naive E[x^2] (forgetting the mean) is far off
    assert abs((s._sum_sq / n).mean().item() - tr_true) > 100 * se


def test_tr_cov_d_is_population_variance():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # per-element variances 1 and 4 (1/n)
    s = LatentStats().update(x)
    assert s.tr_cov_d == pytest.approx(2.5, abs=1e-12)
    assert torch.equal(s.mean, torch.tensor([2.0, 4.0], dtype=torch.float64))


def test_merge_equals_single_stream():
    single = _stats(6, 500, seed=1)
    a, b = LatentStats(), LatentStats(shape=SHAPE)
    for i, x in enumerate(_batches(6, 500, seed=1)):
        (a if i < 2 else b).update(x)
    merged = a.merge(b)
    assert merged.count == single.count == 3000
    assert torch.allclose(merged._sum, single._sum, rtol=1e-12, atol=1e-12)
    assert torch.allclose(merged._sum_sq, single._sum_sq, rtol=1e-12, atol=1e-12)
    assert torch.allclose(merged.mean, single.mean, rtol=1e-12, atol=1e-12)
    assert merged.tr_cov_d == pytest.approx(single.tr_cov_d, rel=1e-12)
    assert a.count == 1000 and b.count == 2000  # merge leaves its inputs alone
    assert LatentStats().merge(a).count == a.count == a.merge(LatentStats()).count
    with pytest.raises(ValueError, match="shape"):
        a.merge(LatentStats().update(torch.zeros(2, 3)))


def test_state_dict_round_trip_as_from_a_worker():
    a = _stats(2, 300, seed=2)
    sd = a.state_dict()
    assert sd["sum"].dtype == torch.float64 and sd["count"] == 600
    b = LatentStats.from_state_dict(sd)
    assert torch.equal(b._sum, a._sum) and b.count == a.count
    assert b.merge(a).count == 1200


def test_update_checks_shape():
    s = LatentStats(shape=SHAPE)
    with pytest.raises(ValueError, match="shape"):
        s.update(torch.zeros(2, 4, 3, 5, 7))
    with pytest.raises(ValueError, match="empty"):
        _ = s.mean


def test_safetensors_round_trip(tmp_path):
    s = _stats(2, 400, seed=3)
    path = tmp_path / "stats.safetensors"
    s.save(path, latent_scaling=0.18215, extra_metadata={"dataset": "webvid", "frames": 16})
    t = LatentStats.load(path)
    assert t.count == s.count and t.shape == SHAPE
    assert torch.equal(t._sum, s._sum) and torch.equal(t._sum_sq, s._sum_sq)
    assert t.tr_cov_d == s.tr_cov_d and torch.equal(t.mean, s.mean)
    m = t.metadata
    assert m["layout"] == "FCHW" and m["count"] == str(s.count)
    assert m["shape"] == "[4, 3, 5, 6]" and float(m["latent_scaling"]) == 0.18215
    assert m["dataset"] == "webvid" and m["frames"] == "16" and m["format_version"] == "1"
    # readers find mean and tr_cov_d in the file directly
    from safetensors.torch import load_file

    raw = load_file(str(path))
    assert torch.equal(raw["mean"], s.mean) and raw["tr_cov_d"].item() == s.tr_cov_d
    # loaded stats merge further
    assert t.merge(s).count == 2 * s.count
    with pytest.raises(ValueError, match="reserved"):
        s.save(tmp_path / "x.safetensors", extra_metadata={"count": "3"})


def test_load_rejects_foreign_safetensors(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "f.safetensors"), metadata={"x": "y"})
    with pytest.raises(ValueError, match="not a LatentStats file"):
        LatentStats.load(tmp_path / "f.safetensors")


# ---------------------------------------------------------------------------- reference formats
def test_reference_dynamicrafter_layout_and_round_trip(tmp_path):
    s = _stats(1, 500, seed=4)
    path = tmp_path / "dc.pt"
    s.to_reference(path, style="dynamicrafter")
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"Expectation_X0", "Tr_Cov_d"}
    F, C, H, W = SHAPE
    assert raw["Expectation_X0"].shape == (1, C, F, H, W)
    # (1, C, F, h, w)[0, c, f, y, x] == (F, C, h, w)[f, c, y, x]
    f, c, y, x = 3, 1, 4, 2
    assert raw["Expectation_X0"][0, c, f, y, x].item() == pytest.approx(s.mean[f, c, y, x].item())
    r = LatentStats.from_reference(path)
    assert r.shape == SHAPE and r.count is None and r.is_reference
    assert torch.allclose(r.mean, s.mean, rtol=1e-6, atol=1e-6)
    assert r.tr_cov_d == pytest.approx(s.tr_cov_d, rel=1e-6)


def test_reference_hand_made_dicts():
    F, C, H, W = 2, 4, 3, 5
    dc = torch.zeros(1, C, F, H, W)
    dc[0, 3, 1, 2, 4] = 7.0
    r = LatentStats.from_reference({"Expectation_X0": dc, "Tr_Cov_d": torch.tensor(0.25)})
    assert r.shape == (F, C, H, W) and r.mean[1, 3, 2, 4].item() == 7.0 and r.mean.sum() == 7.0
    assert r.tr_cov_d == 0.25
    svd = torch.zeros(F, C, H, W)
    svd[1, 3, 2, 4] = -2.0
    r = LatentStats.from_reference({"Expectation_x_0": svd, "trCov_d": 0.5})
    assert r.shape == (F, C, H, W) and r.mean[1, 3, 2, 4].item() == -2.0 and r.tr_cov_d == 0.5
    with pytest.raises(KeyError, match="Expectation_x_0"):
        LatentStats.from_reference({"mean": svd})
    with pytest.raises(ValueError, match=r"\(1, C, F, h, w\)"):
        LatentStats.from_reference({"Expectation_X0": svd, "Tr_Cov_d": 0.5})


def test_reference_svd_round_trip_and_no_merge(tmp_path):
    s = _stats(1, 500, seed=5)
    s.to_reference(tmp_path / "svd.pt", style="svd")
    raw = torch.load(tmp_path / "svd.pt", weights_only=True)
    assert set(raw) == {"Expectation_x_0", "trCov_d"} and raw["Expectation_x_0"].shape == SHAPE
    r = LatentStats.from_reference(tmp_path / "svd.pt")
    assert r.mean[3, 1, 4, 2].item() == pytest.approx(s.mean[3, 1, 4, 2].item(), rel=1e-6)
    assert r.tr_cov_d == pytest.approx(s.tr_cov_d, rel=1e-6)
    # re-export to the other style and back: the permutation is undone
    r.to_reference(tmp_path / "dc.pt", style="dynamicrafter")
    rr = LatentStats.from_reference(tmp_path / "dc.pt")
    assert torch.equal(rr.mean, r.mean)
    with pytest.raises(ValueError, match="reference"):
        r.merge(s)
    with pytest.raises(ValueError, match="reference"):
        s.merge(r)
    with pytest.raises(ValueError, match="reference"):
        r.update(torch.zeros(1, *SHAPE))
    # reference stats still save and load (without sums)
    r.save(tmp_path / "r.safetensors")
    back = LatentStats.load(tmp_path / "r.safetensors")
    assert back.count is None and torch.equal(back.mean, r.mean) and back.tr_cov_d == r.tr_cov_d
    with pytest.raises(ValueError, match="style"):
        s.to_reference(tmp_path / "z.pt", style="vc")


# ---------------------------------------------------------------------------- all_reduce_
def test_all_reduce_is_noop_without_distributed():
    s = _stats(1, 100)
    before = s._sum.clone()
    assert s.all_reduce_() is s and torch.equal(s._sum, before) and s.count == 100


def _rank_main(rank: int, world: int, init: str, q) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    s = LatentStats(shape=(2, 3))
    if rank == 1:  # rank 0 sees no data at all
        s.update(torch.arange(24.0).reshape(4, 2, 3))
    s.all_reduce_()
    q.put((rank, s.count, s._sum.tolist()))
    dist.destroy_process_group()


@pytest.mark.skipif(sys.platform != "linux", reason="uses fork")
def test_all_reduce_sums_over_two_ranks(tmp_path):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    init = f"file://{tmp_path / 'store'}"
    procs = [ctx.Process(target=_rank_main, args=(r, 2, init, q)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    results = sorted(q.get(timeout=5) for _ in range(2))
    expected = torch.arange(24.0).reshape(4, 2, 3).sum(0).tolist()
    for _, count, sums in results:
        assert count == 4 and sums == expected


# ---------------------------------------------------------------------------- Analytic-Init
def _ref_stats(scale: float = 1.0) -> tuple[LatentStats, torch.Tensor, float]:
    mean, std = _truth()
    mean, std = scale * mean, scale * std
    tr = std.square().mean().item()
    return LatentStats.from_reference({"Expectation_x_0": mean, "trCov_d": tr}), mean, tr


def _scaled_linear_abar(step: int) -> float:
    """Hand-computed abar_step for latent-diffusion betas (float64 throughout)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.prod(1.0 - betas[: step + 1]).item()


def _check_draws(x: torch.Tensor, mean: torch.Tensor, std: float) -> None:
    """x: [B, *SHAPE] draws; check per-element means (chi-square) and the pooled variance."""
    B = x.shape[0]
    x = x.double()
    z = (x.mean(0) - mean) / (std / math.sqrt(B))  # ~ N(0, 1) per element
    assert abs(z.square().mean().item() - 1.0) < 0.3, z.square().mean().item()
    assert (x - mean).var().item() == pytest.approx(std**2, rel=0.01)


@pytest.mark.parametrize("family", ["edm", "vp", "flow"])
def test_analytic_init_closed_form_moments(family):
    stats, mean, tr = _ref_stats(scale=3.0)
    if family == "edm":
        schedule, M = EDMSchedule(), 100.0
        alpha, sigma = 1.0, 100.0
    elif family == "vp":
        schedule, M = VPSchedule(beta_schedule="scaled_linear"), 940
        abar = _scaled_linear_abar(939)  # the reference uses index M - 1
        alpha, sigma = math.sqrt(abar), math.sqrt(1.0 - abar)
    else:
        schedule, M = FlowSchedule(), 0.9
        alpha, sigma = 0.1, 0.9
    mu_p, std_p = analytic_init_params(schedule, M, stats)
    std_hand = math.sqrt(sigma**2 + alpha**2 * tr)
    assert std_p == pytest.approx(std_hand, rel=1e-6)
    assert torch.allclose(mu_p, alpha * mean, rtol=1e-6, atol=1e-9)
    x = analytic_init(schedule, M, stats, (4000, *SHAPE), _gen(7))
    assert x.shape == (4000, *SHAPE) and x.dtype == torch.float32
    _check_draws(x, alpha * mean, std_hand)
    # the same check rejects the plain start (mean 0, variance sigma^2 + alpha^2)
    _, std0 = analytic_init_params(schedule, M, None)
    with pytest.raises(AssertionError):
        _check_draws(
            analytic_init(schedule, M, None, (4000, *SHAPE), _gen(7)), alpha * mean, std_hand
        )
    assert std0 == pytest.approx(math.sqrt(sigma**2 + alpha**2), rel=1e-6)


def test_analytic_init_with_estimated_stats():
    """End to end: stats estimated from data, then x_M's law at EDM sigma_max = 1 (mean visible)."""
    stats = _stats(5, 2000, seed=8)
    mean, std = _truth()
    x = analytic_init(EDMSchedule(), 1.0, stats, (4000, *SHAPE), _gen(9), dtype=torch.float64)
    assert x.dtype == torch.float64
    _check_draws(x, mean, math.sqrt(1.0 + std.square().mean().item()))


def test_plain_start_conventions():
    _, s_vp = analytic_init_params(VPSchedule(), 940, None)
    assert s_vp == pytest.approx(1.0, abs=1e-12)
    _, s_edm = analytic_init_params(EDMSchedule(), None, None)
    assert s_edm == pytest.approx(math.sqrt(700.0**2 + 1.0))  # diffusers' init_noise_sigma for SVD
    mu, _ = analytic_init_params(EDMSchedule(), 100.0, None)
    assert mu.ndim == 0 and mu.item() == 0.0


@pytest.mark.parametrize("use_stats", [True, False])
def test_zero_terminal_snr_start_is_raw_noise(use_stats):
    vp = VPSchedule(beta_schedule="scaled_linear", rescale_zero_terminal_snr=True, prediction="v")
    stats = _ref_stats(scale=5.0)[0] if use_stats else None
    shape = (3, *SHAPE)
    x = analytic_init(vp, 1000, stats, shape, _gen(11))
    eps = randn(shape, _gen(11))
    assert torch.equal(x, eps)
    mu, std = analytic_init_params(vp, 1000, stats)
    assert std == 1.0 and bool((mu == 0).all())
    # at M = 940 the statistics matter
    assert not torch.allclose(
        analytic_init(vp, 940, stats or _ref_stats()[0], shape, _gen(11)), eps
    )


def test_per_sample_generators_are_batch_independent():
    stats = _ref_stats()[0]
    vp = VPSchedule()
    full = analytic_init(vp, 940, stats, (4, *SHAPE), per_sample_generators([10, 11, 12, 13]))
    part = analytic_init(vp, 940, stats, (2, *SHAPE), per_sample_generators([12, 13]))
    one = analytic_init(vp, 940, stats, (1, *SHAPE), per_sample_generators([11]))
    assert torch.equal(full[2:], part) and torch.equal(full[1:2], one)


def test_analytic_init_dtype_and_shape_checks():
    stats = _ref_stats()[0]
    x = analytic_init(FlowSchedule(), 0.9, stats, (2, *SHAPE), _gen(), dtype=torch.float16)
    assert x.dtype == torch.float16
    with pytest.raises(ValueError, match="shape"):
        analytic_init(FlowSchedule(), 0.9, stats, (2, 3, 4, 5, 6), _gen())
