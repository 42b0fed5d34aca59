import subprocess
import sys
import time

from cil_lightning.cli import TASKS, main

from .conftest import run_cli


def test_help_is_fast_and_does_not_import_torch():
    code = (
        "import sys, runpy; sys.argv = ['cil_lightning', '--help'];\n"
        "try:\n    runpy.run_module('cil_lightning', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('torch', 'lightning', 'hydra', 'diffusers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    for task in ("train", "sample", "evaluate", "stats"):
        assert task in out.stdout
    assert elapsed < 2.0, f"--help took {elapsed:.2f} s"


def test_a_task_not_yet_available_exits_2_and_says_so(monkeypatch, capsys):
    monkeypatch.setitem(TASKS, "diagnose", (None, "leakage diagnostic"))
    assert main(["diagnose"]) == 2
    assert "not available yet" in capsys.readouterr().err


def test_unknown_task_exits_2(capsys):
    assert main(["trian"]) == 2
    assert "unknown task 'trian'" in capsys.readouterr().err


def test_bad_value_fails_before_any_model_is_built(tmp_path):
    start = time.perf_counter()
    out = run_cli(
        "train",
        "cond_noise.beta_m=-1",
        "logger=none",
        "callbacks=none",
        f"hydra.run.dir={tmp_path}",
    )
    elapsed = time.perf_counter() - start
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "cond_noise.beta_m=-1" in text and "allowed: > 0" in text
    # Nothing was built: no Lightning banner, no model summary, no seed message.
    assert "Seed set" not in text and "Trainable params" not in text
    assert elapsed < 30


def test_train_task_word_is_visible_to_ddp_children(tmp_path):
    """Inside the task, sys.argv[1] is the task word (Lightning relaunches with sys.argv[1:])."""
    from cil_lightning.tasks import run_hydra_task

    seen = {}

    def fn(cfg):
        seen["argv"] = list(sys.argv)
        seen["task_name"] = cfg.task_name

    saved = list(sys.argv)
    try:
        sys.argv = ["cil_lightning", "train", f"hydra.run.dir={tmp_path}"]
        run_hydra_task("train", [f"hydra.run.dir={tmp_path}"], fn)
        assert sys.argv == ["cil_lightning", "train", f"hydra.run.dir={tmp_path}"]
    finally:
        sys.argv = saved
    assert seen["argv"][1:] == ["train", f"hydra.run.dir={tmp_path}"]
    assert seen["task_name"] == "train"
