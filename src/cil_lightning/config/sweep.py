"""Hydra multiruns: check every swept value before launch, gather the jobs' metrics after.

Three pieces, used by the Hydra callbacks of ``cil_lightning.config.hydra_callbacks`` (configured in
``conf/hydra/default.yaml``) and by the train task:

- :func:`job_overrides` / :func:`check_sweep`: expand a multirun's sweep (``hydra.sweeper.params``
  and the command line) into the jobs' override lists, compose each job's config exactly as the
  sweeper will, and run :func:`cil_lightning.config.checks.validate` on it.
- :func:`summarize`: read every job folder of a sweep folder (``.hydra/overrides.yaml`` and
  ``csv/metrics.csv`` of ``train``, or ``metrics.json`` of ``evaluate``) and write ``summary.csv``
  and ``summary.png`` (motion score and CLIP alignment, else MS error, else the loss, against each
  swept value) into it. ``python -m cil_lightning.config.sweep DIR`` does the same by hand.
- :func:`objective`: the number(s) a Hydra sweeper such as Optuna optimises, named by the config
  key ``optimized_metric``.

Only omegaconf and hydra are imported at module level; matplotlib is imported when plotting.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# Metrics plotted against the swept values, in this order of preference; the first two groups
# that exist are drawn (motion against alignment, the paper's trade-off), else the losses.
PLOT_METRICS: tuple[tuple[str, ...], ...] = (
    ("val/motion_score", "motion_score"),
    ("val/clip_alignment", "clip_alignment"),
    ("val/ms_error", "ms_error"),
    ("val/temporal_consistency", "temporal_consistency"),
    ("val/loss",),
    ("train/loss",),
)
STATUS_FILE = "job_status.yaml"  # written into each job's .hydra/ folder by SweepSummary


# ----------------------------------------------------------------------------------------------
# Before launch: expand the sweep and validate every job's config.


def sweep_arguments(config: DictConfig) -> list[str]:
    """The sweep as the sweeper sees it: ``hydra.sweeper.params`` then the command line."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    params = OmegaConf.to_container(params, resolve=False) if params else {}
    args = [f"{k}={v}" for k, v in params.items()]
    return args + list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))


def _override_values(override) -> list[str]:
    """String values of one parsed override: a sweep's choices, an interval's two ends."""
    from hydra.core.override_parser.types import IntervalSweep

    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    if override.is_discrete_sweep():
        return list(override.sweep_string_iterator())
    value = override.value()
    if isinstance(value, IntervalSweep):  # Optuna: a continuous range; both ends must be valid
        return [repr(value.start), repr(value.end)]
    raise ValueError(f"cannot expand the sweep {override.input_line!r}")


def job_overrides(arguments: Sequence[str], config_loader=None, max_jobs: int = 64):
    """Override lists to check: every job of the grid, or one list per swept value if larger.

    Later arguments for the same key replace earlier ones (the basic sweeper's rule). A grid of
    more than ``max_jobs`` jobs is checked value by value, the other keys at their first value.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=config_loader)
    values: dict[str, list[str]] = {}
    for override in parser.parse_overrides(list(arguments)):
        key = override.get_key_element()
        values[key] = [f"{key}={v}" for v in _override_values(override)]
    lists = list(values.values())
    if math.prod(len(v) for v in lists) <= max_jobs:
        return [list(job) for job in itertools.product(*lists)]
    jobs = []
    for i, options in enumerate(lists):
        for option in options:
            jobs.append([option if j == i else other[0] for j, other in enumerate(lists)])
    return jobs


def check_sweep(config: DictConfig, config_loader=None, max_jobs: int = 64) -> str | None:
    """Compose each job's config as the sweeper will and validate it.

    Returns None when every swept value is valid, else the message to abort with (each bad
    ``key=value`` once, with its allowed range). Jobs that fail to compose are left for Hydra,
    which reports them itself before launching.
    """
    from .checks import ConfigError, validate

    if config_loader is None:
        from hydra.core.global_hydra import GlobalHydra

        config_loader = GlobalHydra.instance().config_loader()
    problems: dict[str, list[str]] = {}
    for overrides in job_overrides(sweep_arguments(config), config_loader, max_jobs):
        try:
            job_cfg = config_loader.load_sweep_config(config, overrides)
        except Exception:  # noqa: BLE001 - a composition error is Hydra's to report
            continue
        try:
            validate(job_cfg)
        except ConfigError as err:
            for line in str(err).splitlines()[1:]:
                problems.setdefault(line.rstrip(), overrides)
    if not problems:
        return None
    lines = [f"{line}\n    (e.g. the job {' '.join(o)})" for line, o in problems.items()]
    return "invalid sweep values; no job was launched:\n" + "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# After the jobs: gather each job's final metrics into summary.csv and summary.png.


def _number(text: str) -> float | str:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _parse_overrides(lines: Iterable[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        if sep:
            out[key.lstrip("+~")] = value
    return out


def final_metrics_csv(path: Path) -> dict[str, float]:
    """The last non-empty value of every column of a Lightning ``CSVLogger`` metrics file."""
    last: dict[str, float] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and value not in (None, ""):
                    number = _number(value)
                    if isinstance(number, float):
                        last[key] = number
    return last


def read_job(folder: Path) -> dict:
    """One job folder: its overrides, final metrics, status and a note when something is missing."""
    job: dict = {"job": folder.name, "dir": str(folder), "status": "completed", "note": ""}
    overrides = OmegaConf.load(folder / ".hydra" / "overrides.yaml")
    job["overrides"] = _parse_overrides(overrides)
    # evaluate jobs of a sampling sweep: inherit the swept values of the folder they scored
    generated = job["overrides"].get("generated")
    if generated and (Path(generated) / ".hydra" / "overrides.yaml").is_file():
        inherited = OmegaConf.load(Path(generated) / ".hydra" / "overrides.yaml")
        job["overrides"] = {**_parse_overrides(inherited), **job["overrides"]}
    metrics: dict[str, float] = {}
    if (folder / "csv" / "metrics.csv").is_file():
        metrics.update(final_metrics_csv(folder / "csv" / "metrics.csv"))
    if (folder / "metrics.json").is_file():
        values = json.loads((folder / "metrics.json").read_text()).get("metrics", {})
        metrics.update({k: float(v) for k, v in values.items() if isinstance(v, (int, float))})
    job["metrics"] = metrics
    status_path = folder / ".hydra" / STATUS_FILE
    if status_path.is_file():
        status = OmegaConf.to_container(OmegaConf.load(status_path))
        job["status"] = str(status.get("status", "unknown")).lower()
        if status.get("error"):
            job["note"] = str(status["error"])
    if job["status"] == "completed" and not metrics:
        job["status"], job["note"] = "no_metrics", "no csv/metrics.csv or metrics.json"
    return job


def _job_folders(sweep_dir: Path) -> list[Path]:
    found = [
        p.parent.parent
        for p in sweep_dir.rglob(".hydra/overrides.yaml")
        if ".submitit" not in p.parts and p.parent.parent != sweep_dir
    ]

    def order(p: Path):
        rel = p.relative_to(sweep_dir).parts
        return [(0, int(x), "") if x.isdigit() else (1, 0, x) for x in rel]

    return sorted(found, key=order)


def swept_keys(jobs: Sequence[Mapping]) -> list[str]:
    """Override keys whose value differs between jobs, in first-seen order."""
    keys: dict[str, set] = {}
    for job in jobs:
        for key, value in job["overrides"].items():
            keys.setdefault(key, set()).add(value)
    for job in jobs:  # a key missing from some jobs also varies
        for key in keys:
            keys[key].add(job["overrides"].get(key))
    return [k for k, v in keys.items() if len(v) > 1]


def plot_metrics(jobs: Sequence[Mapping]) -> list[str]:
    """Metric columns to plot: motion and alignment if logged, else the first ones present."""
    present = {k for job in jobs for k in job["metrics"]}
    chosen = []
    for names in PLOT_METRICS:
        name = next((n for n in names if n in present), None)
        if name is not None:
            chosen.append(name)
    return chosen[:2]


def summarize(sweep_dir: str | Path, quiet: bool = False) -> dict:
    """Write ``summary.csv`` and ``summary.png`` into a multirun folder; return what was found.

    Failed jobs (or jobs without metrics) keep a row with their status and note, and are left
    out of the plot. Returns ``{"csv": path, "png": path or None, "jobs": [...],
    "skipped": [...]}``.
    """
    sweep_dir = Path(sweep_dir)
    jobs = [read_job(folder) for folder in _job_folders(sweep_dir)]
    keys = swept_keys(jobs)
    metric_names = sorted({k for job in jobs for k in job["metrics"]})
    csv_path = sweep_dir / "summary.csv"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", "status", *keys, *metric_names, "note", "dir"])
        for job in jobs:
            writer.writerow(
                [job["job"], job["status"]]
                + [job["overrides"].get(k, "") for k in keys]
                + [job["metrics"].get(m, "") for m in metric_names]
                + [job["note"].replace("\n", " ")[:500], job["dir"]]
            )
    ok = [job for job in jobs if job["status"] == "completed"]
    skipped = [job for job in jobs if job["status"] != "completed"]
    png_path = _plot(sweep_dir / "summary.png", ok, keys, plot_metrics(ok), len(skipped))
    if not quiet:
        print(f"cil_lightning sweep summary: {len(ok)} of {len(jobs)} jobs in {csv_path}")
        for job in skipped:
            print(f"  skipped job {job['job']} ({job['status']}): {job['note'][:200]}")
    return {"csv": csv_path, "png": png_path, "jobs": jobs, "skipped": skipped}


def _plot(path: Path, jobs, keys, metrics, num_skipped: int) -> Path | None:
    """Rows: metrics; columns: swept keys; one line per combination of the other swept keys."""
    if not jobs or not keys or not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(metrics), len(keys), figsize=(4 * len(keys), 3 * len(metrics)), squeeze=False
    )
    for c, key in enumerate(keys):
        values = [job["overrides"].get(key, "") for job in jobs]
        numeric = all(isinstance(_number(v), float) for v in values)
        categories = sorted(set(values), key=lambda v: _number(v) if numeric else str(v))
        others = [k for k in keys if k != key]
        for r, metric in enumerate(metrics):
            ax = axes[r][c]
            series: dict[tuple, list] = {}
            for job in jobs:
                if metric in job["metrics"]:
                    label = tuple(job["overrides"].get(k, "") for k in others)
                    x = job["overrides"].get(key, "")
                    x = _number(x) if numeric else categories.index(x)
                    series.setdefault(label, []).append((x, job["metrics"][metric]))
            for label, points in sorted(series.items()):
                points.sort()
                name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(others, label))
                ax.plot(*zip(*points), marker="o", label=name or None)
            if numeric and len(categories) > 2 and min(map(_number, categories)) > 0:
                span = max(map(_number, categories)) / min(map(_number, categories))
                if span >= 20:
                    ax.set_xscale("log")
            if not numeric:
                ax.set_xticks(range(len(categories)), categories, rotation=30, fontsize=7)
            ax.set_xlabel(key)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            if 1 < len(series) <= 10 and r == 0:
                ax.legend(fontsize=7)
    title = f"{len(jobs)} jobs"
    if num_skipped:
        title += f" ({num_skipped} failed or without metrics, skipped; see summary.csv)"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# The sweeper's objective.


def final_values(trainer, callbacks: Iterable = ()) -> dict[str, float]:
    """Every final metric of a fit: ``trainer.callback_metrics`` and the last values of the
    validation-metrics callbacks (they log to the loggers directly, not through ``self.log``)."""
    values = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for cb in callbacks:
        last = getattr(cb, "last", None)
        if isinstance(last, Mapping):
            values.update({k: float(v) for k, v in last.items() if isinstance(v, (int, float))})
    return values


def objective(cfg: DictConfig, values: Mapping[str, float]):
    """The value(s) of ``cfg.optimized_metric`` (a name or a list of names) for a sweeper.

    Returns None when the key is unset or null, a float for one name, a tuple for several (a
    multi-objective Optuna study). A missing metric raises KeyError naming what was logged.
    """
    names = OmegaConf.select(cfg, "optimized_metric", default=None)
    if names is None:
        return None
    many = not isinstance(names, str)
    names = list(names) if many else [names]
    missing = [n for n in names if n not in values]
    if missing:
        raise KeyError(
            f"optimized_metric {missing} was not logged; logged: {sorted(values)} "
            "(val/clip_alignment needs clip_alignment in callbacks.validation_metrics.metrics)"
        )
    picked = tuple(float(values[n]) for n in names)
    return picked if many else picked[0]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(
            "usage: python -m cil_lightning.config.sweep SWEEP_DIR  (writes summary.csv and .png)"
        )
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    result = summarize(argv[0])
    return 0 if result["jobs"] else 1


if __name__ == "__main__":
    sys.exit(main())
