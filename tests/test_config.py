from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cil_lightning.config.checks import ConfigError, validate

from .conftest import CONF, compose

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_there_are_experiments():
    assert {"tiny_timenoise", "tiny_naive", "tiny_svdaug"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_validates_and_instantiates_its_parts(name, tmp_path):
    cfg = compose("train", [f"+experiment={name}"], output_dir=tmp_path)
    validate(cfg)
    OmegaConf.resolve(cfg.cond_noise)
    cond_noise = instantiate(cfg.cond_noise)
    expected = Path(OmegaConf.to_container(cfg.cond_noise)["_target_"].split(".")[-1])
    assert type(cond_noise).__name__ == str(expected)
    assert "experiment" not in cfg  # selected with +experiment=, no slot in train.yaml


@pytest.mark.parametrize("task", ["train", "sample", "evaluate", "stats"])
def test_every_task_has_a_root_config(task, tmp_path):
    cfg = compose(task, output_dir=tmp_path)
    assert cfg.task_name == task
    assert "outputs/" + task in cfg.hydra.run.dir
    assert cfg.hydra.sweep.dir.startswith("multirun/")


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp", "fsdp"])
@pytest.mark.parametrize("logger", ["default", "wandb", "csv", "none"])
def test_trainer_and_logger_groups_compose(trainer, logger, tmp_path):
    cfg = compose("train", [f"trainer={trainer}", f"logger={logger}"], output_dir=tmp_path)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if logger in ("default", "wandb"):
        assert cfg.logger.wandb.offline is True  # W&B stays offline unless asked


@pytest.mark.parametrize(
    "override, key, allowed",
    [
        ("cond_noise.beta_m=-1", "cond_noise.beta_m", "> 0"),
        ("cond_noise.a=0", "cond_noise.a", "> 0"),
        ("model.cfg_dropout=1.5", "model.cfg_dropout", "[0, 1)"),
        ("data.num_frames=1", "data.num_frames", ">= 2"),
        ("data.height=30", "data.height", "multiple of 8"),
        ("sampler.M=0.001", "sampler.M", "sigma_min"),
        ("optimizer.lr=0", "optimizer.lr", "> 0"),
        ("ema_warmup=1", "ema_warmup", "true or false"),
        ("metric.is.detector=c3d", "metric.is.detector", "auto, torchscript or c3d_state_dict"),
        ("metric.is.splits=0", "metric.is.splits", ">= 1"),
    ],
)
def test_validation_names_key_and_range(override, key, allowed, tmp_path):
    cfg = compose("train", [override], output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert key in str(err.value) and allowed in str(err.value)


def test_default_config_is_valid(tmp_path):
    validate(compose("train", output_dir=tmp_path))
