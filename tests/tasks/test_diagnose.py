"""The leakage diagnostic's mechanics: known denoisers give known motion ratios; the CLI writes all.

Stand-in adapters work in pixel space (encode/decode are identities), on real photographs panned
at known nonzero speeds, so the real clips have motion and the condition frame alone has none.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, replace

import pytest
import torch

from cil_lightning.diagnose import (
    check_levels,
    level_info,
    noise_levels,
    one_step_rows,
    run_diagnostic,
    summarize,
)
from cil_lightning.diffusion.schedules import EDMSchedule, FlowSchedule, VPSchedule
from cil_lightning.metrics.motion import build_flow, motion_scores
from cil_lightning.sampling import Sampler

from ..conftest import run_task

SIGMA_MAX = 80.0  # the stand-in's EDM schedule (as model=tiny)
PANS = ((1, 0), (0, 1), (2, 0), (-1, 0), (0, -1), (1, 1))


@pytest.fixture(scope="module")
def clips():
    """Six panned-photo clips [6, 6, 3, 32, 32] with pans of 1 to 2 pixels per frame."""
    from cil_lightning.data.shipped import PannedPhotoClips

    ds = PannedPhotoClips(
        split="train", num_frames=6, photos=("astronaut", "chelsea"), pans=PANS, starts_per_pan=1
    )
    items = [ds[i] for i in range(len(ds))][:6]
    assert all(it["motion"].abs().sum() > 0 for it in items)
    return torch.stack([it["video"] for it in items])


@pytest.fixture(scope="module")
def motion_fn():
    flow = build_flow("farneback")
    return lambda v: motion_scores(v, flow)


@dataclass
class Cond:
    latent: torch.Tensor

    def unconditional(self):
        return replace(self, latent=torch.zeros_like(self.latent))

    def repeat(self, n):
        return Cond(self.latent.repeat_interleave(n, 0))


class PixelAdapter:
    """The adapter interface in pixel space; subclasses define the x0 prediction."""

    def __init__(self):
        self.schedule = EDMSchedule(sigma_max=SIGMA_MAX)

    def encode_video(self, video, names=None, generator=None):
        return video

    def decode_video(self, latents):
        return latents.clamp(-1, 1)

    def encode_condition(self, frame, fps=None, motion_bucket_id=None, num_frames=None):
        return Cond(frame)


class CopyCondition(PixelAdapter):
    """Total leakage: predicts the condition frame repeated over frames, whatever x_t."""

    def __call__(self, x_t, t, cond):
        return cond.latent[:, None].expand_as(x_t)


class EmpiricalOptimal(PixelAdapter):
    """The closed-form optimal denoiser of the empirical data distribution over ``data``:
    E[x0 | x_t] = sum_i softmax_i(-|x_t - x0_i|^2 / (2 sigma^2)) x0_i (EDM: alpha = 1).
    No leakage: it reads only x_t (the condition is ignored)."""

    def __init__(self, data):
        super().__init__()
        self.data = data.flatten(1).double()

    def __call__(self, x_t, t, cond):
        d2 = torch.cdist(x_t.flatten(1).double(), self.data).square()
        w = torch.softmax(-d2 / (2 * t.double().view(-1, 1) ** 2), dim=1)
        return (w @ self.data).view_as(x_t).float()


LEVELS = noise_levels(EDMSchedule(sigma_max=SIGMA_MAX))  # 0.02 ... 80, log-spaced


def test_copying_the_condition_gives_motion_ratio_near_zero_at_every_level(clips, motion_fn):
    rows = one_step_rows(CopyCondition(), clips, levels=LEVELS, motion_fn=motion_fn)
    assert len(rows) == len(clips) * len(LEVELS)
    assert min(r["ms_real"] for r in rows) > 0.5  # the real clips do move
    assert all(r["ratio"] < 0.05 for r in rows), [r["ratio"] for r in rows]
    summary = summarize(rows)
    assert [s["t_native"] for s in summary["one_step"]] == LEVELS
    assert all(s["ratio"]["mean"] < 0.05 and s["ratio"]["n"] == 6 for s in summary["one_step"])


def test_the_optimal_denoiser_keeps_motion_at_low_noise_and_loses_it_at_the_start(clips, motion_fn):
    """The exact MMSE denoiser of the clips' distribution: ratio 1 while x_t still singles out
    its clip, well below 1 at the sampling start, where E[x0 | x_t] mixes clips. A ratio of 1 is
    not the target there; the old normalised-time range (sigma <= 12) never got that far."""
    rows = one_step_rows(EmpiricalOptimal(clips), clips, levels=LEVELS, motion_fn=motion_fn)
    low = [r["ratio"] for r in rows if r["t_native"] <= 5.1]
    assert len(low) == 6 * 7 and all(abs(r - 1.0) < 0.1 for r in low), low
    top = summarize(rows)["one_step"][-1]
    assert top["t_native"] == SIGMA_MAX and top["sigma_alpha"] == SIGMA_MAX
    assert top["ratio"]["mean"] < 0.8, top["ratio"]


@pytest.mark.parametrize(
    ("schedule", "M", "start"),
    [
        (EDMSchedule(sigma_max=SIGMA_MAX), None, SIGMA_MAX),  # model=tiny
        (EDMSchedule(sigma_max=700.0), None, 700.0),  # SVD
        (EDMSchedule(sigma_max=700.0), 100.0, 100.0),  # SVD reference start M
        (VPSchedule(), None, 999.0),
        (VPSchedule(), 940, 939.0),  # DDIM trailing: the first network call is at M - 1
        (VPSchedule(rescale_zero_terminal_snr=True), None, 999.0),  # pure noise at the start
        (FlowSchedule(), None, 1.0),  # pure noise at the start
        (FlowSchedule(shift=3.0), 0.9, 0.9),
    ],
)
def test_default_ladder_is_monotone_and_ends_at_the_sampling_start(schedule, M, start):
    levels = noise_levels(schedule, 10, M=M, level_min=0.02)
    assert levels[-1] == start == schedule.start_time(M)
    assert len(levels) == 10
    s = [level_info(schedule, t)["sigma_alpha"] for t in levels]
    assert all(b > a for a, b in zip(s, s[1:])), s
    lo = max(0.02, level_info(schedule, 0.0)["sigma_alpha"])  # VP step 0 is above 0.02
    assert s[0] == pytest.approx(lo, rel=0.2 if schedule.family == "vp" else 1e-9)
    finite = [v for v in s if math.isfinite(v)]
    if schedule.family != "vp":  # continuous time: exactly log-spaced in sigma/alpha
        steps = [math.log(b / a) for a, b in zip(finite, finite[1:])]
        assert max(steps) - min(steps) < 1e-9
    if len(finite) < len(s):  # pure-noise start: the finite part ends just below it
        assert len(finite) == 9 and math.isinf(s[-1])
        assert level_info(schedule, start)["log_snr"] == -math.inf


def test_edm_ladder_in_closed_form():
    levels = noise_levels(EDMSchedule(sigma_max=SIGMA_MAX), 5, level_min=0.05)
    expect = [0.05 * (SIGMA_MAX / 0.05) ** (i / 4) for i in range(5)]
    assert levels == pytest.approx(expect, rel=1e-12)
    info = level_info(EDMSchedule(), 80.0)
    assert info["log_snr"] == pytest.approx(-2 * math.log(80.0))
    phi = 0.5 * (1 + math.erf((math.log(80.0) + 1.2) / 1.2 / math.sqrt(2)))
    assert info["t_norm"] == pytest.approx(phi)


def test_bad_levels_fail_naming_the_key_and_range():
    edm, vp, flow = EDMSchedule(), VPSchedule(), FlowSchedule()
    assert check_levels(vp, [0, 500, 999]) == [0.0, 500.0, 999.0]
    assert check_levels(flow, [0.5, 1]) == [0.5, 1.0]
    for sch, bad in [
        (edm, [0.0]),
        (edm, [1.0, -2.0]),
        (edm, [math.inf]),
        (vp, [1000]),
        (vp, [2.5]),
        (vp, [-1]),
        (flow, [0.0]),
        (flow, [1.5]),
        (edm, []),
    ]:
        with pytest.raises(ValueError, match=r"levels must be a non-empty list of .*(>|\[|\()"):
            check_levels(sch, bad)
    with pytest.raises(ValueError, match="num_levels must be an integer >= 2"):
        noise_levels(edm, 1)
    with pytest.raises(ValueError, match="level_min"):
        noise_levels(edm, level_min=0.0)
    with pytest.raises(ValueError, match="level_min = 200"):
        noise_levels(edm, M=100.0, level_min=200.0)
    with pytest.raises(ValueError, match="levels must be a non-empty list of EDM sigma"):
        one_step_rows(CopyCondition(), torch.zeros(1, 2, 3, 8, 8), levels=[0.0], motion_fn=None)


def test_level_config_fails_before_the_model_is_built():
    from omegaconf import OmegaConf

    from cil_lightning.tasks.diagnose import check_level_config

    ok = dict(levels=None, num_levels=10, level_min=0.02)
    check_level_config(OmegaConf.create(ok))
    check_level_config(OmegaConf.create({**ok, "levels": [0.5, 80]}))
    for bad, key in [
        ({"levels": []}, "levels"),
        ({"levels": 3.0}, "levels"),
        ({"levels": ["a"]}, "levels"),
        ({"num_levels": 1}, "num_levels"),
        ({"num_levels": 2.5}, "num_levels"),
        ({"level_min": 0.0}, "level_min"),
    ]:
        with pytest.raises(ValueError, match=key):
            check_level_config(OmegaConf.create({**ok, **bad}))


def test_sampling_settings_and_outputs_on_the_stand_in(clips, motion_fn, tmp_path):
    rows, summary = run_diagnostic(
        CopyCondition(),
        clips[:3],
        levels=[0.5, SIGMA_MAX],
        motion_fn=motion_fn,
        out_dir=tmp_path,
        Ms=[10.0],
        sampler=Sampler(num_steps=2),
    )
    assert [s["setting"] for s in summary["sampling"]] == ["T", "M=10", "M=10 +AI"]
    assert summary["stats"] == "estimated from the diagnostic clips"
    assert summary["levels"]["start"] == summary["levels"]["start_sigma_alpha"] == SIGMA_MAX
    assert summary["levels"]["values"] == [0.5, SIGMA_MAX]
    with (tmp_path / "diagnose.csv").open() as f:
        one = [r for r in csv.DictReader(f) if r["kind"] == "one_step"]
    assert {float(r["sigma_alpha"]) for r in one} == {0.5, SIGMA_MAX}
    assert {float(r["log_snr"]) for r in one} == {-2 * math.log(0.5), -2 * math.log(SIGMA_MAX)}
    # A denoiser that copies the condition samples still videos from every start.
    assert all(s["ms_output"]["mean"] < 0.05 for s in summary["sampling"])
    for name in ("diagnose.csv", "summary.json", "motion_ratio.png", "motion_scatter.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_cli_end_to_end_on_the_tiny_model(tmp_path):
    run = tmp_path / "run"
    out = run_task(
        "diagnose",
        "model=svd_tiny",
        "data=panned",
        "data.num_frames=4",
        "num_clips=3",
        "num_levels=3",
        "M=[100]",
        "sampler.num_steps=2",
        f"hydra.run.dir={run}",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with (run / "diagnose.csv").open() as f:
        rows = list(csv.DictReader(f))
    one = [r for r in rows if r["kind"] == "one_step"]
    smp = [r for r in rows if r["kind"] == "sampling"]
    assert len(one) == 3 * 3 and len(smp) == 3 * 3
    assert {r["setting"] for r in smp} == {"T", "M=100", "M=100 +AI"}
    summary = json.loads((run / "summary.json").read_text())
    # svd_tiny: sigma_max 700, sampler.M null; 3 levels log-spaced in sigma from 0.02 to 700
    expect = [0.02, (0.02 * 700.0) ** 0.5, 700.0]
    assert [s["t_native"] for s in summary["one_step"]] == pytest.approx(expect, rel=1e-9)
    assert summary["levels"]["start"] == 700.0 and summary["levels"]["start_M"] is None
    assert summary["num_clips"] == 3 and summary["sampler"]["num_steps"] == 2
    for name in ("motion_ratio.png", "motion_scatter.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
