"""``impact validate STUDY`` and ``impact run STUDY``."""

from __future__ import annotations

import sys
from pathlib import Path

from evaluation.cli.output import emit_json


def register(sub) -> None:
    val = sub.add_parser("validate", help="check a study definition (and its cohort in the store) without running it")
    val.add_argument("study", metavar="STUDY", help="studies/<id>.toml")
    val.add_argument("--store", help="store file (default data/impact.duckdb or $IMPACT_STORE)")
    val.add_argument("--json", action="store_true")
    val.set_defaults(handler=_validate)

    run = sub.add_parser("run", help="run a study: cohort, matching, estimators -> results/<id>/")
    run.add_argument("study", metavar="STUDY", help="studies/<id>.toml")
    run.add_argument("--store", help="store file (default data/impact.duckdb or $IMPACT_STORE)")
    run.add_argument("--results", default="results", help="results directory (default results/)")
    run.add_argument("--json", action="store_true", help="print result.json instead of a summary")
    run.set_defaults(handler=_run)


def _load(args):
    from evaluation.data.panels import load_study_data
    from evaluation.data.store import Store
    from evaluation.study import load_study

    study = load_study(args.study)
    store = Store(args.store)
    return study, store, (load_study_data(store, study) if store.exists() else None)


def _validate(args) -> int:
    from evaluation.stages.cohort import build_cohort

    study, store, data = _load(args)
    out = {"study": study.id, "valid": True, "spec_hash": study.spec_hash, "store": str(store.path)}
    if data is None:
        out["note"] = f"no store at {store.path}: the definition was checked, the cohort was not"
    else:
        cohort = build_cohort(study, data)
        out["cohorts"] = {str(g): int((cohort.treated["g"] == g).sum()) for g in cohort.cohorts}
        out["treated"] = int(len(cohort.treated))
        out["comparison_pool"] = int(len(cohort.pool))
    if args.json:
        emit_json(out)
    else:
        print(f"{Path(args.study).name}: valid study definition {study.id!r} (spec hash {study.spec_hash[:12]})")
        if data is None:
            print(out["note"])
        else:
            sizes = ", ".join(f"{g}: {n}" for g, n in out["cohorts"].items())
            print(f"cohort: {out['treated']} schools (by first exposed year {sizes}); "
                  f"comparison pool: {out['comparison_pool']} schools")
    return 0


def _run(args) -> int:
    from evaluation.errors import InputError, problem
    from evaluation.pipeline import run_study
    from evaluation.report.outputs import write_results

    study, store, data = _load(args)
    if data is None:
        raise InputError(problem(f"no store at {store.path}: run `impact data synthesize` or `impact data import` "
                                 "first", file=str(store.path)))
    say = (lambda m: print(m, file=sys.stderr, flush=True))
    run = run_study(study, data, say=say)
    path = write_results(run, args.results)
    r = run.result
    if args.json:
        emit_json(r)
        return 0
    primary = r["estimates"][r["primary_estimator"]]
    print(f"{study.title}")
    print(f"  {r['counts']['treated_analysed']} partnership schools ({r['counts']['partnerships']} partnerships) "
          f"vs {r['counts']['comparison_matched']} matched comparison schools")
    print(f"  effect on {r['outcome']['name']} ({r['primary_estimator']}): {primary['estimate']:.3f} "
          f"(95% CI {primary['ci_low']:.3f} to {primary['ci_high']:.3f}, SE {primary['se']:.3f})")
    truth = r.get("synthetic_truth")
    if truth:
        print(f"  planted effect in the synthetic data: {truth['overall']:.3f}")
    print(f"  results: {path}/result.json")
    return 0
