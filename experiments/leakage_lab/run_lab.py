"""The leakage lab (issue 15): the exact Gaussian lab, then the trained moving-texture lab.

Writes into OUT: ``gaussian.csv``, ``runs.json`` (loss curves and convergence per model),
``sampling.csv`` (per model, setting and clip), ``diagnostic.csv`` (per model, level and clip),
``summary.json`` (settings, hypothesis counts, wall time, commit), ``results.md`` (the tables the
README copies) and ``loss_curves.png``, ``sampling.png``, ``diagnostic.png``, ``gaussian.png``.
Settings: ``cil_lightning.lab.plan`` (FULL, or QUICK with ``--quick``). Nothing is tuned here.

Usage: python experiments/leakage_lab/run_lab.py [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import torch

from cil_lightning.lab import report
from cil_lightning.lab.plan import FULL, QUICK, run_gaussian, run_trained, trained_families

HERE = Path(__file__).resolve().parent


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip()
    except OSError:
        return "unknown"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    # On 2 shared cores, two intra-op threads stall each other (measured 6x slower than one).
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> dict:
    plan = QUICK if args.quick else FULL
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    commit_start = _commit()  # the code that ran (the checkout may move during a long run)
    log_file = open(out / "log.txt", "w")

    def log(msg: str) -> None:
        line = f"[{time.time() - t0:7.1f}s] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    gaussian = run_gaussian(plan, log)
    t_gauss = time.time() - t0
    report.write_csv(gaussian, out / "gaussian.csv")
    runs, sampling, diag = run_trained(plan, log)
    wall = time.time() - t0
    report.write_csv(sampling, out / "sampling.csv")
    report.write_csv(diag, out / "diagnostic.csv")
    report.write_json(runs, out / "runs.json")

    families = [f for f, *_ in trained_families()]
    Ms = {f: ms for f, _, _, ms in trained_families()}
    settings = {
        f: ["T"] + [x for M in Ms[f] for x in (f"M={M:g}", f"M={M:g} +AI")] for f in families
    }
    stats = report.per_seed(sampling)
    ref = report.reference(sampling)
    hyp = report.hypotheses(stats, gaussian, families, plan.strategies, Ms)
    conv = {f"{r['family']} {r['strategy']} seed {r['seed']}": r["converged"] for r in runs}
    plots = report.plots(out, runs, stats, diag, gaussian, families, plan.strategies, settings)

    md = [f"# Leakage lab results ({'quick' if args.quick else 'full'} run)", ""]
    md += [
        f"Commit at start {commit_start}, at the end {_commit()}; wall time {wall:.0f} s "
        f"(Gaussian lab {t_gauss:.0f} s).",
        "",
    ]
    md += ["## Exact Gaussian lab", ""] + report.gaussian_table(gaussian) + [""]
    md += ["## Trained lab: reference (the real evaluation clips, same measurement)", ""]
    md += [f"- {k}: {v:.3f}" for k, v in ref.items()] + [""]
    md += [
        f"Converged (criterion in README): {sum(conv.values())}/{len(conv)} models; "
        f"not converged: {[k for k, v in conv.items() if not v] or 'none'}",
        "",
    ]
    names = {
        "ratio": "speed ratio (mean generated / mean real speed)",
        "ms_error": "MS error (mean |speed_gen - speed_real| per clip, px/frame)",
        "w1": "W1 between generated and real speed distributions (px/frame)",
        "static": f"static share (speed < {report.STATIC_SPEED} px/frame)",
        "psnr_first": "first-frame fidelity (PSNR of generated frame 0 vs the condition, dB)",
        "coherence": "translation coherence (mean phase-correlation peak; real: see reference)",
    }
    for f in families:
        for metric, title in names.items():
            md += [f"### {f}: {title}", ""]
            md += report.sampling_table(stats, f, plan.strategies, settings[f], metric) + [""]
        md += [f"### {f}: one-step diagnostic speed ratio by sigma/alpha (last = start)", ""]
        md += report.diag_table(diag, f, plan.strategies) + [""]
    md += ["## Hypothesis counts (pre-registered checks)", ""]
    md += [f"- {k}: {v}" for k, v in hyp.items()] + [""]
    (out / "results.md").write_text("\n".join(md))
    summary = {
        "plan": repr(plan),
        "commit_start": commit_start,
        "commit_end": _commit(),
        "wall_seconds": wall,
        "gaussian_seconds": t_gauss,
        "reference": ref,
        "hypotheses": hyp,
        "converged": conv,
        "per_seed": {" | ".join(map(str, k)): v for k, v in stats.items()},
        "plots": plots,
    }
    report.write_json(summary, out / "summary.json")
    log(f"done in {wall:.0f} s; results in {out}")
    log_file.close()
    return summary


if __name__ == "__main__":
    main()
