"""Benchmark: Callaway-Sant'Anna, never-treated controls, analytic SEs (the PERFORMANCE.md case),
ours against ``diff-diff``, ``csdid`` and ``differences`` in one run.

Generates a staggered panel of 25,000 units x 14 years (350,000 rows; cohorts 2012-2023
and a never-treated group, effects growing with time since treatment) and times, as medians
of warm runs (doubly robust 2x2s, no covariates, no bootstrap):

* ours: ``att_gt`` + ``aggte`` for all four aggregations (simple, group, dynamic, calendar);
* diff-diff (rust backend when built with it): ``CallawaySantAnna.fit(aggregate="all")``,
  i.e. ATT(g,t), the simple overall ATT, the group and the event-study aggregations (no
  calendar aggregation: ours does one more). Ours is timed before and after diff-diff;
* csdid and differences: ATT(g,t) + the dynamic aggregation.

Agreement: against diff-diff, the maximum absolute difference over every ATT(g,t), every
group and event-time aggregate and the overall ATT, and over their SEs, must be at most
1e-12 (both compute R did's estimator; each ATT(g,t) is a difference of weighted means over
at most 25,000 units, and reordered sums of that many O(1) terms differ by ~sqrt(n) * eps
~ 1e-14 in practice). Against csdid and differences, the overall dynamic ATT and its SE must
agree to 1e-9, as before.

On a busy machine, multithreaded BLAS (and diff-diff's rust threads) can slow the peers several
times over (diff-diff 0.25 s on an idle 2-core machine, over 1 s with another job on one
core); ``OPENBLAS_NUM_THREADS=1 RAYON_NUM_THREADS=1`` gives the single-threaded comparison.

The peers are optional: diff-diff is in the ``test`` extra, csdid and differences in ``bench``
(``pip install -e .[test,bench]``); a peer that is not installed is reported and skipped, one
that fails to run or disagrees makes the script exit non-zero.

    python benchmarks/bench_callaway_santanna.py [--units 25000] [--years 14] [--repeats 5]
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

TOLERANCE = 1e-9  # csdid, differences: overall dynamic ATT and SE
DIFF_DIFF_TOLERANCE = 1e-12  # diff-diff: every ATT(g,t), aggregate and SE
TARGET_SECONDS = 0.1  # issue 15, item 5
TARGET_SPEEDUP = 2.5  # over diff-diff, measured in the same run


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


def ours(df: pd.DataFrame) -> dict:
    gt = att_gt(df, y="y", unit="unit", time="year", cohort="g", control="never", method="dr")
    return {"gt": gt, **{kind: aggte(gt, kind) for kind in ("simple", "group", "dynamic", "calendar")}}


def diff_diff_run(df: pd.DataFrame):
    import diff_diff

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = diff_diff.CallawaySantAnna(control_group="never_treated", estimation_method="dr",
                                           base_period="varying")
        return model.fit(df, outcome="y", unit="unit", time="year", first_treat="g", aggregate="all")


def diff_diff_gaps(mine: dict, theirs) -> dict[str, tuple[float, float]]:
    """Max |ours - diff-diff| of the estimates and of the SEs, per quantity."""
    def gap(rows, ref):
        keys = [k for k, _, _ in rows]
        if sorted(keys) != sorted(ref):
            raise AssertionError(f"different cells: ours {sorted(keys)[:5]}..., diff-diff {sorted(ref)[:5]}...")
        return (max(abs(est - ref[k]["effect"]) for k, est, _ in rows),
                max(abs(se - ref[k]["se"]) for k, _, se in rows))

    gt = mine["gt"].group_time
    out = {"ATT(g,t)": gap([((r.g, r.t), r.estimate, r.se) for r in gt.itertuples()],
                           {(float(g), float(t)): v for (g, t), v in theirs.group_time_effects.items()})}
    for kind, name, effects in (("group", "group", theirs.group_effects),
                                ("dynamic", "event time", theirs.event_study_effects)):
        egt = mine[kind].egt
        out[name] = gap([(r.egt, r.estimate, r.se) for r in egt.itertuples()],
                        {float(k): v for k, v in effects.items()})
    simple = mine["simple"].overall
    out["overall (simple)"] = (abs(simple.estimate - theirs.overall_att), abs(simple.se - theirs.overall_se))
    return out


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


def _report_failure(name: str, exc: Exception, skipped: list, failed: list) -> None:
    if isinstance(exc, ImportError):
        skipped.append(name)
        print(f"  {name}: not installed here, skipped ({type(exc).__name__}: {exc})")
        return
    failed.append(name)
    print(f"  {name}: FAILED to run here: {type(exc).__name__}: {exc}")
    print("    " + traceback.format_exc().strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=25_000)
    ap.add_argument("--years", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed warm runs (median) of ours and diff-diff; csdid 3; differences 1")
    args = ap.parse_args()
    df = make_panel(args.units, args.years)
    print(f"Callaway-Sant'Anna, dr, never-treated controls, analytic SEs: {len(df):,} rows "
          f"({args.units:,} units x {args.years} years, {df.loc[df.g > 0, 'g'].nunique()} cohorts); "
          f"median of warm runs")
    failed: list[str] = []
    skipped: list[str] = []

    # ours, then diff-diff, then ours again (diff-diff leaves the machine busier for a while:
    # the second block of ours shows it); each block warmed, the medians over all timed runs
    def block(fn, repeats):
        fn()
        out, times = None, []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return out, times

    mine, t_ours = block(lambda: ours(df), args.repeats)
    theirs, t_dd = None, []
    try:
        theirs, t_dd = block(lambda: diff_diff_run(df), args.repeats)
    except Exception as exc:  # a peer that is missing or breaks is reported, not fatal here
        _report_failure("diff-diff", exc, skipped, failed)
    else:
        t_ours += block(lambda: ours(df), args.repeats)[1]
    t_ours_med = statistics.median(t_ours)
    dyn = mine["dynamic"].overall
    print(f"  ours (att_gt + 4 aggte):  {t_ours_med:7.3f} s   (runs: "
          f"{', '.join(f'{t:.3f}' for t in t_ours)})   overall dynamic ATT {dyn.estimate:.12f}  "
          f"SE {dyn.se:.12f}")
    print(f"    target: <= {TARGET_SECONDS:g} s in process: "
          f"{'met' if t_ours_med <= TARGET_SECONDS else 'NOT met'}")
    if theirs is not None:
        import diff_diff

        t_dd_med = statistics.median(t_dd)
        backend = "rust backend" if getattr(diff_diff, "HAS_RUST_BACKEND", False) else "python backend"
        print(f"  diff-diff {diff_diff.__version__} ({backend}; ATT(g,t), simple, group, event study): "
              f"{t_dd_med:7.3f} s   (runs: {', '.join(f'{t:.3f}' for t in t_dd)})")
        print(f"    ratio ours/diff-diff = {t_ours_med / t_dd_med:.3f} (diff-diff/ours = "
              f"{t_dd_med / t_ours_med:.1f}x; target >= {TARGET_SPEEDUP:g}x: "
              f"{'met' if t_dd_med / t_ours_med >= TARGET_SPEEDUP else 'NOT met'})")
        try:
            gaps = diff_diff_gaps(mine, theirs)
        except AssertionError as exc:
            failed.append("diff-diff")
            print(f"    DISAGREE: {exc}")
        else:
            worst = max(max(v) for v in gaps.values())
            for name, (d_est, d_se) in gaps.items():
                print(f"    max |diff| {name:17} estimate {d_est:.1e}, SE {d_se:.1e}")
            agree = worst <= DIFF_DIFF_TOLERANCE
            print(f"    {'agree' if agree else 'DISAGREE'} to {DIFF_DIFF_TOLERANCE:g}")
            if not agree:
                failed.append("diff-diff")

    peers = {
        "csdid": (lambda: csdid_run(df), 3, True),
        "differences": (lambda: differences_run(df.assign(cohort=df["g"].where(df["g"] > 0))
                                                .set_index(["unit", "year"])), 1, False),
    }
    for name, (fn, repeats, warm) in peers.items():
        try:
            t_peer, (att, se) = timed(fn, repeats, warm)
        except Exception as exc:  # a peer that is missing or breaks is reported, not fatal here
            _report_failure(name, exc, skipped, failed)
            continue
        d_att, d_se = abs(att - dyn.estimate), abs(se - dyn.se)
        agree = d_att <= TOLERANCE and d_se <= TOLERANCE
        note = "" if warm else " (1 run, not warmed: a run takes tens of seconds)"
        print(f"  {name + ' (ATT(g,t) + dynamic):':37} {t_peer:7.3f} s   ratio ours/{name} = "
              f"{t_ours_med / t_peer:.3f} ({name}/ours = {t_peer / t_ours_med:5.1f}x)   "
              f"|ATT diff| {d_att:.1e}, |SE diff| {d_se:.1e} "
              f"({'agree' if agree else 'DISAGREE'} to {TOLERANCE:g}){note}")
        if not agree:
            failed.append(name)
    if skipped:
        print(f"  skipped (not installed): {', '.join(skipped)}")
    if failed:
        raise SystemExit(f"peer(s) failed or disagreed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
