"""Benchmark and oracle: de Chaisemartin & D'Haultfoeuille (2024) DID_l for a 0/1 treatment
that switches on and off (evaluation/estimators/chaisemartin.py), ours against the
``diff-diff`` package's ``ChaisemartinDHaultfoeuille`` in the same run.

Generates a panel of ``--units`` units x ``--years`` years (default 25,000 x 14 = 350,000
rows): 20% start treated, 60% switch once at a random year, 40% of those switch back
later; a contemporaneous effect of 2 per treated year. Times our fit (``--effects``
effects, ``--placebos`` placebos, analytic SEs) and, unless ``--no-peer``, diff-diff's
(``drop_larger_lower=False``, the paper's treatment of units that switch back; no TWFE
diagnostic, no bootstrap), and prints the largest absolute difference over DID_l,
placebos, normalised effects and their SEs (agreement tolerance 1e-6, the issue's; the
two compute the same sums, so they differ by rounding only). The average total effect is
printed for both but not compared: diff-diff weights horizons differently once units
switch back (see the module docstring).

    python benchmarks/bench_chaisemartin.py [--units 25000] [--years 14] [--effects 5]
                                            [--placebos 3] [--no-peer]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from evaluation.estimators.chaisemartin import chaisemartin_dhaultfoeuille

TOLERANCE = 1e-6


def make_panel(units: int, years: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = (rng.random(units) < 0.2).astype(int)
    D = np.repeat(base[:, None], years, axis=1)
    F = rng.integers(2, years, units)
    for g in np.flatnonzero(rng.random(units) < 0.6):
        D[g, F[g]:] = 1 - base[g]
        if rng.random() < 0.4 and F[g] + 2 < years:
            D[g, rng.integers(F[g] + 1, years):] = base[g]
    Y = (rng.normal(0, 1, units)[:, None] + np.cumsum(rng.normal(0, 0.5, years))[None, :]
         + 2.0 * D + rng.normal(0, 1, (units, years)))
    return pd.DataFrame({"u": np.repeat(np.arange(units), years),
                         "t": np.tile(np.arange(2011, 2011 + years), units),
                         "y": Y.ravel(), "d": D.ravel()})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=25_000)
    ap.add_argument("--years", type=int, default=14)
    ap.add_argument("--effects", type=int, default=5)
    ap.add_argument("--placebos", type=int, default=3)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args(argv)
    df = make_panel(args.units, args.years)
    print(f"panel: {args.units} units x {args.years} years = {len(df)} rows")
    t0 = time.perf_counter()
    ours = chaisemartin_dhaultfoeuille(df, y="y", unit="u", time="t", treatment="d",
                                       effects=args.effects, placebo=args.placebos)
    t_ours = time.perf_counter() - t0
    print(f"ours: {t_ours:.2f} s")
    print(ours.event_time.to_string(index=False))
    print(f"average total effect: {ours.overall.estimate:.6f} (SE {ours.overall.se:.6f})")
    if args.no_peer:
        return 0
    try:
        from diff_diff import ChaisemartinDHaultfoeuille
    except ImportError as exc:
        print(f"diff-diff not installed ({exc}); pip install -e .[test]")
        return 0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ChaisemartinDHaultfoeuille(drop_larger_lower=False, twfe_diagnostic=False).fit(
            df, outcome="y", unit="u", time="t", treatment="d", L_max=max(args.effects, args.placebos))
    t_theirs = time.perf_counter() - t0
    print(f"diff-diff: {t_theirs:.2f} s ({t_theirs / t_ours:.0f}x ours)")
    et = ours.event_time.set_index(["kind", "horizon"])
    diffs = []
    for ell in range(1, args.effects + 1):
        e, nrm, row = theirs.event_study_effects[ell], theirs.normalized_effects[ell], et.loc[("effect", ell)]
        diffs += [row["estimate"] - e["effect"], row["se"] - e["se"],
                  row["normalized"] - nrm["effect"], row["normalized_se"] - nrm["se"]]
    for ell in range(1, args.placebos + 1):
        p, row = theirs.placebo_event_study[-ell], et.loc[("placebo", ell)]
        diffs += [row["estimate"] - p["effect"], row["se"] - p["se"]]
    worst = float(np.max(np.abs(diffs)))
    print(f"max |ours - diff-diff| over DID_l, placebos, normalised, SEs: {worst:.3g} "
          f"({'OK' if worst < TOLERANCE else 'DISAGREE'} at {TOLERANCE:g})")
    print(f"average total effect: ours {ours.overall.estimate:.6f}, diff-diff "
          f"{theirs.cost_benefit_delta['delta']:.6f} (different horizon weights once units switch back)")
    return 0 if worst < TOLERANCE else 1


if __name__ == "__main__":
    raise SystemExit(main())
