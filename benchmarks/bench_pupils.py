"""Benchmark: pupil-level TWFE y ~ treat + x1 + x2 | school + year, SEs clustered by school.

Generates an unbalanced pupil panel (default 10M rows: 25,000 schools, 15 years, a
varying number of pupils per school and year, some schools open or closed for part of
the period; y, treat, x1, x2 float64, school int32, year int16), then times our feols
(which takes the exact two-way path here) and pyfixest's feols in the same run (median
of warm runs) and prints the times, the ratio, the largest coefficient and SE
differences, our peak memory during the fit over the frame's size (tracemalloc peak:
numpy and pandas report their buffers to it) and, as the floor reference, one
alternating-projections demeaning sweep over the 4 columns.

    python benchmarks/bench_pupils.py [--rows 10_000_000] [--schools 25000] [--years 15]
                                      [--repeats 3] [--no-pyfixest]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc

# benchmarks/coverage.py would shadow the coverage package that numba (pyfixest) imports
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import numpy as np
import pandas as pd

from evaluation.estimators.fixed_effects import _Projector, feols

FORMULA = "y ~ treat + x1 + x2 | school + year"


def make_pupils(rows: int, schools: int, years: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # school-year cells: schools open for a contiguous run of years, sizes vary by school and year
    first_year = np.where(rng.random(schools) < 0.8, 0, rng.integers(0, years - 1, size=schools))
    last_year = np.where(rng.random(schools) < 0.8, years - 1,
                         rng.integers(first_year, years, size=schools))
    size = rng.lognormal(0.0, 0.8, size=schools)
    s_idx, t_idx = np.meshgrid(np.arange(schools), np.arange(years), indexing="ij")
    s_idx, t_idx = s_idx.ravel(), t_idx.ravel()
    open_ = (t_idx >= first_year[s_idx]) & (t_idx <= last_year[s_idx])
    s_idx, t_idx = s_idx[open_], t_idx[open_]
    lam = size[s_idx] * rng.gamma(4.0, 0.25, size=s_idx.size)
    counts = rng.poisson(lam * rows / lam.sum())
    counts[0] += rows - counts.sum() if counts.sum() < rows else 0
    while counts.sum() > rows:  # trim the excess from the largest cells
        j = int(np.argmax(counts))
        counts[j] -= min(counts[j] - 1, counts.sum() - rows)
    school = np.repeat(s_idx, counts).astype(np.int32)
    year = np.repeat(t_idx, counts).astype(np.int16)
    n = school.size
    adopt = rng.choice(np.r_[-1, np.arange(3, years)], size=schools)
    treat = ((adopt[school] >= 0) & (year >= adopt[school])).astype(np.float64)
    x1 = rng.standard_normal(n)
    x1 += 0.3 * rng.standard_normal(schools)[school]
    x2 = rng.standard_normal(n)
    y = rng.standard_normal(n)
    y += 0.2 * treat + 0.5 * x1 - 0.3 * x2 + rng.standard_normal(schools)[school] + 0.03 * year
    return pd.DataFrame({"y": y, "treat": treat, "x1": x1, "x2": x2,
                         "school": school + 100_000, "year": (year + 2010).astype(np.int16)})


def timed(fn, repeats: int):
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def one_sweep(df: pd.DataFrame) -> float:
    """Time of one demeaning sweep (school then year means) over the 4 columns."""
    codes = [pd.factorize(df["school"])[0], pd.factorize(df["year"])[0]]
    X = np.array(df[["y", "treat", "x1", "x2"]].to_numpy(), order="F")
    projectors = [_Projector(c, None) for c in codes]
    t0 = time.perf_counter()
    for p in projectors:
        p.subtract_means(X)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--schools", type=int, default=25_000)
    ap.add_argument("--years", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-pyfixest", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    df = make_pupils(args.rows, args.schools, args.years)
    frame_mb = df.memory_usage(deep=True).sum() / 2**20
    print(f"{FORMULA}, clustered by school: {len(df):,} rows, {df['school'].nunique():,} schools, "
          f"{df['year'].nunique()} years; frame {frame_mb:,.0f} MiB (generated in "
          f"{time.perf_counter() - t0:.1f} s); load {os.getloadavg()[0]:.2f}; "
          f"median of {args.repeats} warm runs")

    print(f"  floor: one demeaning sweep (4 columns, school + year): {one_sweep(df):.3f} s")

    t_ours, ours = timed(lambda: feols(df, FORMULA, cluster="school"), args.repeats)
    print(f"  ours (feols, CR1, {ours.details['absorb']}): {t_ours:.3f} s")
    tracemalloc.start()
    feols(df, FORMULA, cluster="school")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  ours peak memory during the fit (tracemalloc): {peak / 2**20:,.0f} MiB "
          f"= {peak / 2**20 / frame_mb:.2f}x the frame")

    if args.no_pyfixest:
        return
    try:
        import pyfixest as pf
    except ImportError:
        print("  pyfixest: not installed (pip install pyfixest, or the 'bench' extra)")
        return
    t_pf, fit = timed(lambda: pf.feols(FORMULA, data=df, vcov={"CRV1": "school"}, fixef_rm="none"),
                      max(1, args.repeats))
    names = list(ours.params.index)
    dcoef = np.abs(ours.params.to_numpy() - fit.coef()[names].to_numpy()).max()
    rcoef = (np.abs(ours.params.to_numpy() - fit.coef()[names].to_numpy())
             / np.abs(ours.params.to_numpy())).max()
    dse = np.abs(ours.se().to_numpy() - fit.se()[names].to_numpy()).max()
    print(f"  pyfixest (CRV1):  {t_pf:.3f} s   ratio pyfixest/ours = {t_pf / t_ours:.2f}x")
    print(f"  max |coef diff| {dcoef:.2e} (relative {rcoef:.1e}), max |SE diff| {dse:.2e}")
    print(f"  load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
