"""The leakage diagnostic's mechanics: known denoisers give known motion ratios; the CLI writes all.

Stand-in adapters work in pixel space (encode/decode are identities), on real photographs panned
at known nonzero speeds, so the real clips have motion and the condition frame alone has none.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, replace

import pytest
import torch

from cil_lightning.diagnose import (
    edm_sigma_for_normalized,
    native_time,
    one_step_rows,
    run_diagnostic,
    summarize,
)
from cil_lightning.diffusion.schedules import EDMSchedule, FlowSchedule, VPSchedule
from cil_lightning.metrics.motion import build_flow, motion_scores

TIMES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
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
        self.schedule = EDMSchedule(sigma_max=80.0)

    def encode_video(self, video, names=None, generator=None):
        return video

    def decode_video(self, latents):
        return latents.clamp(-1, 1)

    def encode_condition(self, frame, fps=None, motion_bucket_id=None):
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


def test_copying_the_condition_gives_motion_ratio_near_zero_at_every_t(clips, motion_fn):
    rows = one_step_rows(CopyCondition(), clips, times=TIMES, motion_fn=motion_fn)
    assert len(rows) == len(clips) * len(TIMES)
    assert min(r["ms_real"] for r in rows) > 0.5  # the real clips do move
    assert all(r["ratio"] < 0.05 for r in rows), [r["ratio"] for r in rows]
    summary = summarize(rows)
    assert [s["t"] for s in summary["one_step"]] == TIMES
    assert all(s["ratio"]["mean"] < 0.05 and s["ratio"]["n"] == 6 for s in summary["one_step"])


def test_the_optimal_denoiser_shows_no_motion_deficit(clips, motion_fn):
    rows = one_step_rows(EmpiricalOptimal(clips), clips, times=TIMES, motion_fn=motion_fn)
    ratios = [r["ratio"] for r in rows]
    assert all(abs(r - 1.0) < 0.1 for r in ratios), ratios
    # And the reported noise level does rise with t: sigma(1.0) is the clamped 1 - 1e-3 quantile.
    sig = {r["t"]: r["t_native"] for r in rows}
    assert sig[0.1] < sig[0.5] < sig[1.0]


@pytest.mark.parametrize("mode", ["quantile", "reference"])
def test_edm_time_inverse_round_trips(mode):
    schedule = EDMSchedule(time_mode=mode)
    t = torch.linspace(0.001, 0.999, 101, dtype=torch.float64)
    back = schedule.normalized_time(edm_sigma_for_normalized(schedule, t))
    assert torch.allclose(back, t, atol=1e-9)
    for tt in (0.1, 0.5, 0.9):
        assert math.isclose(
            float(
                schedule.normalized_time(
                    torch.tensor(native_time(schedule, tt), dtype=torch.float64)
                )
            ),
            tt,
            abs_tol=1e-9,
        )
    # t = 0 and 1 are clamped into the map's range instead of giving sigma 0 or infinity.
    ends = edm_sigma_for_normalized(schedule, torch.tensor([0.0, 1.0]))
    assert torch.isfinite(ends).all() and (ends > 0).all()


def test_other_families_invert_too():
    vp, flow = VPSchedule(), FlowSchedule()
    assert native_time(vp, 0.5) == 500.0 and native_time(vp, 1.0) == 999.0
    assert float(vp.normalized_time(torch.tensor(native_time(vp, 0.3)))) == pytest.approx(0.3)
    assert native_time(flow, 0.7) == pytest.approx(0.7)


def test_sampling_settings_and_outputs_on_the_stand_in(clips, motion_fn, tmp_path):
    rows, summary = run_diagnostic(
        CopyCondition(),
        clips[:3],
        times=[0.5, 1.0],
        motion_fn=motion_fn,
        out_dir=tmp_path,
        Ms=[10.0],
        sampling=dict(num_steps=2),
    )
    assert [s["setting"] for s in summary["sampling"]] == ["T", "M=10", "M=10 +AI"]
    assert summary["stats"] == "estimated from the diagnostic clips"
    # A denoiser that copies the condition samples still videos from every start.
    assert all(s["ms_output"]["mean"] < 0.05 for s in summary["sampling"])
    for name in ("diagnose.csv", "summary.json", "motion_ratio.png", "motion_scatter.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_cli_end_to_end_on_the_tiny_model(tmp_path):
    run = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cil_lightning",
            "diagnose",
            "model=svd_tiny",
            "data=panned",
            "data.num_frames=4",
            "num_clips=3",
            "times=[0.1,0.5,1.0]",
            "M=[100]",
            "sampler.num_steps=2",
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with (run / "diagnose.csv").open() as f:
        rows = list(csv.DictReader(f))
    one = [r for r in rows if r["kind"] == "one_step"]
    smp = [r for r in rows if r["kind"] == "sampling"]
    assert len(one) == 3 * 3 and len(smp) == 3 * 3
    assert {r["setting"] for r in smp} == {"T", "M=100", "M=100 +AI"}
    summary = json.loads((run / "summary.json").read_text())
    assert [s["t"] for s in summary["one_step"]] == [0.1, 0.5, 1.0]
    assert summary["num_clips"] == 3 and summary["sampler"]["num_steps"] == 2
    for name in ("motion_ratio.png", "motion_scatter.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
