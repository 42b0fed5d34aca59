"""Moving textures: the known velocity law and its phase-correlation measurement."""

from __future__ import annotations

import math

import pytest
import torch

from cil_lightning.lab.textures import (
    EVAL_PHOTOS,
    MovingTextures,
    coherence,
    phase_shift,
    speed,
    velocity,
)


@pytest.fixture(scope="module")
def clips():
    return MovingTextures(photos=EVAL_PHOTOS).sample(128, torch.Generator().manual_seed(0))


def test_phase_shift_reads_an_integer_translation():
    # b(x) = a(x - d) for d = (dx, dy) = (-3, 2): two 16 x 16 windows of one random image.
    big = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    a = big[:, 8:24, 8:24]
    b = big[:, 6:22, 11:27]  # rows start 2 earlier (dy = +2), columns 3 later (dx = -3)
    d = phase_shift(a, b)
    assert torch.allclose(d, torch.tensor([[-3.0, 2.0]] * 3, dtype=torch.float64), atol=0.05)


def test_measured_velocity_matches_the_known_velocity(clips):
    # 128 held-out clips, 16 x 16 px, speeds 0.5-1.5 px/frame: mean vector error < 0.15 px/frame,
    # 95th percentile < 0.35 (sub-pixel bilinear rendering and a 16 px Hann window limit it).
    x, v = clips
    err = (velocity(x) - v).norm(dim=1)
    assert float(err.mean()) < 0.15
    assert float(err.quantile(0.95)) < 0.35
    # A clip of one repeated frame has no motion; noise is far less coherent than a translation.
    assert float(speed(x[:, :1].expand_as(x)).abs().max()) < 1e-6
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert float(coherence(noise).mean()) < 0.5 * float(coherence(x).mean())


def test_velocity_law_is_uniform_in_speed_and_direction(clips):
    _, v = clips
    s = v.norm(dim=1)
    assert float(s.min()) >= 0.5 and float(s.max()) <= 1.5
    assert abs(float(s.mean()) - 1.0) < 4 * (1 / math.sqrt(12)) / math.sqrt(len(s))
    assert float(v.mean(0).norm()) < 0.25  # no preferred direction (|mean| ~ 0.07 expected)
    x, _ = clips
    assert x.shape == (128, 5, 1, 16, 16) and float(x.abs().max()) <= 1.0
