"""Reporting of the leakage diagnostic (``diagnose``): per-level and per-setting summaries, CSV,
JSON and plots. Plots put the one-step motion ratio against sigma/alpha on a log axis (log-SNR =
-2 ln(sigma/alpha)) with the sampling start marked; ``plot_ratio_curves`` overlays several models,
which is how checkpoints are compared (a ratio of 1 is not the target at high noise: an MMSE
denoiser predicts E[x0 | x_t], which moves less than any one clip).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

CSV_FIELDS = (
    "kind",
    "clip",
    "name",
    "seed",
    "t_native",
    "sigma_alpha",
    "log_snr",
    "t_norm",
    "setting",
    "M",
    "analytic_init",
    "ms_real",
    "ms_recon",
    "ms_pred",
    "ratio",
    "ratio_recon",
)
LEVEL_KEYS = ("t_native", "sigma_alpha", "log_snr", "t_norm")
HIGH_NOISE_NOTE = (
    "ratio 1 is not the target at high noise: an MMSE denoiser predicts E[x0 | x_t], "
    "which moves less; compare models with each other"
)


def _stats(values: Sequence[float]) -> dict:
    v = torch.tensor([x for x in values if not math.isnan(x)], dtype=torch.float64)
    if v.numel() == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    std = float(v.std(unbiased=False)) if v.numel() > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "n": int(v.numel())}


def summarize(rows: Sequence[dict]) -> dict:
    """Per noise level (increasing): its ``LEVEL_KEYS`` and the motion ratio mean/std over clips
    and seeds (NaN ratios skipped); per sampling setting: mean input and output MS, ratio,
    |output - input| (MS error)."""
    by_t: dict[float, list[dict]] = {}
    for r in rows:
        if r["kind"] == "one_step":
            by_t.setdefault(r["t_native"], []).append(r)
    by_s: dict[str, list[dict]] = {}
    for r in rows:
        if r["kind"] == "sampling":
            by_s.setdefault(r["setting"], []).append(r)
    return {
        "one_step": [
            {
                **{k: rs[0][k] for k in LEVEL_KEYS},
                "ratio": _stats([r["ratio"] for r in rs]),
                "ratio_recon": _stats([r["ratio_recon"] for r in rs]),
                "ms_pred": _stats([r["ms_pred"] for r in rs]),
                "ms_real": _stats([r["ms_real"] for r in rs]),
            }
            for _, rs in sorted(by_t.items())
        ],
        "sampling": [
            {
                "setting": name,
                "M": rs[0]["M"],
                "analytic_init": rs[0]["analytic_init"],
                "ms_input": _stats([r["ms_real"] for r in rs]),
                "ms_output": _stats([r["ms_pred"] for r in rs]),
                "ratio": _stats([r["ratio"] for r in rs]),
                "ms_error": _stats([abs(r["ms_pred"] - r["ms_real"]) for r in rs]),
            }
            for name, rs in by_s.items()
        ],
        "note": HIGH_NOISE_NOTE,
    }


def write_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """Rows as CSV with the columns ``CSV_FIELDS`` (blank where a row kind has no value;
    sigma_alpha ``inf`` and log_snr ``-inf`` at a pure-noise level)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    return path


def write_json(summary: dict, path: str | Path) -> Path:
    """JSON with NaN and infinities written as null (sigma_alpha null: pure noise, alpha = 0)."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    path = Path(path)
    path.write_text(json.dumps(clean(summary), indent=2))
    return path


def _plot_x(s: Sequence[float]) -> tuple[list[float], float | None]:
    """Plot positions of sigma/alpha values: a pure-noise level (+inf) sits one decade beyond the
    largest finite one. Returns (positions, position of +inf or None)."""
    finite = [v for v in s if math.isfinite(v)]
    x_inf = max(finite, default=1.0) * 10.0 if len(finite) < len(s) else None
    return [v if math.isfinite(v) else x_inf for v in s], x_inf


def plot_ratio_curves(
    curves: Mapping[str, Sequence[tuple[float, float, float]]],
    path: str | Path,
    *,
    start_sigma_alpha: float | None = None,
    title: str = "one-step prediction motion",
) -> Path:
    """Motion ratio against sigma/alpha (log axis), one line per model, mean +- std bars.

    ``curves``: name -> [(sigma_alpha, mean, std)] (sigma_alpha may be +inf: pure noise, drawn
    at the right edge as "inf"); ``start_sigma_alpha``: the sampling start, drawn as a vertical
    line. The grey line at 1 is the clips' own motion, which is not the target at high noise.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    x_inf = None
    for name, pts in curves.items():
        xs, x_inf_c = _plot_x([p[0] for p in pts])
        x_inf = x_inf_c or x_inf
        mean, std = [p[1] for p in pts], [p[2] for p in pts]
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.axhline(
        1.0, color="grey", linestyle="--", linewidth=1, label="clip's motion (not the target)"
    )
    if start_sigma_alpha is not None:
        xs = start_sigma_alpha if math.isfinite(start_sigma_alpha) else x_inf
        ax.axvline(xs, color="black", linestyle=":", linewidth=1, label="sampling start")
    if x_inf is not None:  # the pure-noise level gets its own tick, decades below stay
        lim = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lim[0] <= t < x_inf / 3]
        ax.set_xticks([*ticks, x_inf], [f"{t:g}" for t in ticks] + ["inf"])
        ax.set_xlim(*lim)
    ax.set_xlabel("sigma / alpha (log scale; log-SNR = -2 ln sigma/alpha)")
    ax.set_ylabel("MS(one-step x0) / MS(real)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot(rows: Sequence[dict], summary: dict, out_dir: str | Path) -> list[Path]:
    """``motion_ratio.png`` (ratio against sigma/alpha, sampling start marked) and
    ``motion_scatter.png`` (output against input MS per sampling setting, with y = x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    files = []
    if summary["one_step"]:
        pts = [
            (s["sigma_alpha"], s["ratio"]["mean"], s["ratio"]["std"]) for s in summary["one_step"]
        ]
        start = summary.get("levels", {}).get("start_sigma_alpha")
        files.append(
            plot_ratio_curves(
                {"MS(x0 pred) / MS(real)": pts},
                out_dir / "motion_ratio.png",
                start_sigma_alpha=start,
            )
        )
    settings = [s["setting"] for s in summary["sampling"]]
    if settings:
        fig, axes = plt.subplots(
            1, len(settings), figsize=(3.2 * len(settings), 3.3), squeeze=False
        )
        for ax, name in zip(axes[0], settings):
            rs = [r for r in rows if r["kind"] == "sampling" and r["setting"] == name]
            x = [r["ms_real"] for r in rs]
            y = [r["ms_pred"] for r in rs]
            hi = max([*x, *y, 1e-6]) * 1.05
            ax.scatter(x, y, s=14)
            ax.plot([0, hi], [0, hi], color="grey", linestyle="--", linewidth=1)
            ax.set_xlim(0, hi)
            ax.set_ylim(0, hi)
            ax.set_title(name)
            ax.set_xlabel("input MS")
            ax.set_ylabel("output MS")
        fig.tight_layout()
        files.append(out_dir / "motion_scatter.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    return files
