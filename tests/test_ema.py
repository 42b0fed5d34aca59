"""The EMA warms up as the reference's (diffusers ``EMAModel``), on one parameter trajectory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cil_lightning.ema import build_ema


def _trajectory(steps: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"weight": torch.randn(4, 3, generator=g), "bias": torch.randn(4, generator=g)}
        for _ in range(steps)
    ]


@pytest.mark.parametrize("decay", [0.9999, 0.9])
def test_ema_matches_diffusers_ema_model(decay):
    from diffusers.training_utils import EMAModel

    steps = _trajectory(40)
    net = nn.Linear(3, 4)
    ours = build_ema(net, decay)
    theirs = EMAModel(net.parameters(), decay=decay)
    for state in steps:
        net.load_state_dict(state)
        ours.update_parameters(net)
        theirs.step(net.parameters())
    for mine, ref in zip(ours.module.parameters(), theirs.shadow_params):
        torch.testing.assert_close(mine, ref, rtol=1e-6, atol=1e-6)
    # After 40 updates the warm-up decay is 40/49 (< 0.9): the first weights are all but forgotten,
    # unlike a constant 0.9999 that would still hold 0.9999^39 = 99.6 % of them.
    first = steps[0]["weight"]
    weight = 1.0
    for k in range(2, 41):
        weight *= min(k / (9 + k), decay)
    assert weight < 1e-4
    assert not torch.allclose(ours.module.weight, first, atol=0.1)


def test_without_warmup_the_decay_is_constant():
    steps = _trajectory(5)
    net = nn.Linear(3, 4)
    ema = build_ema(net, 0.5, warmup=False)
    expected = steps[0]["weight"].clone()
    for state in steps:
        net.load_state_dict(state)
        ema.update_parameters(net)
    for state in steps[1:]:
        expected = 0.5 * expected + 0.5 * state["weight"]
    torch.testing.assert_close(ema.module.weight, expected)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_out_of_range_is_refused(decay):
    with pytest.raises(ValueError, match="ema_decay must be in"):
        build_ema(nn.Linear(2, 2), decay)
