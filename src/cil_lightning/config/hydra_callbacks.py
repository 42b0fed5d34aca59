"""Hydra callbacks of every multirun (``hydra.callbacks`` in ``conf/hydra/default.yaml``).

- :class:`ValidateSweep` (``on_multirun_start``): composes each job's config as the sweeper will
  and validates it; one bad swept value aborts the multirun before any job folder exists.
- :class:`SweepSummary` (``on_job_end``, ``on_multirun_end``): records each job's status in its
  ``.hydra/job_status.yaml`` and writes ``summary.csv`` and ``summary.png`` into the sweep folder,
  also when a job failed (Hydra then skips ``on_multirun_end``; an exit hook writes it instead).

Hydra turns exceptions raised by callbacks into warnings, so ValidateSweep aborts with
``SystemExit`` (exit status 1 and the message on stderr).
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class ValidateSweep(Callback):
    """Validate every swept value (``cil_lightning.config.checks``) before a multirun launches.

    Args:
        enabled: false skips the check.
        max_jobs: grids up to this many jobs are checked job by job (so ranges that depend on
            another swept key, such as ``sampler.M`` on the model, are checked together); larger
            grids value by value.
    """

    def __init__(self, enabled: bool = True, max_jobs: int = 64) -> None:
        self.enabled, self.max_jobs = enabled, max_jobs

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        from .sweep import check_sweep

        message = check_sweep(config, max_jobs=self.max_jobs)
        if message:
            raise SystemExit(f"cil_lightning: {message}")


def _global_rank() -> int:
    """Nonzero in DDP workers (Lightning's RANK / LOCAL_RANK, or SLURM's task id)."""
    ranks = [os.environ.get(v, "") for v in ("RANK", "LOCAL_RANK", "SLURM_PROCID")]
    return max((int(r) for r in ranks if r.isdigit()), default=0)


class SweepSummary(Callback):
    """Gather the jobs' final metrics into ``summary.csv`` and ``summary.png`` of the sweep folder.

    Args:
        enabled: false writes neither the status files nor the summary.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._sweep_dir: Path | None = None
        self._done = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        # resolved now, from the same config (and ${now:} cache) the sweeper uses
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        self._done = False
        atexit.register(self._write_if_pending)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not self.enabled or _global_rank() != 0:
            return
        status = getattr(job_return.status, "name", str(job_return.status))
        record: dict[str, Any] = {"status": status}
        value = job_return._return_value  # the property re-raises a failed job's exception
        if isinstance(value, BaseException):
            record["error"] = f"{type(value).__name__}: {value}"
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            record["objective"] = float(value)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, float) for v in value):
            record["objective"] = [float(v) for v in value]
        output_dir = OmegaConf.select(config, "hydra.runtime.output_dir")
        subdir = OmegaConf.select(config, "hydra.output_subdir")
        if output_dir and subdir:
            path = Path(output_dir) / subdir / "job_status.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(OmegaConf.create(record), path)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.enabled:
            self._write(Path(str(config.hydra.sweep.dir)))

    def _write_if_pending(self) -> None:
        if not self._done and self._sweep_dir is not None and self._sweep_dir.is_dir():
            self._write(self._sweep_dir)

    def _write(self, sweep_dir: Path) -> None:
        from .sweep import summarize

        self._done = True
        try:
            summarize(sweep_dir)
        except Exception as err:  # noqa: BLE001 - a summary must never fail the sweep
            log.warning(f"cil_lightning: no sweep summary for {sweep_dir}: {err}")
