"""Sweeps: configs compose, bad swept values abort before launch, summaries, the objective."""

import csv
import json
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from cil_lightning.config.sweep import check_sweep, job_overrides, objective, summarize

from ..conftest import CONF, compose, run_cli
from ..conftest import TINY as CONFTEST_TINY

SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONF / "launcher").glob("*.yaml"))
# The shared tiny run cut further: one step of one 2-frame clip, no callbacks.
TINY = [*CONFTEST_TINY, "trainer.max_steps=1", "clip.num_frames=2", "data.batch_size=1"]
TINY += ["callbacks=none"]


def run_sweep_cli(args, timeout=240):
    return run_cli(*args, timeout=timeout, env={"HYDRA_FULL_ERROR": "0"})


def sweep_check(overrides, config_name="train", max_jobs=64):
    """check_sweep on the config Hydra composes at multirun start."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        loader = GlobalHydra.instance().config_loader()
        cfg = loader.load_configuration(config_name, overrides, run_mode=RunMode.MULTIRUN)
        return check_sweep(cfg, loader, max_jobs=max_jobs)


def test_there_are_sweeps_and_launchers():
    assert {"timenoise_grid", "timenoise_grid_svd", "start_step", "optuna"} <= set(SWEEPS)
    assert {"basic", "joblib", "slurm"} <= set(LAUNCHERS)


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_composes_and_its_values_validate(name, tmp_path):
    cfg = compose("train", [f"+sweep={name}"], output_dir=tmp_path)
    assert cfg.sweep.name == ("sweep" if name == "base" else name)
    HydraConfig.instance().set_config(cfg)  # sweep.group reads ${hydra:sweep.dir}
    assert cfg.sweep.group == f"{cfg.sweep.name}:{cfg.hydra.sweep.dir}"
    assert all(isinstance(t, str) and 0 < len(t) <= 64 for t in cfg.sweep.tags)  # W&B limit
    if name != "base":
        assert cfg.hydra.sweeper.params
    assert sweep_check([f"+sweep={name}"]) is None


def test_paper_grids_have_the_papers_shape(tmp_path):
    grid = compose("train", ["+sweep=timenoise_grid"], output_dir=tmp_path).hydra.sweeper.params
    assert [float(v) for v in grid["cond_noise.a"].split(",")] == [0.1, 1, 5]
    beta = [float(v) for v in grid["cond_noise.beta_m"].split(",")]
    assert beta == pytest.approx([1.5 * 25 / 100, 1.5, 1.5 * 700 / 100])  # around the default
    svd = compose("train", ["+sweep=timenoise_grid_svd"], output_dir=tmp_path).hydra.sweeper
    assert [float(v) for v in svd.params["cond_noise.beta_m"].split(",")] == [3.75, 15, 105]
    M = compose("train", ["+sweep=start_step_svd"], output_dir=tmp_path).hydra.sweeper.params
    expected = [0.002 * (700 / 0.002) ** f for f in (1.0, 0.96, 0.92, 0.88, 0.84)]
    assert [float(v) for v in M["sampler.M"].split(",")] == pytest.approx(expected, rel=0.01)


def test_sweep_tags_carry_the_swept_values(tmp_path):
    cfg = compose("train", ["+sweep=timenoise_grid", "cond_noise.a=5"], output_dir=tmp_path)
    assert {"sweep", "timenoise_grid", "a=5", "beta_m=1.5"} <= set(cfg.sweep.tags)


def test_wandb_logger_takes_the_sweep_group_and_tags(tmp_path):
    cfg = compose("train", ["+sweep=timenoise_grid", "logger=wandb"], output_dir=tmp_path)
    HydraConfig.instance().set_config(cfg)
    assert cfg.logger.wandb.group == cfg.sweep.group
    assert list(cfg.logger.wandb.tags) == list(cfg.sweep.tags)
    plain = compose("train", ["logger=wandb"], output_dir=tmp_path)
    assert plain.logger.wandb.group == "train" and list(plain.logger.wandb.tags) == []


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_launcher_composes(name, tmp_path):
    cfg = compose("train", [f"+launcher={name}"], output_dir=tmp_path)
    assert cfg.hydra.launcher._target_.split(".")[-1] in {
        "BasicLauncher",
        "JoblibLauncher",
        "SlurmLauncher",
        "LocalLauncher",
    }


def test_slurm_launcher_runs_one_ddp_task_per_gpu(tmp_path):
    cfg = compose(
        "train",
        ["+launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4"],
        output_dir=tmp_path,
    )
    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.launcher.tasks_per_node == 4
    assert cfg.trainer.strategy == "ddp"
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (2, 4)
    assert cfg.ckpt_path == "last"


def test_optuna_sweeper_searches_a_and_beta_m_against_motion_and_alignment(tmp_path):
    cfg = compose("train", ["+sweep=optuna"], output_dir=tmp_path)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert set(sweeper.params) == {"cond_noise.a", "cond_noise.beta_m"}
    assert list(cfg.optimized_metric) == ["val/ms_error", "val/clip_alignment"]
    assert [str(d) for d in sweeper.direction] == ["minimize", "maximize"]


def test_job_overrides_expand_grids_and_interval_ends():
    jobs = job_overrides(["a=1,2", "b=x", "c=range(3)"])
    assert len(jobs) == 6 and ["a=2", "b=x", "c=2"] in jobs
    assert job_overrides(["a=tag(log, interval(0.5, 4))"]) == [["a=0.5"], ["a=4.0"]]
    # too many jobs: value by value, the other keys at their first value
    jobs = job_overrides(["a=1,2,3", "b=4,5,6"], max_jobs=4)
    assert len(jobs) == 6 and ["a=1", "b=6"] in jobs and ["a=3", "b=4"] in jobs


@pytest.mark.parametrize(
    "overrides, bad",
    [
        (["cond_noise.beta_m=1,-1"], "cond_noise.beta_m=-1"),
        (["cond_noise.a=0.1,0"], "cond_noise.a=0"),
        (["+sweep=timenoise_grid", "cond_noise.a=5,-2"], "cond_noise.a=-2"),
        (["cond_noise=constant,timenoise", "cond_noise.beta_m=2,-3"], "cond_noise.beta_m=-3"),
        (["sampler.M=10,0.001"], "sampler.M=0.001"),
        (["+sweep=optuna", "cond_noise.a=tag(log, interval(-1, 5))"], "cond_noise.a=-1.0"),
        (["+sweep=start_step", "model.schedule.sigma_min=30"], "sampler.M=22.4"),  # from params
        (["cond_noise.beta_m=1,2,-1", "cond_noise.a=1,2,3"], "cond_noise.beta_m=-1"),
    ],
)
def test_check_sweep_names_each_bad_value_and_its_range(overrides, bad):
    message = sweep_check(overrides, max_jobs=4)
    assert message is not None and bad in message and "allowed:" in message
    assert message.count(f"{bad} is out of range") == 1  # once, however many jobs have it


def test_check_sweep_passes_valid_sweeps():
    assert sweep_check(["cond_noise.beta_m=0.5,1.5", "cond_noise.a=1,5"]) is None
    assert sweep_check(["+sweep=start_step"], config_name="sample") is None


def test_invalid_sweep_values_fail_before_any_job_launches(tmp_path):
    sweep_dir = tmp_path / "sweep"
    out = run_sweep_cli(["train", "-m", "cond_noise.beta_m=1,-1", f"hydra.sweep.dir={sweep_dir}"])
    assert out.returncode != 0
    assert "cond_noise.beta_m=-1" in out.stderr and "allowed: > 0" in out.stderr, out.stderr
    assert "no job was launched" in out.stderr
    assert not sweep_dir.exists()  # no job folder, not even multirun.yaml


def test_two_by_two_multirun_writes_four_runs_and_a_summary(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["+sweep=timenoise_grid", "cond_noise.beta_m=0.5,1.5", "cond_noise.a=1,5"]
    out = run_sweep_cli(["train", "-m", *args, *TINY, f"hydra.sweep.dir={sweep_dir}"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2", "3"]
    for job in jobs:
        assert (sweep_dir / job / "csv" / "metrics.csv").is_file()
        status = OmegaConf.load(sweep_dir / job / ".hydra" / "job_status.yaml")
        assert status.status == "COMPLETED"
    rows = list(csv.DictReader(open(sweep_dir / "summary.csv")))
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows)
    assert {(r["cond_noise.beta_m"], r["cond_noise.a"]) for r in rows} == {
        ("0.5", "1"),
        ("0.5", "5"),
        ("1.5", "1"),
        ("1.5", "5"),
    }
    assert all(float(r["train/loss"]) > 0 for r in rows)
    assert (sweep_dir / "summary.png").stat().st_size > 1000
    config = OmegaConf.load(sweep_dir / "2" / ".hydra" / "config.yaml")
    assert config.sweep.name == "timenoise_grid"  # what W&B logs as the run's config


def test_a_failed_job_is_skipped_and_noted_in_the_summary(tmp_path):
    sweep_dir = tmp_path / "sweep"
    out = run_sweep_cli(
        ["train", "-m", "+trainer.fast_dev_run=0,bogus", *TINY, f"hydra.sweep.dir={sweep_dir}"]
    )
    assert out.returncode != 0  # Hydra reports the failed job
    rows = {r["job"]: r for r in csv.DictReader(open(sweep_dir / "summary.csv"))}
    assert rows["0"]["status"] == "completed" and float(rows["0"]["train/loss"]) > 0
    assert rows["1"]["status"] == "failed" and "bogus" in rows["1"]["note"]
    assert "skipped job 1" in out.stdout


def _fake_job(folder: Path, overrides, metrics=None, status=None, evaluate=None):
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (folder / "csv").mkdir()
        header = ",".join(["step", *metrics])
        last = ",".join(["5", *(str(v) for v in metrics.values())])
        blank = "6" + "," * len(metrics)  # a later row without these metrics
        (folder / "csv" / "metrics.csv").write_text(f"{header}\n{last}\n{blank}\n")
    if evaluate is not None:
        (folder / "metrics.json").write_text(json.dumps({"metrics": evaluate}))
    if status is not None:
        OmegaConf.save(OmegaConf.create(status), folder / ".hydra" / "job_status.yaml")


def test_summarize_reads_metrics_skips_failures_and_plots_motion_and_alignment(tmp_path):
    metrics = {"val/motion_score": 2.0, "val/clip_alignment": 0.9, "train/loss": 0.5}
    _fake_job(tmp_path / "0", ["cond_noise.a=1", "seed=1"], metrics)
    _fake_job(tmp_path / "1", ["cond_noise.a=5", "seed=1"], {**metrics, "val/motion_score": 1.0})
    _fake_job(
        tmp_path / "2", ["cond_noise.a=9", "seed=1"], status={"status": "FAILED", "error": "boom"}
    )
    _fake_job(tmp_path / "10", ["cond_noise.a=0.5", "seed=1"])  # no metrics, no status
    result = summarize(tmp_path, quiet=True)
    rows = list(csv.DictReader(open(result["csv"])))
    assert [r["job"] for r in rows] == ["0", "1", "2", "10"]  # numeric job order
    assert "seed" not in rows[0]  # not swept
    assert rows[1]["val/motion_score"] == "1.0" and rows[0]["val/clip_alignment"] == "0.9"
    assert (rows[2]["status"], rows[2]["note"]) == ("failed", "boom")
    assert rows[3]["status"] == "no_metrics"
    assert result["png"].stat().st_size > 1000
    assert [j["job"] for j in result["skipped"]] == ["2", "10"]


def test_evaluate_jobs_inherit_the_swept_values_of_the_videos_they_scored(tmp_path):
    samples, evals = tmp_path / "sample", tmp_path / "evaluate"
    for i, M in enumerate([700, 91]):
        _fake_job(samples / str(i), [f"sampler.M={M}", "images=x"])
        _fake_job(
            evals / str(i),
            [f"generated={samples / str(i)}"],
            evaluate={"motion_score": 1.0 + i, "clip_alignment": 0.8},
        )
    rows = list(csv.DictReader(open(summarize(evals, quiet=True)["csv"])))
    assert [r["sampler.M"] for r in rows] == ["700", "91"]
    assert [r["motion_score"] for r in rows] == ["1.0", "2.0"]


def test_objective_returns_the_named_final_metrics():
    values = {"val/ms_error": 0.25, "val/clip_alignment": 0.75, "train/loss": 1.0}
    assert objective(OmegaConf.create({}), values) is None
    assert objective(OmegaConf.create({"optimized_metric": "val/ms_error"}), values) == 0.25
    both = OmegaConf.create({"optimized_metric": ["val/ms_error", "val/clip_alignment"]})
    assert objective(both, values) == (0.25, 0.75)
    with pytest.raises(KeyError, match="val/fvd"):
        objective(OmegaConf.create({"optimized_metric": "val/fvd"}), values)
