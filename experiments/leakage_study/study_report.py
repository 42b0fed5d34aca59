"""Numbers, tables, files and plots of the leakage study (``run_study.py``).

Every number the study's README reports is computed here and written to ``summary.json`` and
``results.md``: mean ± std over seeds, per-seed comparison counts (in how many (seed, setting)
cells a method has the highest / lowest value), differences of means for M and Analytic-Init,
the diagnostic's noise levels with their sigma and the motion ratio per level.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

METHODS = {  # name -> experiment file (src/cil_lightning/conf/experiment/)
    "none": "tiny_naive",
    "svd_lognormal": "tiny_svdaug",
    "constant": "tiny_constant",
    "timenoise": "tiny_timenoise",
}
KEYS = {  # results.csv column -> name in tables
    "motion_score": "motion score",
    "ms_error": "MS error",
    "alignment_px": "alignment (px)",
    "consistency_px": "consistency (px)",
}


# ------------------------------------------------------------------------------ numbers
def mean_std(values: list[float]) -> dict:
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "per_seed": values,
    }


def fmt(ms: dict) -> str:
    return f"{ms['mean']:.3f} ± {ms['std']:.3f}"


def comparison_counts(all_rows: list[dict]) -> dict:
    """Per metric and method: in how many (seed, setting) cells the method has the highest and
    the lowest value of the four. Returns {metric: {"cells": n, "highest": {method: k},
    "lowest": {method: k}}}."""
    cells: dict[tuple, list[dict]] = {}
    for r in all_rows:
        cells.setdefault((r["seed"], r["setting"]), []).append(r)
    out = {}
    for key in KEYS:
        hi = dict.fromkeys(METHODS, 0)
        lo = dict.fromkeys(METHODS, 0)
        for rs in cells.values():
            hi[max(rs, key=lambda r: float(r[key]))["method"]] += 1
            lo[min(rs, key=lambda r: float(r[key]))["method"]] += 1
        out[key] = {"cells": len(cells), "highest": hi, "lowest": lo}
    return out


def counts_table(counts: dict) -> list[str]:
    n = next(iter(counts.values()))["cells"]
    lines = [
        f"Per-seed comparison: in how many of the {n} cells (seed x setting) each method has the "
        "highest / lowest value of the four methods.",
        "",
        "| method | " + " | ".join(f"{v} highest / lowest" for v in KEYS.values()) + " |",
        "|---|" + "---|" * len(KEYS),
    ]
    for m in METHODS:
        cells = [f"{counts[k]['highest'][m]} / {counts[k]['lowest'][m]}" for k in KEYS]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    c = {k: counts[k]["highest"]["timenoise"] for k in ("motion_score", "ms_error")}
    lines += [
        "",
        f"TimeNoise has the highest motion score in {c['motion_score']} of {n} cells "
        f"(seed x setting) and the highest MS error in {c['ms_error']} of {n}.",
    ]
    return lines


def summarize(all_rows, leak_rows, args, meta) -> dict:
    settings = list(dict.fromkeys(r["setting"] for r in all_rows))
    sampling = {
        m: {
            s: {
                k: mean_std([r[k] for r in all_rows if r["method"] == m and r["setting"] == s])
                for k in KEYS
            }
            for s in settings
        }
        for m in METHODS
    }
    levels = sorted({r["t_native"] for r in leak_rows})
    info = {
        r["t_native"]: {k: r[k] for k in ("sigma_alpha", "log_snr", "t_norm")} for r in leak_rows
    }
    ratio = {}
    for m in METHODS:
        ratio[m] = []
        for t in levels:
            per_seed = []
            for seed in args.seeds:
                vals = [
                    r["ratio"]
                    for r in leak_rows
                    if r["method"] == m
                    and r["seed_model"] == seed
                    and r["t_native"] == t
                    and not math.isnan(r["ratio"])
                ]
                per_seed.append(statistics.mean(vals))
            ratio[m].append({"t_native": t, **mean_std(per_seed)})
    # Per seed and level: which method's prediction keeps the most / least motion.
    ratio_counts = {"highest": {m: [0] * len(levels) for m in METHODS}}
    ratio_counts["lowest"] = {m: [0] * len(levels) for m in METHODS}
    for j in range(len(levels)):
        for i in range(len(args.seeds)):
            vals = {m: ratio[m][j]["per_seed"][i] for m in METHODS}
            ratio_counts["highest"][max(vals, key=vals.get)][j] += 1
            ratio_counts["lowest"][min(vals, key=vals.get)][j] += 1
    M = f"M={args.M[0]:g}"
    pairs = [(M, "full start"), (f"{M} +AI", M)]  # differences of means over seeds: a - b
    effects = {
        f"{a} minus {b}": {
            m: {k: sampling[m][a][k]["mean"] - sampling[m][b][k]["mean"] for k in KEYS}
            for m in METHODS
        }
        for a, b in pairs
    }
    return {
        **meta,
        "config": {
            "steps": args.steps,
            "seeds": args.seeds,
            "M": args.M,
            "num_steps": args.num_steps,
            "sampler": "euler, SVD guidance ramp 1 -> 3",
            "num_levels": args.num_levels,
            "level_min": args.level_min,
            "methods": METHODS,
        },
        "input_motion_score": all_rows[0]["input_motion_score"],
        "sampling": sampling,
        "counts": comparison_counts(all_rows),
        "levels": [{"t_native": t, **info[t]} for t in levels],
        "motion_ratio": ratio,
        "motion_ratio_counts_per_seed": ratio_counts,
        "effects": effects,
        "max_abs_effect_of_AI": max(
            abs(v) for m in METHODS for v in effects[f"{M} +AI minus {M}"][m].values()
        ),
    }


def markdown(summary: dict) -> str:
    cfg = summary["config"]
    n_models = len(cfg["methods"]) * len(cfg["seeds"])
    lines = [
        f"Tiny pixel-space SVD-class model, {cfg['steps']} steps, seeds {cfg['seeds']}; "
        f"motion flow: {summary['motion_flow']}; commit {summary['git']['commit'][:7]}"
        + (" (uncommitted changes in the checkout)" if summary["git"]["dirty"] else "")
        + f"; wall time {summary['wall_time_s']:.0f} s for {n_models} models "
        f"({summary['wall_time_s'] / n_models:.0f} s per model).",
        "",
        f"Input motion score of the real clips: {summary['input_motion_score']:.3f} px/frame.",
        "",
        "Sampling (mean ± std over seeds):",
        "",
        "| method | setting | " + " | ".join(KEYS.values()) + " |",
        "|---|---|" + "---|" * len(KEYS),
    ]
    for m, by_s in summary["sampling"].items():
        for s, vals in by_s.items():
            lines.append(f"| {m} | {s} | " + " | ".join(fmt(vals[k]) for k in KEYS) + " |")
    lines += [""] + counts_table(summary["counts"])
    lines += ["", "Differences of means (over seeds), per method:", ""]
    lines += ["| method | difference | " + " | ".join(KEYS.values()) + " |"]
    lines += ["|---|---|" + "---|" * len(KEYS)]
    for name, by_m in summary["effects"].items():
        for m, vals in by_m.items():
            lines.append(f"| {m} | {name} | " + " | ".join(f"{vals[k]:+.3f}" for k in KEYS) + " |")
    lines += [
        "",
        f"Largest |change| from Analytic-Init (any method, any metric): "
        f"{summary['max_abs_effect_of_AI']:.3f}.",
        "",
        "Motion ratio MS(one-step x0) / MS(real) per noise level (EDM sigma = sigma/alpha; the "
        "last level is the sampling start sigma_max), mean ± std over seeds:",
        "",
    ]
    levels = summary["levels"]
    lines += [
        "| method | " + " | ".join(f"σ={lv['sigma_alpha']:.3g}" for lv in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for m, vals in summary["motion_ratio"].items():
        lines.append(f"| {m} | " + " | ".join(fmt(v) for v in vals) + " |")
    lines += [
        "| normalised time t | " + " | ".join(f"{lv['t_norm']:.3f}" for lv in levels) + " |",
        "",
        f"Per level, in how many of the {len(cfg['seeds'])} seeds each method has the highest / "
        "lowest motion ratio of the four:",
        "",
        "| method | " + " | ".join(f"σ={lv['sigma_alpha']:.3g}" for lv in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    rc = summary["motion_ratio_counts_per_seed"]
    for m in summary["motion_ratio"]:
        cells = [f"{h} / {lo}" for h, lo in zip(rc["highest"][m], rc["lowest"][m])]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ files
def write_json(obj, path: Path) -> None:
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    path.write_text(json.dumps(clean(obj), indent=2) + "\n")


def write_csv(rows: list[dict], fields: list[str], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def plots(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cil_lightning.diagnose_report import plot_ratio_curves

    s = [lv["sigma_alpha"] for lv in summary["levels"]]
    curves = {
        m: [(x, v["mean"], v["std"]) for x, v in zip(s, vals)]
        for m, vals in summary["motion_ratio"].items()
    }
    plot_ratio_curves(
        curves,
        out / "leakage.png",
        start_sigma_alpha=s[-1],
        title=f"one-step x0 motion, mean ± std over seeds ({summary['motion_flow'].split()[0]})",
    )
    settings = list(next(iter(summary["sampling"].values())))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, key in enumerate(["motion_score", "alignment_px"]):
        for m, by_s in summary["sampling"].items():
            ys = [by_s[st][key]["mean"] for st in settings]
            axes[k].plot(range(len(settings)), ys, marker="o", label=m)
        axes[k].set_xticks(range(len(settings)), settings, rotation=20)
        axes[k].set_ylabel(KEYS[key])
    axes[0].axhline(summary["input_motion_score"], color="grey", lw=0.8, ls="--")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "sampling.png", dpi=120)
    plt.close(fig)


def recount(directory: Path) -> None:
    """Per-seed comparison counts of an existing ``results.csv`` (e.g. an earlier run) into
    ``counts.json`` and ``counts.md`` beside it."""
    with open(directory / "results.csv") as f:
        rows = list(csv.DictReader(f))
    counts = comparison_counts(rows)
    write_json(counts, directory / "counts.json")
    text = "\n".join([f"Counts of `{directory.name}/results.csv`.", ""] + counts_table(counts))
    (directory / "counts.md").write_text(text + "\n")
    print(text)
