"""What the benchmarks record about the machine they ran on, and how they write their results
(imported by the bench scripts, whose folder Python puts on ``sys.path`` when they run)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> float:
    """The 1-minute load average (nan where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def busy_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have run since boot (/proc/stat; nan elsewhere):
    its change over a timed run, less the run's own CPU time, is what others took meanwhile."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def git_commit() -> str:
    """The checkout's short HEAD commit ("" outside a git checkout)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""


def write_results(path: Path, result: dict, render: Callable[[dict], str]) -> None:
    """The raw ``result`` as ``path`` (JSON) and the Markdown ``render`` makes of it beside it
    (``.md``, so every table is generated from its JSON); prints the table and both paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    path.with_suffix(".md").write_text(render(result))
    print(render(result))
    print(f"wrote {path} and {path.with_suffix('.md')}")
