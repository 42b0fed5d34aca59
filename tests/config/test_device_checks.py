"""Checks run before anything is built: a GPU asked for where there is none, and the validation
metrics' weight files (config/checks.py; issue 17)."""

import pytest
import torch

from cil_lightning.config.checks import (
    ConfigError,
    device_problems,
    validate,
    validation_weight_problems,
)


@pytest.mark.parametrize("trainer", ["gpu", "ddp", "fsdp"])
def test_a_gpu_trainer_without_cuda_names_the_key_and_the_cpu_setting(
    trainer, compose_cfg, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_cfg("train", [f"trainer={trainer}"])
    (line,) = device_problems(cfg)
    assert "trainer.accelerator='gpu' asks for a GPU" in line and "`trainer=cpu`" in line
    with pytest.raises(ConfigError, match=r"trainer\.accelerator='gpu'"):
        validate(cfg, inputs=True)
    validate(cfg)  # a multirun's submit-time check (login node) does not ask for the GPU


def test_a_gpu_trainer_with_cuda_and_a_cpu_trainer_pass(compose_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_problems(compose_cfg("train", ["trainer=gpu"])) == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_problems(compose_cfg("train", ["trainer=cpu"])) == []


def test_fabric_and_task_devices_are_checked_too(compose_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    stats = compose_cfg("stats", ["fabric.accelerator=cuda"])
    assert "fabric.accelerator='cuda'" in device_problems(stats)[0]
    sample = compose_cfg("sample", ["device=cuda:1"])
    assert "device='cuda:1'" in device_problems(sample)[0]
    assert device_problems(compose_cfg("sample", ["device=auto"])) == []


def test_validation_metrics_name_their_missing_weights_before_training(compose_cfg, tmp_path):
    metrics = "callbacks.validation_metrics.metrics=[motion_score,ms_error,clip_alignment]"
    absent = tmp_path / "clip.bin"
    cfg = compose_cfg("train", [metrics, f"metric.clip.weights={absent}"])
    (line,) = validation_weight_problems(cfg)
    assert f"metric.clip.weights={absent} does not exist" in line
    assert "clip_alignment" in line and "open_clip checkpoint" in line
    absent.write_bytes(b"x")  # only existence is checked here
    assert validation_weight_problems(cfg) == []
    # the default metrics (DIS flow) need no weights
    assert validation_weight_problems(compose_cfg("train")) == []
