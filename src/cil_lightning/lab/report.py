"""Tables, hypothesis counts and plots of the lab (the README copies them from ``results.md``)."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import torch

from .trained import STATIC_SPEED


def write_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _ms(values: list[float]) -> str:
    t = torch.tensor(values, dtype=torch.float64)
    if len(values) == 1:
        return f"{float(t[0]):.3f}"
    return f"{float(t.mean()):.3f} ± {float(t.std()):.3f}"


def per_seed(sampling: list[dict]) -> dict:
    """Metrics per (family, strategy, setting, seed) from the per-clip sampling rows."""
    groups = defaultdict(list)
    for r in sampling:
        groups[(r["family"], r["strategy"], r["setting"], r["seed"])].append(r)
    out = {}
    for key, rows in groups.items():
        gen = torch.tensor([r["speed_gen"] for r in rows], dtype=torch.float64)
        real = torch.tensor([r["speed_real"] for r in rows], dtype=torch.float64)
        psnr = torch.tensor([r["psnr_first"] for r in rows], dtype=torch.float64)
        out[key] = {
            "ratio": float(gen.mean() / real.mean()),
            "ms_error": float((gen - real).abs().mean()),
            "w1": float((gen.sort().values - real.sort().values).abs().mean()),
            "static": float((gen < STATIC_SPEED).double().mean()),
            "psnr_first": float(psnr.mean()),
            "coherence": float(sum(r["coherence_gen"] for r in rows) / len(rows)),
        }
    return out


def reference(sampling: list[dict]) -> dict:
    """What a perfect model would score with the same measurement: the real clips' mean speed,
    the static share of the real clips, and the MS error between the clips' speeds and an
    independent draw of the law (the real speeds in another order), since the velocity is
    independent of the first frame."""
    first = [
        r
        for r in sampling
        if (r["family"], r["strategy"], r["setting"], r["seed"])
        == (
            sampling[0]["family"],
            sampling[0]["strategy"],
            sampling[0]["setting"],
            sampling[0]["seed"],
        )
    ]
    real = torch.tensor([r["speed_real"] for r in first], dtype=torch.float64)
    perm = real.roll(len(real) // 2)
    return {
        "mean_speed_real": float(real.mean()),
        "static_real": float((real < STATIC_SPEED).double().mean()),
        "coherence_real": sum(r["coherence_real"] for r in first) / len(first),
        "ms_error_independent": float((real - perm).abs().mean()),
    }


def sampling_table(stats: dict, family: str, strategies, settings, metric: str) -> list[str]:
    head = "| strategy | " + " | ".join(settings) + " |"
    lines = [head, "|" + "---|" * (len(settings) + 1)]
    seeds = sorted({k[3] for k in stats})
    for s in strategies:
        cells = []
        for st in settings:
            vals = [
                stats[(family, s, st, sd)][metric] for sd in seeds if (family, s, st, sd) in stats
            ]
            cells.append(_ms(vals) if vals else "")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def diag_table(diag: list[dict], family: str, strategies) -> list[str]:
    groups = defaultdict(list)
    for r in diag:
        if r["family"] == family and not math.isnan(r["ratio"]):
            groups[(r["strategy"], r["sigma_alpha"], r["seed"])].append(r["ratio"])
    levels = sorted({k[1] for k in groups})
    seeds = sorted({k[2] for k in groups})
    lines = ["| strategy | " + " | ".join(f"{lv:.3g}" for lv in levels) + " |"]
    lines.append("|" + "---|" * (len(levels) + 1))
    for s in strategies:
        cells = []
        for lv in levels:
            vals = [sum(v) / len(v) for sd in seeds if (v := groups.get((s, lv, sd)))]
            cells.append(_ms(vals) if vals else "")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def hypotheses(stats: dict, gaussian: list[dict], families, strategies, Ms: dict) -> dict:
    """The pre-registered checks (README), counted per seed."""
    seeds = sorted({k[3] for k in stats})
    n = len(seeds)
    out = {"seeds": n}
    g = lambda f, s, st, sd, m: stats[(f, s, st, sd)][m]  # noqa: E731
    for f in families:
        h1 = sum(g(f, "none", "T", sd, "ratio") < 1 for sd in seeds)
        out[f"H1 {f}: naive ratio from T < 1 (seeds)"] = f"{h1}/{n}"
        for s in strategies:
            if not s.startswith("timenoise"):
                continue
            more = sum(g(f, s, "T", sd, "ratio") > g(f, "none", "T", sd, "ratio") for sd in seeds)
            less_err = sum(g(f, s, "T", sd, "w1") < g(f, "none", "T", sd, "w1") for sd in seeds)
            cost = sum(
                g(f, s, "T", sd, "psnr_first") < g(f, "none", "T", sd, "psnr_first") for sd in seeds
            )
            out[f"H2 {f} {s}: ratio > naive / W1 < naive / PSNR < naive"] = (
                f"{more}/{n} / {less_err}/{n} / {cost}/{n}"
            )
        for M in Ms[f]:
            p, a = f"M={M:g}", f"M={M:g} +AI"
            closer = sum(
                abs(g(f, "none", a, sd, "ratio") - 1) < abs(g(f, "none", p, sd, "ratio") - 1)
                for sd in seeds
            )
            w1 = sum(g(f, "none", a, sd, "w1") < g(f, "none", p, sd, "w1") for sd in seeds)
            out[f"H3 {f} naive {p}: AI ratio closer to 1 / AI W1 lower"] = (
                f"{closer}/{n} / {w1}/{n}"
            )
    if gaussian:
        out["H4a gaussian: rows with |z| < 4"] = (
            f"{sum(abs(r['z']) < 4 for r in gaussian)}/{len(gaussian)}"
        )
        pairs = defaultdict(dict)
        for r in gaussian:
            if r["M"] != "T":
                pairs[(r["family"], r["num_steps"], r["M"])][r["analytic_init"]] = r
        kl = sum(p[True]["theory_kl"] < p[False]["theory_kl"] for p in pairs.values())
        w2 = sum(p[True]["theory_w2"] < p[False]["theory_w2"] for p in pairs.values())
        me = sum(
            abs(p[True]["theory_motion_energy"] - p[True]["data_motion_energy"])
            < abs(p[False]["theory_motion_energy"] - p[False]["data_motion_energy"])
            for p in pairs.values()
        )
        out["H4b gaussian M < T: AI lowers KL / W2 / motion-energy gap (theory)"] = (
            f"{kl}/{len(pairs)} / {w2}/{len(pairs)} / {me}/{len(pairs)}"
        )
    return out


def gaussian_table(rows: list[dict]) -> list[str]:
    lines = [
        "| family | steps | M | AI | ME data | ME theory | ME measured (± SE) | z "
        "| KL theory | KL fit | W2² theory | W2² fit |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['num_steps']} | {r['M']} "
            f"| {'yes' if r['analytic_init'] else 'no'} "
            f"| {r['data_motion_energy']:.4f} | {r['theory_motion_energy']:.4f} "
            f"| {r['mc_motion_energy']:.4f} ± {r['mc_se']:.4f} | {r['z']:+.2f} "
            f"| {r['theory_kl']:.3f} | {r['mc_kl']:.3f} | {r['theory_w2']:.3f} | {r['mc_w2']:.3f} |"
        )
    return lines


def plots(out: Path, runs, stats, diag, gaussian, families, strategies, settings) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4), squeeze=False)
    for ax, f in zip(axes[0], families):
        for i, s in enumerate(strategies):
            for r in runs:
                if r["family"] == f and r["strategy"] == s:
                    steps, vals = zip(*r["val_loss"])
                    ax.plot(
                        steps, vals, color=f"C{i}", alpha=0.7, label=s if r["seed"] == 0 else None
                    )
        ax.set(title=f"{f}: fixed-draw validation loss", xlabel="step", ylabel="loss", yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=110)
    paths.append("loss_curves.png")
    plt.close(fig)

    seeds = sorted({k[3] for k in stats})
    fig, axes = plt.subplots(2, len(families), figsize=(7 * len(families), 8), squeeze=False)
    for j, f in enumerate(families):
        for row, metric in enumerate(("ratio", "psnr_first")):
            ax = axes[row][j]
            width = 0.8 / len(strategies)
            for i, s in enumerate(strategies):
                vals = [[stats[(f, s, st, sd)][metric] for sd in seeds] for st in settings[f]]
                t = torch.tensor(vals, dtype=torch.float64)
                x = torch.arange(len(settings[f])) + i * width
                err = t.std(1) if len(seeds) > 1 else None
                ax.bar(x, t.mean(1), width, yerr=err, label=s, color=f"C{i}")
            ax.set_xticks(torch.arange(len(settings[f])) + 0.4 - width / 2, settings[f], fontsize=8)
            ax.set(title=f"{f}: {metric} (mean ± std over seeds)")
            if metric == "ratio":
                ax.axhline(1.0, color="k", lw=0.8)
        axes[0][j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sampling.png", dpi=110)
    paths.append("sampling.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4), squeeze=False)
    for ax, f in zip(axes[0], families):
        for i, s in enumerate(strategies):
            groups = defaultdict(list)
            for r in diag:
                if r["family"] == f and r["strategy"] == s and not math.isnan(r["ratio"]):
                    groups[r["sigma_alpha"]].append(r["ratio"])
            lv = sorted(groups)
            ax.plot(lv, [sum(groups[v]) / len(groups[v]) for v in lv], "o-", color=f"C{i}", label=s)
        ax.set(xscale="log", xlabel="sigma / alpha", ylabel="one-step speed ratio", title=f)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "diagnostic.png", dpi=110)
    paths.append("diagnostic.png")
    plt.close(fig)

    if gaussian:
        fams = list(dict.fromkeys(r["family"] for r in gaussian))
        fig, axes = plt.subplots(1, len(fams), figsize=(5 * len(fams), 4), squeeze=False)
        for ax, f in zip(axes[0], fams):
            steps = max(r["num_steps"] for r in gaussian if r["family"] == f)
            for ai, c in ((False, "C0"), (True, "C1")):
                rs = [
                    r
                    for r in gaussian
                    if r["family"] == f and r["num_steps"] == steps and r["analytic_init"] == ai
                ]
                labels = [str(r["M"]) for r in rs]
                ax.plot(
                    labels,
                    [r["theory_motion_energy"] for r in rs],
                    "-",
                    color=c,
                    label=f"theory, {'AI' if ai else 'plain'}",
                )
                ax.errorbar(
                    labels,
                    [r["mc_motion_energy"] for r in rs],
                    yerr=[2 * r["mc_se"] for r in rs],
                    fmt="o",
                    color=c,
                )
            ax.axhline(rs[0]["data_motion_energy"], color="k", lw=0.8, label="data")
            ax.set(title=f"{f} ({steps} steps)", xlabel="start M", ylabel="motion energy")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "gaussian.png", dpi=110)
        paths.append("gaussian.png")
        plt.close(fig)
    return paths


def write_json(obj, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=1, default=float))
