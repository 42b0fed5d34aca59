from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cil_lightning.config.checks import ConfigError, validate

from ..conftest import CONF, compose

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


MODEL_CLIP = {"tiny": (8, 32, 32), "svd_tiny": (8, 32, 32), "svd": (16, 320, 512)}


@pytest.mark.parametrize("data", ["folder", "webvid", "ucf101", "shards", "shipped", "panned"])
@pytest.mark.parametrize("model", [None, *MODEL_CLIP])
def test_every_data_config_takes_the_clip_size_of_the_model(data, model, tmp_path):
    """`train data=folder data.root=DIR` trains at the default model's clip size (issue 17)."""
    root = [] if data in ("shipped", "panned") else ["data.root=/videos"]
    overrides = [f"data={data}", *root] + ([f"model={model}"] if model else [])
    cfg = compose("train", overrides, output_dir=tmp_path)
    expected = MODEL_CLIP[model or "tiny"]  # train.yaml's default model is tiny
    for split in ("train", "val"):
        spec = cfg.data[split].get("clip", cfg.data[split])  # panned takes the size directly
        assert (spec.num_frames, spec.height, spec.width) == expected, (split, spec)
    assert (cfg.data.num_frames, cfg.data.height, cfg.data.width) == expected


def test_a_clip_size_override_reaches_every_split(tmp_path):
    cfg = compose(
        "train", ["data=folder", "data.root=/v", "clip.num_frames=4"], output_dir=tmp_path
    )
    assert (
        cfg.data.num_frames == cfg.data.train.clip.num_frames == cfg.data.val.clip.num_frames == 4
    )


def test_the_cpu_scale_is_the_svd_tiny_experiment(tmp_path):
    """`+scale=cpu` after an svd_* experiment composes exactly its svd_tiny_* counterpart."""
    scaled = compose("train", ["+experiment=svd_naive", "+scale=cpu"], output_dir=tmp_path)
    tiny = compose("train", ["+experiment=svd_tiny_naive"], output_dir=tmp_path)
    scaled, tiny_dict = OmegaConf.to_container(scaled), OmegaConf.to_container(tiny)
    for cfg in (scaled, tiny_dict):
        cfg.pop("tags"), cfg.pop("hydra")  # the job's config, less its tags
    assert scaled == tiny_dict
    assert tiny.model._target_.endswith("tiny_svd") and tiny.cond_noise._target_.endswith(
        "NoCondNoise"
    )
    assert tiny.data._target_.endswith("VideoDataModule") and tiny.trainer.accelerator == "cpu"
    assert tiny.data.train._target_.endswith("ShippedClips")
    assert (tiny.data.num_frames, tiny.data.height, tiny.data.width) == MODEL_CLIP["svd_tiny"]
    assert (tiny.data.batch_size, tiny.data.train.clip.fps, tiny.data.train.clip.stride) == (
        4,
        8.0,
        None,
    )
    assert (tiny.optimizer.lr, tiny.ema_decay, tiny.sampler.M) == (3.0e-4, 0.99, None)
    assert (tiny.trainer.max_steps, tiny.trainer.check_val_every_n_epoch) == (150, 2)
    assert tiny.trainer.val_check_interval is None
    assert tiny.callbacks.model_checkpoint.every_n_train_steps == 50
    assert tiny.callbacks.validation_metrics.every_n_steps == 0
