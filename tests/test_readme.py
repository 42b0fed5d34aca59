"""Every command of the README is tried (issue 17, item 6).

Each command of the README's bash blocks must match exactly one row of ``EXPECTED``: either it
runs offline on the CPU (tiny models, shipped data; with ``TINY`` overrides appended, outputs in a
temporary folder) and writes its output, or it fails at once, before anything is built, with a
message that names what to provide (its weights, data or GPU are absent here). A README command no
row covers fails ``test_every_readme_command_has_one_expectation``. ``CIL_README=<file>`` tests
another copy of the README (``tests/readme_commands.py``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import import_module

import pytest

from .readme_commands import (
    README,
    Result,
    argv_of,
    commands,
    examples,
    run_in_process,
    with_overrides,
)

# Appended to every command that trains or samples: a few steps, few sampler steps, CSV logs.
TINY = [
    "trainer.max_steps=2",
    "sampler.num_steps=2",
    "callbacks.validation_metrics.every_n_steps=0",
    "logger=csv",
]
TWO_JOBS = ["cond_noise.beta_m=0.375,1.5", "cond_noise.a=1"]  # a sweep cut to 2 jobs
RESUMED = "outputs/train/2026-11-24/10-00-00"  # the README's resume example
NOT_FOUND = r"is not an existing folder"


@dataclass(frozen=True)
class Expect:
    pattern: str  # re.search on the command (``python -m`` ... joined onto one line)
    runs: bool  # True: runs and writes ``output``; False: fails with ``error``
    error: str = ""  # regex the failure's message must match (re.S)
    output: str = "checkpoints/last.ckpt"  # file the run writes, relative to its run folder
    extra: tuple[str, ...] = ()  # overrides appended after TINY (the same key replaced)
    prepare: tuple[str, ...] = ()  # a command run first (e.g. the run a resume continues)
    multirun: bool = False  # outputs per job under hydra.sweep.dir/<n>/
    gpu: bool = False  # asks for CUDA: runs where there is one, else fails with ``error``


GPU_ERROR = r"trainer\.accelerator='gpu' asks for a GPU, but torch sees no CUDA device.*trainer=cpu"
CKPT_ERROR = r"ckpt='outputs/train/\S+/last\.ckpt' does not exist; expected a training checkpoint"

EXPECTED: tuple[Expect, ...] = (
    Expect(r"train \+experiment=tiny_\w+( \S+=\S+)*$", True),
    Expect(r"train trainer=(gpu|ddp|fsdp)$", False, GPU_ERROR, gpu=True),
    Expect(
        rf"train hydra\.run\.dir={RESUMED} ckpt_path={RESUMED}/checkpoints/last\.ckpt$",
        True,
        extra=("trainer.max_steps=3", f"hydra.run.dir={RESUMED}"),
        prepare=("train", f"hydra.run.dir={RESUMED}", *TINY),
    ),
    Expect(r"--cfg job$", True, output=""),
    Expect(
        r"train \+experiment=(svd|wan|i2vgenxl)_\w+ .*model\.pretrained_path=",
        False,
        rf"data\.root='/webvid' {NOT_FOUND}.*model\.pretrained_path='weights/\S+' {NOT_FOUND}",
    ),
    Expect(
        r"train \+experiment=(dynamicrafter|videocrafter)_timenoise data\.root=/webvid$",
        False,
        rf"data\.root='/webvid' {NOT_FOUND}.*model\.ckpt='\S+/model\.ckpt' is not an existing file",
    ),
    Expect(r"train \+experiment=\w+_tiny_\w+$", True),
    Expect(r"train \+experiment=svd_\w+ \+scale=cpu$", True),
    Expect(r"^python -m cil_lightning stats ", False, rf"model\.pretrained_path='\S+' {NOT_FOUND}"),
    Expect(
        r"cil_lightning sample images=",
        False,
        rf"images='path/to/images/' does not exist.*sampler\.stats='\S+' is not an existing file"
        rf".*{CKPT_ERROR}",
    ),
    Expect(
        r"cil_lightning sample ckpt=\S+ images=photo\.png",
        False,
        rf"images='photo\.png' does not exist.*{CKPT_ERROR}",
    ),
    Expect(r"cil_lightning (export|diagnose) ckpt=", False, CKPT_ERROR + r".*cil_lightning train"),
    Expect(r"cil_lightning evaluate generated=DIR", False, r"generated=DIR is not a folder"),
    Expect(r"cil_lightning\.metrics\.protocol UCF101_DIR", False, r"no videos under UCF101_DIR"),
    Expect(r"evaluate protocol=ucf101 generated=GEN", False, r"generated=GEN is not a folder"),
    Expect(r"train -m \+sweep=timenoise_grid$", True, extra=TWO_JOBS, multirun=True),
    Expect(
        r"\+sweep=timenoise_grid_svd \+launcher=slurm",
        False,
        r'Could not detect "srun", are you indeed on a slurm cluster',
        extra=("cond_noise.beta_m=15", "cond_noise.a=1"),  # one job's config to check, not 9
    ),
    Expect(r"train -m \+sweep=base cond_noise", True, extra=("cond_noise.a=1",), multirun=True),
    Expect(r"sample -m \+sweep=start_step_svd", False, r"images='DIR' does not exist"),
    Expect(r"evaluate -m generated=SWEEP/0", False, r"generated=SWEEP/0 is not a folder"),
    Expect(
        r"\+launcher=joblib hydra\.launcher\.n_jobs=",
        True,
        extra=(*TWO_JOBS, "hydra.launcher.n_jobs=2"),
        multirun=True,
    ),
    Expect(
        r"\+sweep=optuna .*clip_alignment",
        False,
        r"metric\.clip\.weights=\S+ does not exist \(callbacks\.validation_metrics\.metrics=",
    ),
    Expect(
        r"\+sweep=optuna hydra\.sweeper\.direction=minimize",
        True,
        extra=("hydra.sweeper.n_trials=2",),
        multirun=True,
    ),
    Expect(r"diagnose model=svd ", False, rf"model\.pretrained_path='\S+' {NOT_FOUND}"),
    Expect(r"train data=\w+ data\.root=/\w+$", False, rf"data\.root='/\w+' {NOT_FOUND}"),
)


def _matches(command: str) -> list[Expect]:
    return [e for e in EXPECTED if re.search(e.pattern, command)]


def _uncovered(readme) -> list[str]:
    """Problems of the table against ``readme``: commands with no row or several, unused rows."""
    cmds = commands(readme)
    problems = [f"{len(_matches(c))} rows match: {c}" for c in cmds if len(_matches(c)) != 1]
    problems += [
        f"no README command for row {e.pattern!r}"
        for e in EXPECTED
        if not any(re.search(e.pattern, c) for c in cmds)
    ]
    return problems


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _runs_here(e: Expect) -> bool:
    return e.runs or (e.gpu and _cuda())


def _slow(e: Expect) -> bool:
    return _runs_here(e) and bool(e.output)  # runs that train; `--cfg job` is instant


def _cases(slow: bool) -> list:
    return [
        pytest.param(c, id=re.sub(r"\W+", "_", c[len("python -m ") :])[:90])
        for c in commands()
        if len(_matches(c)) == 1 and _slow(_matches(c)[0]) == slow
    ]


def _run(module: str, args: list[str]) -> Result:
    """``python -m <module> <args>`` in this process; a module other than the CLI by its main()."""
    if module == "cil_lightning":
        return run_in_process(args)
    try:
        code = import_module(module).main(args)
    except SystemExit as exit_:
        code = exit_.code
    return Result(code, code if isinstance(code, str) else "")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Relative paths (outputs/, weights/, stats/) resolve in a fresh folder; no local weights."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIL_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return tmp_path


def test_every_readme_command_has_one_expectation():
    assert commands(), f"no commands found in {README}"
    assert not _uncovered(README), "\n".join(_uncovered(README))


def test_a_new_readme_command_without_a_row_is_reported(tmp_path):
    scratch = tmp_path / "README.md"
    new = "python -m cil_lightning train +experiment=brand_new"
    scratch.write_text(README.read_text() + f"\n```bash\n{new} \\\n    trainer.max_steps=1\n```\n")
    assert f"0 rows match: {new} trainer.max_steps=1" in _uncovered(scratch)


@pytest.mark.parametrize("command", _cases(slow=False))
def test_readme_command_fails_clearly_or_runs_at_once(command, in_tmp):
    (e,) = _matches(command)
    module, args = argv_of(command)
    if module == "cil_lightning":
        dirs = [f"hydra.run.dir={in_tmp / 'run'}", f"hydra.sweep.dir={in_tmp / 'sweep'}"]
        args = with_overrides(args, [*e.extra, *dirs])
    start = time.perf_counter()
    result = _run(module, args)
    elapsed = time.perf_counter() - start
    if e.runs:
        assert result.ok, result.output
        assert "task_name: train" in result.output  # the composed config was printed
        return
    assert not result.ok, f"expected a failure, it ran:\n{result.output}"
    assert re.search(e.error, result.output, re.S), result.output
    assert "Seed set" not in result.output  # failed before anything was built
    if "srun" not in e.error:  # submitit's own error comes as its traceback
        assert "Traceback" not in result.output, result.output
    assert elapsed < 30, f"{elapsed:.1f} s before the error"


def test_readme_example_output_is_what_the_command_prints(in_tmp):
    (example,) = examples()
    command, shown = example
    _, args = argv_of(command)
    result = run_in_process([*args, f"hydra.run.dir={in_tmp / 'run'}"])
    assert not result.ok
    for line in shown:
        assert line in result.output.splitlines(), (line, result.output)


@pytest.mark.slow
@pytest.mark.parametrize("command", _cases(slow=True))
def test_readme_command_runs(command, in_tmp):
    (e,) = _matches(command)
    module, args = argv_of(command)
    dirs = [f"hydra.run.dir={in_tmp / 'run'}", f"hydra.sweep.dir={in_tmp / 'sweep'}"]
    if e.prepare:
        first = run_in_process(list(e.prepare))
        assert first.ok, first.output
    result = run_in_process(with_overrides(args, [*TINY, *dirs, *e.extra]))
    assert result.ok, result.output
    if e.multirun:
        jobs = sorted(p.name for p in (in_tmp / "sweep").iterdir() if p.name.isdigit())
        assert jobs == ["0", "1"], jobs
        for job in jobs:
            assert (in_tmp / "sweep" / job / e.output).is_file(), job
        assert (in_tmp / "sweep" / "summary.csv").is_file()
    else:
        run_dir = in_tmp / (RESUMED if e.prepare else "run")
        assert (run_dir / e.output).is_file(), result.output
    if e.prepare:  # resumed from the prepared run's step 2, it went on to step 3
        import torch

        ckpt = torch.load(run_dir / e.output, map_location="cpu", weights_only=False)
        assert ckpt["global_step"] == 3
