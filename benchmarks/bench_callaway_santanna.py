"""Benchmark: Callaway-Sant'Anna, never-treated controls, dynamic aggregation, analytic SEs
(the PERFORMANCE.md case), ours against the ``csdid`` and ``differences`` packages.

Generates a staggered panel of 25,000 units x 14 years (350,000 rows; cohorts 2012-2023
and a never-treated group, effects growing with time since treatment), times
``att_gt`` + ``aggte(kind="dynamic")`` and each peer's equivalent in the same run
(doubly robust 2x2s, no covariates, no bootstrap), prints medians of warm runs and the
ratios, and checks that the three agree on the overall dynamic ATT and its SE.

Agreement tolerance: the three compute the same estimator (R did's), so they can differ
only by floating-point summation order. Each ATT(g,t) is a difference of means over at
most 25,000 units, whose rounding error is at most n * eps * mean|y| ~ 25,000 * 2.2e-16 *
O(1) ~ 6e-12; the dynamic aggregate averages such cells, so 1e-9 absolute on the overall
ATT and its SE leaves two orders of magnitude of margin and no room for a real difference.

The peers are optional (``pip install -e .[bench]``); a peer that fails to import or run
is reported as such and the others still run.

    python benchmarks/bench_callaway_santanna.py [--units 25000] [--years 14] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
import traceback
import warnings

import numpy as np
import pandas as pd

from evaluation.estimators.callaway_santanna import aggte, att_gt

TOLERANCE = 1e-9


def make_panel(units: int, years: int, seed: int = 0) -> pd.DataFrame:
    """Balanced staggered panel: unit effects, a common trend, effects growing 0.1 a year."""
    rng = np.random.default_rng(seed)
    first_year = 2010
    unit = np.repeat(np.arange(units), years)
    year = np.tile(np.arange(first_year, first_year + years), units)
    cohorts = np.r_[0, np.arange(first_year + 2, first_year + years)]
    g = rng.choice(cohorts, size=units)[unit]
    e = year - g
    effect = np.where((g > 0) & (e >= 0), 0.1 * (e + 1), 0.0)
    y = (rng.normal(size=units)[unit] + 0.05 * (year - first_year) + effect
         + rng.normal(size=unit.size))
    return pd.DataFrame({"unit": unit, "year": year, "g": g, "y": y})


def timed(fn, repeats: int, warm: bool = True) -> tuple[float, object]:
    if warm:
        fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def ours(df: pd.DataFrame) -> tuple[float, float]:
    gt = att_gt(df, y="y", unit="unit", time="year", cohort="g", control="never", method="dr")
    agg = aggte(gt, "dynamic")
    return agg.overall.estimate, agg.overall.se


def csdid_run(df: pd.DataFrame) -> tuple[float, float]:
    from csdid.att_gt import ATTgt

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ATTgt(yname="y", tname="year", idname="unit", gname="g", data=df,
                      control_group=["nevertreated"]).fit(est_method="dr", bstrap=False)
        model.aggte(typec="dynamic", bstrap=False)
    return float(model.atte["overall_att"]), float(model.atte["overall_se"])


def differences_run(indexed: pd.DataFrame) -> tuple[float, float]:
    from differences import ATTgt

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ATTgt(data=indexed, cohort_column="cohort")
        model.fit(formula="y", est_method="dr", control_group="never_treated", progress_bar=False)
        out = model.aggregate("event", overall=True)
    row = out.iloc[0]
    att = [v for k, v in row.items() if k[-1] == "ATT"]
    se = [v for k, v in row.items() if k[-1] == "std_error"]
    return float(att[0]), float(se[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=25_000)
    ap.add_argument("--years", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=3, help="timed warm runs (median); differences: 1")
    args = ap.parse_args()
    df = make_panel(args.units, args.years)
    print(f"Callaway-Sant'Anna, dr, never-treated controls, dynamic aggregation, analytic SEs: "
          f"{len(df):,} rows ({args.units:,} units x {args.years} years, "
          f"{df.loc[df.g > 0, 'g'].nunique()} cohorts); median of warm runs")

    t_ours, (att_ours, se_ours) = timed(lambda: ours(df), args.repeats)
    print(f"  ours (att_gt + aggte):   {t_ours:7.3f} s   overall ATT {att_ours:.12f}  SE {se_ours:.12f}")

    peers = {
        "csdid": (lambda: csdid_run(df), args.repeats, True),
        "differences": (lambda: differences_run(df.assign(cohort=df["g"].where(df["g"] > 0))
                                                .set_index(["unit", "year"])), 1, False),
    }
    failed = []
    for name, (fn, repeats, warm) in peers.items():
        try:
            t_peer, (att, se) = timed(fn, repeats, warm)
        except Exception as exc:  # a peer that is missing or breaks is reported, not fatal
            failed.append(name)
            print(f"  {name}: FAILED to {'import' if isinstance(exc, ImportError) else 'run'} here: "
                  f"{type(exc).__name__}: {exc}")
            print("    " + traceback.format_exc().strip().splitlines()[-1])
            continue
        d_att, d_se = abs(att - att_ours), abs(se - se_ours)
        agree = d_att <= TOLERANCE and d_se <= TOLERANCE
        note = "" if warm else " (1 run, not warmed: a run takes tens of seconds)"
        print(f"  {name + ':':24} {t_peer:7.3f} s   ratio {name}/ours = {t_peer / t_ours:5.1f}x   "
              f"|ATT diff| {d_att:.1e}, |SE diff| {d_se:.1e} "
              f"({'agree' if agree else 'DISAGREE'} to {TOLERANCE:g}){note}")
        if not agree:
            failed.append(name)
    if failed:
        raise SystemExit(f"peer(s) failed or disagreed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
