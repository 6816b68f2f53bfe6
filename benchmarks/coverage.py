"""Calibration suite: coverage of the 95% CIs of every primary estimator x candidate inference method.

Runs :func:`evaluation.inference.coverage_study.run_cell` over the grid of designs (treated
partnerships G1 in 8, 15, 30, 100; effect zero and heterogeneous), two processes at a time, and
writes the table the headline policy (:mod:`evaluation.inference.headline`) cites:

    python benchmarks/coverage.py [--reps 1000] [--treated 8 15 30 100] [--seed 2024] [--B 999]
                                  [--jobs 2] [--out benchmarks/coverage_table.md]
                                  [--json benchmarks/coverage_results.json]

Monte Carlo SE of a coverage p over R replications: sqrt(p(1-p)/R) (0.0069 at p = 0.95, R = 1000).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread per worker
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from pathlib import Path  # noqa: E402

from evaluation.inference.coverage_study import (  # noqa: E402
    EFFECTS,
    PRETESTS,
    ROW_ORDER,
    CellResult,
    Design,
    run_cell,
)

HERE = Path(__file__).resolve().parent
BAND = (0.93, 0.97)

LABELS = {
    "callaway_santanna:analytic-means": "CS, cluster *means* of the IF, sqrt(sum psibar_c^2)/C, normal (before)",
    "callaway_santanna:analytic": "CS, cluster sums of the IF, sqrt(sum S_c^2)/n, normal (R did 2.5)",
    "callaway_santanna:analytic-t": "CS, cluster sums x sqrt(G/(G-1)), t(G1-1)",
    "callaway_santanna:wild": "CS, score wild bootstrap-t of the IF (Webb)",
    "callaway_santanna:jackknife": "CS, cluster jackknife (CV3), t(G1-1)",
    "callaway_santanna:wild-jk": "CS, score wild bootstrap-t of the jackknife changes (Webb)",
    "sun_abraham:crv1": "SA, CR1, t(G-1) (fixest)",
    "sun_abraham:crv1-t": "SA, CR1, t(G1-1)",
    "sun_abraham:wcr": "SA, WCR wild cluster bootstrap (Webb), weighted",
    "sun_abraham:jackknife": "SA, cluster jackknife (CV3), t(G1-1)",
    "imputation:bjs": "Imputation, BJS Thm 3 conservative (leave-out), normal",
    "imputation:bjs-t": "Imputation, BJS Thm 3 conservative, t(G1-1)",
    "twfe:crv1": "TWFE, CR1, t(G-1) (fixest)",
    "twfe:crv1-t": "TWFE, CR1, t(G1-1)",
    "twfe:wcr": "TWFE, WCR wild cluster bootstrap (Webb), weighted",
    "twfe:jackknife": "TWFE, cluster jackknife (CV3), t(G1-1)",
    "twfe:ri": "TWFE, randomisation inference (t, unweighted; zero effect only)",
}
PRETEST_LABELS = {
    "native": "att_gt's pre-test: clustered Wald, chi2(q) (R did 2.5)",
    "average": "average pre-period ATT(g,t), score wild bootstrap-t (Webb)",
    "average-jk": "average pre-period ATT(g,t), cluster jackknife, t(G1-1)",
    "sup-t": "max |t| over pre-period ATT(g,t), score wild bootstrap (Webb)",
}


def load_cells(saved: dict) -> dict:
    """{(G1, effect): CellResult} from the JSON the benchmark writes."""
    cells = {}
    for c in saved["cells"]:
        d = dict(c["design"])
        d["cohorts"] = tuple(d["cohorts"])
        cell = CellResult(Design(**d), reps=c["reps"], cover=c["cover"], cover_att=c["cover_att"],
                          reject0=c["reject0"], pretest=c["pretest"],
                          denominators=c["denominators"], seconds=c["seconds"])
        cells[(cell.design.n_treated, cell.design.effect)] = cell
    return cells


def _task(args):
    design, lo, hi, seed, B, n_perm = args
    return design, run_cell(design, range(lo, hi), seed=seed, B=B, n_perm=n_perm)


def run_grid(treated, effects, reps, *, seed=2024, B=999, n_perm=199, jobs=2, chunk=25,
             progress=True) -> dict:
    """{(G1, effect): CellResult} over the grid, the replications split in chunks over ``jobs``."""
    cells = {(g, e): CellResult(Design(g, e)) for g in treated for e in effects}
    tasks = [(Design(g, e), lo, min(reps, lo + chunk), seed, B, n_perm)
             for g in treated for e in effects for lo in range(0, reps, chunk)]
    done = 0
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_task, t) for t in tasks]
        for fut in as_completed(futures):
            design, part = fut.result()
            cells[(design.n_treated, design.effect)].merge(part)
            done += 1
            if progress:
                print(f"\r{done}/{len(tasks)} chunks", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return cells


def _fmt(rate, chosen=False, band=True):
    if rate is None:
        return "n/a"
    p, se, _ = rate
    text = f"{p:.3f} ({se:.3f})"
    if band and not BAND[0] <= p <= BAND[1]:
        text += " \u2020"
    return f"**{text}**" if chosen else text


def render(cells: dict, *, reps: int, seed: int, B: int, n_perm: int, seconds: float,
           treated, effects, date: str | None = None) -> str:
    from evaluation.inference.headline import choose_inference

    cols = [(g, e) for g in treated for e in effects]
    d0 = Design(treated[0])
    head = "| method | " + " | ".join(f"G1={g}, {e[:4]}" for g, e in cols) + " |"
    sep = "|---|" + "---|" * len(cols)
    lines = [
        "# Calibration: coverage of 95% confidence intervals (benchmarks/coverage.py)",
        "",
        f"Generated {date or _dt.date.today().isoformat()} by `python benchmarks/coverage.py --reps {reps} "
        f"--seed {seed} --B {B}` ({reps} replications per cell, seed {seed}, {B} bootstrap draws, "
        f"{n_perm} permutations; {seconds / 60:.1f} minutes on {os.cpu_count()} cores).",
        "",
        "**Design** (evaluation/inference/coverage_study.py): G1 partnerships (treated clusters) of "
        "2-40 schools, round(exp(N(log 5, 0.9))) clipped, so a few large partnerships dominate; "
        f"{d0.n_comparison} singleton comparison schools (each its own cluster) with matching "
        "weights Gamma(2, 1/2) used by every fit and refit; T = 8 years, 3 staggered cohorts "
        "joining in years 4, 5, 6; school AR(1) noise (rho 0.5, SD 1) plus a partnership-year AR(1) "
        "shock (rho 0.5, SD 0.5) shared by a partnership's schools; true effect zero or "
        "heterogeneous (0.1 (1 + 0.5 e)(1 + 0.5 (g - 4)): grows with years since joining and "
        "differs by cohort). Both effect designs use the same noise draws. Parallel trends hold.",
        "",
        "Each cell: share of replications whose 95% CI contains the true ATT (for TWFE: the TWFE "
        "estimand, i.e. the regression on the noise-free effects; its coverage of the ATT is in "
        "the second table), with the Monte Carlo SE sqrt(p(1-p)/R) in brackets. "
        "\u2020 = outside the target band [0.93, 0.97]. **Bold** = the method "
        "`evaluation.inference.headline.choose_inference` picks for that design.",
        "",
        "## Coverage of the 95% CI",
        "",
        head, sep,
    ]
    for est, method in ROW_ORDER:
        row = f"{est}:{method}"
        out = []
        for g, e in cols:
            chosen = choose_inference(est, g, g + d0.n_comparison).method == row
            out.append(_fmt(cells[(g, e)].rate("cover", row), chosen))
        lines.append(f"| {LABELS.get(row, row)} | " + " | ".join(out) + " |")
    lines += ["", "## TWFE: coverage of the true ATT (heterogeneous effects bias TWFE)", "", head, sep]
    for est, method in ROW_ORDER:
        if est != "twfe" or method == "ri":
            continue
        row = f"{est}:{method}"
        vals = []
        for g, e in cols:
            c = cells[(g, e)]
            den = c.denominators.get(row)
            p = c.cover_att[row] / den if den else None
            vals.append("n/a" if p is None else f"{p:.3f} ({(p * (1 - p) / den) ** 0.5:.3f})")
        lines.append(f"| {LABELS[row]} | " + " | ".join(vals) + " |")
    lines += ["", "## Size of the Callaway-Sant'Anna pre-test (5% level; parallel trends true)",
              "", "Rejection rate, target <= 0.07 (Monte Carlo SE in brackets). **Bold** = the "
              "pre-test the headline policy reports.", "", head, sep]
    from evaluation.inference.headline import PRETEST

    for name in PRETESTS:
        vals = []
        for g, e in cols:
            r = cells[(g, e)].rate("pretest", name)
            txt = "n/a" if r is None else f"{r[0]:.3f} ({r[1]:.3f})" + (" \u2020" if r[0] > 0.07 else "")
            vals.append(f"**{txt}**" if name == PRETEST else txt)
        lines.append(f"| {PRETEST_LABELS[name]} | " + " | ".join(vals) + " |")
    lines += ["", "## Power: share of 95% CIs excluding zero (heterogeneous effect; zero-effect "
              "columns: false rejections)", "", head, sep]
    for est, method in ROW_ORDER:
        row = f"{est}:{method}"
        vals = []
        for g, e in cols:
            c = cells[(g, e)]
            den = c.denominators.get(row)
            vals.append("n/a" if not den else f"{c.reject0[row] / den:.3f}")
        lines.append(f"| {LABELS.get(row, row)} | " + " | ".join(vals) + " |")
    lines += ["", "## What does not cover", ""]
    lines += _failures(cells, cols, d0)
    lines += ["", "## The headline policy (evaluation/inference/headline.py)", ""]
    from evaluation.inference.headline import CALIBRATED_TREATED, POLICY

    for est, steps in POLICY.items():
        rules = "; ".join(f"{LABELS[f'{est}:{m}'].split(', ', 1)[1]} from {lo} treated "
                          "partnerships" for lo, m in steps)
        lines.append(f"- {est}: {rules}.")
    lines += [f"- Pre-test of parallel trends reported with the CS headline: "
              f"{PRETEST_LABELS[PRETEST]}.",
              f"- Fewer than {CALIBRATED_TREATED[0]} treated partnerships: not calibrated; the "
              "policy keeps the method chosen at the smallest design and flags the interval."]
    lines += ["", "CPU seconds per cell (sum over its chunks): " + ", ".join(
        f"G1={g} {e[:4]}: {cells[(g, e)].seconds:.0f}" for g, e in cols) + ".", ""]
    return "\n".join(lines)


def _failures(cells, cols, d0) -> list[str]:
    from evaluation.inference.headline import PRETEST, choose_inference

    out = []
    for est in ("callaway_santanna", "sun_abraham", "imputation", "twfe"):
        for g, e in cols:
            ch = choose_inference(est, g, g + d0.n_comparison)
            r = cells[(g, e)].rate("cover", ch.method)
            if r is not None and not BAND[0] <= r[0] <= BAND[1]:
                out.append(f"- {est}, G1 = {g}, {e} effect: the chosen method {ch.method} covers "
                           f"{r[0]:.3f} ({r[1]:.3f}), outside [0.93, 0.97].")
    for g, e in cols:
        r = cells[(g, e)].rate("pretest", PRETEST)
        if r is not None and r[0] > 0.07:
            out.append(f"- pre-test {PRETEST}, G1 = {g}, {e} effect: size {r[0]:.3f} > 0.07.")
    if not out:
        out.append("- Every chosen method covers within [0.93, 0.97] in every cell, G1 = 8 "
                   "included, and the chosen pre-test holds its size (<= 0.07).")
    sizes = [f"{cells[(g, e)].rate('pretest', 'native')[0]:.3f} with G1 = {g}"
             for g, e in cols if e == cols[0][1] and cells[(g, e)].rate("pretest", "native")]
    if sizes:
        out.append("- att_gt's own clustered Wald pre-test (R did 2.5, chi2 with one df per "
                   "pre-period ATT(g,t)) rejects true parallel trends far too often: "
                   + ", ".join(sizes) + ". With m partnerships in a cohort its covariance has at "
                   "most m - 1 treated directions; the headline reports the jackknife pre-test.")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--treated", type=int, nargs="+", default=[8, 15, 30, 100])
    ap.add_argument("--effects", nargs="+", default=list(EFFECTS), choices=EFFECTS)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--B", type=int, default=999)
    ap.add_argument("--n-perm", type=int, default=199)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=25)
    ap.add_argument("--out", default=str(HERE / "coverage_table.md"))
    ap.add_argument("--json", default=str(HERE / "coverage_results.json"))
    ap.add_argument("--from-json", metavar="PATH",
                    help="re-render the table from saved results instead of simulating")
    a = ap.parse_args(argv)
    if a.from_json:
        saved = json.loads(Path(a.from_json).read_text())
        cells = load_cells(saved)
        a.reps, a.seed, a.B, a.n_perm = saved["reps"], saved["seed"], saved["B"], saved["n_perm"]
        a.treated = sorted({g for g, _ in cells})
        a.effects = [e for e in EFFECTS if any(e == k[1] for k in cells)]
        text = render(cells, reps=a.reps, seed=a.seed, B=a.B, n_perm=a.n_perm,
                      seconds=saved["seconds"], treated=a.treated, effects=a.effects,
                      date=saved.get("date"))
        print(text)
        if a.out:
            Path(a.out).write_text(text)
        return
    t0 = time.perf_counter()
    cells = run_grid(a.treated, a.effects, a.reps, seed=a.seed, B=a.B, n_perm=a.n_perm,
                     jobs=a.jobs, chunk=a.chunk)
    seconds = time.perf_counter() - t0
    text = render(cells, reps=a.reps, seed=a.seed, B=a.B, n_perm=a.n_perm, seconds=seconds,
                  treated=a.treated, effects=a.effects)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    if a.json:
        Path(a.json).write_text(json.dumps(
            {"reps": a.reps, "seed": a.seed, "B": a.B, "n_perm": a.n_perm, "seconds": seconds,
             "date": _dt.date.today().isoformat(),
             "cells": [c.to_dict() for c in cells.values()]}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
