"""The lab's adapter through the framework's loss and sampler, and the --quick smoke run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from cil_lightning.diffusion.cond_noise import NoCondNoise
from cil_lightning.diffusion.loss import DenoisingLoss
from cil_lightning.diffusion.schedules import EDMSchedule, VPSchedule
from cil_lightning.lab.model import LabDenoiser

ROOT = Path(__file__).resolve().parents[2]


def test_adapter_parameterisation():
    x = torch.randn(2, 5, 1, 16, 16)
    cond = torch.randn(2, 1, 16, 16)
    edm = LabDenoiser(EDMSchedule(sigma_data=0.5), 5, width=8)
    # EDM: as sigma -> 0, c_skip -> 1 and c_out -> 0: the prediction is x itself.
    out = edm(x, torch.full((2,), 1e-4), edm.encode_condition(cond))
    assert torch.allclose(out, x, atol=1e-3)
    vp = LabDenoiser(VPSchedule(prediction="v"), 5, width=8)
    with torch.no_grad():
        vp.net.out.bias.fill_(0.3)  # v = 0.3 everywhere
    t = torch.tensor([10.0, 990.0])
    alpha, sigma = vp.schedule.alpha_sigma(t)
    want = alpha.view(-1, 1, 1, 1, 1) * x - sigma.view(-1, 1, 1, 1, 1) * 0.3
    assert torch.allclose(vp(x, t, vp.encode_condition(cond)), want, atol=1e-5)
    loss = DenoisingLoss(NoCondNoise())(edm, x, edm.encode_condition(cond), torch.Generator())
    assert loss.shape == (2,) and torch.isfinite(loss).all()


def test_quick_run_writes_tables_and_plots(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "run_lab", ROOT / "experiments" / "leakage_lab" / "run_lab.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    summary = mod.main(["--quick", "--out", str(tmp_path)])
    for name in ("results.md", "summary.json", "sampling.csv", "diagnostic.csv", "gaussian.csv"):
        assert (tmp_path / name).is_file()
    for plot in summary["plots"]:
        assert (tmp_path / plot).stat().st_size > 1000
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["hypotheses"]["H4a gaussian: rows with |z| < 4"] == "12/12"
    assert "H1 edm: naive ratio from T < 1 (seeds)" in saved["hypotheses"]
