"""Smoke run of bench/bench_train_throughput.py (untimed): its JSON fields are consistent."""

from __future__ import annotations

import importlib.util
import json

from ..conftest import ROOT


def _bench(monkeypatch):
    # As when the script runs: its folder on sys.path (for bench/_host.py).
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    path = ROOT / "bench" / "bench_train_throughput.py"
    spec = importlib.util.spec_from_file_location("bench_train_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_step_smoke_run_writes_consistent_json_and_markdown(tmp_path, monkeypatch):
    bench = _bench(monkeypatch)
    argv = ["--device", "cpu", "--frames", "2", "--height", "16", "--width", "16"]
    argv += ["--steps", "1", "--warmup", "1", "--repeats", "1", "--peak-n", "256", "--clips", "1"]
    result = bench.main([*argv, "--out-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "train_throughput_cpu_tiny.json").read_text())
    assert saved == json.loads(json.dumps(result))
    steps, batch, peak = 1, 2, saved["peak_flops_per_s"]
    assert peak > 0
    model_flops = saved["project"]["counted_flops_per_step"]
    for name in ("project", "reference"):
        r = saved[name]
        (seconds,) = r["seconds_per_repeat"]
        assert r["samples_per_s"]["median"] == steps * batch / seconds
        assert r["seconds_per_step"] == seconds / steps
        assert r["counted_flops_per_step"] > 0
        assert r["achieved_flops_per_s"] == r["counted_flops_per_step"] / r["seconds_per_step"]
        assert r["model_flops_utilisation"] == model_flops / r["seconds_per_step"] / peak
    # The reference encodes the clip with the VAE every step; the project reads the cache.
    assert saved["reference"]["counted_flops_per_step"] > model_flops
    medians = [saved[name]["samples_per_s"]["median"] for name in ("project", "reference")]
    ratio = medians[0] / medians[1]
    assert saved["ratio_project_to_reference"] == ratio
    md = (tmp_path / "train_throughput_cpu_tiny.md").read_text()
    assert f"**{ratio:.2f}x**" in md and "| project |" in md and "| reference |" in md
    # The table is regenerated from the JSON alone.
    (tmp_path / "train_throughput_cpu_tiny.md").unlink()
    bench.main(["--render", str(tmp_path / "train_throughput_cpu_tiny.json")])
    assert (tmp_path / "train_throughput_cpu_tiny.md").read_text() == md


def test_full_size_builds_the_released_svd_architecture_on_the_meta_device(monkeypatch):
    """``--size full`` (the GPU run) builds SVD img2vid's networks with random weights: checked
    here without memory on the meta device, by parameter count (UNet 1.52 B, temporal VAE 97.7 M,
    OpenCLIP ViT-H/14 image tower with projection 632 M, as the released checkpoint's files)."""
    import torch

    bench = _bench(monkeypatch)
    with torch.device("meta"):
        den = bench.build_denoiser("full", gradient_checkpointing=True)

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert 1.52e9 < count(den.unet) < 1.53e9
    assert 97.5e6 < count(den.vae) < 98.0e6
    assert 630e6 < count(den.image_encoder) < 635e6
    assert den.unet.is_gradient_checkpointing
