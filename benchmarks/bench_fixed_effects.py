"""Benchmark: TWFE y ~ treat + x1 + x2 | unit + year, SEs clustered by unit (PERFORMANCE.md case).

Generates 25,000 units x 14 years (350,000 rows), times our feols against
linearmodels PanelOLS (and pyfixest if installed) in the same run, checks that
the coefficients agree, and prints medians of warm runs and the ratios.

    python benchmarks/bench_fixed_effects.py [--units 25000] [--years 14] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from evaluation.estimators.fixed_effects import demean, feols


def make_panel(units: int, years: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    unit = np.repeat(np.arange(units), years)
    year = np.tile(np.arange(2010, 2010 + years), units)
    first = rng.choice(np.r_[0, np.arange(2013, 2010 + years)], size=units)[unit]
    treat = ((first > 0) & (year >= first)).astype(float)
    x1 = rng.normal(size=unit.size) + 0.2 * rng.normal(size=units)[unit]
    x2 = rng.normal(size=unit.size)
    y = (0.3 * treat + 0.5 * x1 - 0.2 * x2 + rng.normal(size=units)[unit]
         + 0.05 * (year - 2010) + rng.normal(size=unit.size))
    return pd.DataFrame({"unit": unit, "year": year, "treat": treat, "x1": x1, "x2": x2, "y": y})


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=25_000)
    ap.add_argument("--years", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    df = make_panel(args.units, args.years)
    print(f"TWFE y ~ treat + x1 + x2 | unit + year, clustered by unit: {len(df):,} rows "
          f"({args.units:,} units x {args.years} years); median of {args.repeats} warm runs")

    codes = [pd.factorize(df.unit)[0], pd.factorize(df.year)[0]]
    X = df[["y", "treat", "x1", "x2"]].to_numpy()
    t_dm, _ = timed(lambda: demean(X, codes), args.repeats)
    print(f"  demean (4 columns, 2 effects): {t_dm:.3f} s")

    formula = "y ~ treat + x1 + x2 | unit + year"
    t_ours, ours = timed(lambda: feols(df, formula, cluster="unit"), args.repeats)
    print(f"  ours (feols, CR1):             {t_ours:.3f} s")

    from linearmodels import PanelOLS

    indexed = df.set_index(["unit", "year"])

    def panelols():
        return PanelOLS.from_formula("y ~ treat + x1 + x2 + EntityEffects + TimeEffects",
                                     indexed).fit(cov_type="clustered", cluster_entity=True)

    t_lm, lm = timed(panelols, max(1, args.repeats - 1))
    ours_lm = feols(df, formula, cluster="unit", vcov="panelols")
    dcoef = np.abs(ours.params.to_numpy() - lm.params.to_numpy()).max()
    dse = np.abs(ours_lm.se().to_numpy() - lm.std_errors.to_numpy()).max()
    print(f"  linearmodels PanelOLS:         {t_lm:.3f} s   ratio PanelOLS/ours = {t_lm / t_ours:.1f}x"
          f"   (max |coef diff| {dcoef:.1e}, max |SE diff| same convention {dse:.1e})")
    try:
        import pyfixest as pf
    except ImportError:
        print("  pyfixest: not installed (PERFORMANCE.md peer figure: 0.41 s)")
    else:
        t_pf, _ = timed(lambda: pf.feols(formula, data=df, vcov={"CRV1": "unit"}), args.repeats)
        print(f"  pyfixest:                      {t_pf:.3f} s   ratio pyfixest/ours = {t_pf / t_ours:.2f}x")


if __name__ == "__main__":
    main()
