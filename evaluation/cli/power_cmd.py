"""``impact power STUDY``: the smallest effect a study could detect, before it is run."""

from __future__ import annotations

import math

from evaluation.cli.output import emit_json


def register(sub) -> None:
    p = sub.add_parser("power", help="minimum detectable effect size and power of a study (no matching, no "
                                     "estimation): plan before you run",
                       description="Plan a study before running it: the minimum detectable effect size (Hedges' g "
                                   "and months' progress) of its design, from the cohort's schools and "
                                   "partnerships, the expected comparison schools, the outcome's serial correlation "
                                   "and the clustering; with --effect, the power to detect given effect sizes.")
    p.add_argument("study", metavar="STUDY", help="studies/<id>.toml")
    p.add_argument("--store", help="store file (default data/impact.duckdb or $IMPACT_STORE)")
    p.add_argument("--json", action="store_true", help="print the power analysis as JSON")
    p.add_argument("--effect", type=float, nargs="+", action="extend", metavar="X", default=[],
                   help="effect size(s) (Hedges' g) to give the power to detect")
    p.set_defaults(handler=_power)


def _power(args) -> int:
    from evaluation.data.panels import load_study_data
    from evaluation.data.store import Store
    from evaluation.diagnostics.power import study_power
    from evaluation.effects import months_progress
    from evaluation.errors import InputError, problem
    from evaluation.study import load_study

    bad = [x for x in args.effect if not math.isfinite(x)]
    if bad:
        raise InputError(problem("an effect size must be a finite number", column="--effect", value=bad[0]))
    study = load_study(args.study)
    store = Store(args.store)
    if not store.exists():
        raise InputError(problem(f"no store at {store.path}: run `impact data synthesize` or `impact data import` "
                                 "first", file=str(store.path)))
    res = study_power(study, load_study_data(store, study))
    powers = [{"effect": x, "months": months_progress(x), "power": res.power_at(x)} for x in args.effect]
    if args.json:
        emit_json({**res.to_dict(), "power_at": powers})
        return 0
    groups = f"{res.clusters_treated} partnership{'s' if res.clusters_treated != 1 else ''}"
    if math.isfinite(res.mdes):
        months = _months(res.months)
        print(f"{study.title}")
        print(f"With {groups} ({res.schools_treated} schools) and about {res.schools_comparison} comparison "
              f"schools, this study could detect an effect of {res.mdes:.2f} or more ({months} progress) "
              f"with {res.power:.0%} power ({res.alpha:g} two-sided test); that is "
              f"{res.mdes_raw:.3g} on {res.outcome}.")
    else:
        print(f"With {groups}, this study cannot tell an effect from the partnership's own ups and downs: no "
              f"minimum detectable effect can be given.")
    print("Ingredients:")
    print(f"  partnerships (clusters): {res.clusters_treated}, schools per partnership "
          f"{min(res.cluster_sizes)}-{max(res.cluster_sizes)} (design effect {res.design_effect:.2f})")
    print(f"  intraclass correlation of changes between partnerships (ICC): {res.icc:.3f}")
    print(f"  serial correlation of school results, year to year: {res.serial_correlation:.2f}")
    print(f"  SD of a school's change ({res.t_post} years after vs {res.t_pre} before joining): "
          f"{math.sqrt(res.var_change):.3g} (comparison pool directly: {math.sqrt(res.var_change_direct):.3g})")
    print(f"  effect-size SD: {res.sd:.3g} ({res.sd_label})")
    print(f"  degrees of freedom {res.df:.0f}, multiplier {res.multiplier:.2f}; primary estimator "
          f"{res.estimator}")
    for p in powers:
        print(f"Power to detect an effect of {p['effect']:.2f} ({_months(p['months'])} progress): {p['power']:.0%}")
    for note in res.notes:
        print(f"Note: {note}")
    return 0


def _months(m: int) -> str:
    return f"{m} month's" if abs(m) == 1 else f"{m} months'"
