"""``impact validate STUDY`` and ``impact run STUDY``."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path

from evaluation.cli.output import add_executor_options, emit_json


def register(sub) -> None:
    val = sub.add_parser("validate", help="check a study definition (and its cohort in the store) without running it",
                         description="Check studies/<id>.toml against the study definition (unknown keys get a "
                                     "suggestion, every problem names its line) and, when the store exists, build "
                                     "its cohort and comparison pool and print their sizes. Nothing is estimated.")
    val.add_argument("study", metavar="STUDY", help="studies/<id>.toml")
    val.add_argument("--store", help="store file (default data/impact.duckdb or $IMPACT_STORE)")
    val.add_argument("--json", action="store_true")
    val.set_defaults(handler=_validate)

    run = sub.add_parser("run", help="run studies: cohort, matching, estimators -> results/<id>/",
                         description="Run one or more studies: cohort, per-cohort matched comparison schools, "
                                     "every listed estimator, diagnostics, power; write results/<id>/ for each. "
                                     "Several studies run as independent tasks (--workers N or --scheduler "
                                     "ADDRESS); a single study runs its placebo dates as tasks. The bytes of "
                                     "result.json do not depend on where the tasks ran.")
    run.add_argument("study", metavar="STUDY", nargs="+", help="studies/<id>.toml (one or more)")
    run.add_argument("--store", help="store file (default data/impact.duckdb or $IMPACT_STORE)")
    run.add_argument("--results", default="results", help="results directory (default results/)")
    run.add_argument("--json", action="store_true", help="print result.json (a list of them for several studies) "
                                                         "instead of a summary")
    add_executor_options(run)
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
    from evaluation.data.store import Store
    from evaluation.errors import InputError, problem
    from evaluation.publish.writers import write_results
    from evaluation.runner import run_studies
    from evaluation.study import load_study

    studies = [load_study(p) for p in args.study]  # every definition checked before the long steps
    seen: dict[str, str] = {}
    for path, study in zip(args.study, studies):
        if study.id in seen:
            raise InputError(problem(f"study {study.id!r} is given twice (also {seen[study.id]})", file=str(path)))
        seen[study.id] = str(path)
    store = Store(args.store)
    if not store.exists():
        raise InputError(problem(f"no store at {store.path}: run `impact data synthesize` or `impact data import` "
                                 "first", file=str(store.path)))
    say = (lambda m: print(m, file=sys.stderr, flush=True))
    with ExitStack() as stack:
        runs = run_studies(studies, store, executor=open_executor(stack, args), say=say)
    paths = [write_results(run, args.results) for run in runs]
    # what was published (after disclosure control), not the uncontrolled run
    published = [json.loads((path / "result.json").read_text(encoding="utf-8")) for path in paths]
    if args.json:
        emit_json(published[0] if len(published) == 1 else published)
        return 0
    for result, path in zip(published, paths):
        _summary(result, path)
    return 0


def open_executor(stack: ExitStack, args):
    """The executor the --workers / --scheduler options ask for, closed with ``stack``; a scheduler
    that cannot be reached is bad input (exit 2), not an internal error."""
    from evaluation.errors import InputError, problem
    from evaluation.executors import make_executor

    try:
        return stack.enter_context(make_executor(workers=getattr(args, "workers", None),
                                                 scheduler=getattr(args, "scheduler", None)))
    except (OSError, TimeoutError) as err:
        raise InputError(problem(f"cannot reach the Dask scheduler ({err}); check the address and that the "
                                 "scheduler is running", column="--scheduler", value=args.scheduler)) from None


def _summary(r: dict, path) -> None:
    primary = r["estimates"][r["primary_estimator"]]
    print(f"{r['study']['title']}")
    print(f"  {r['counts']['treated_analysed']} partnership schools ({r['counts']['partnerships']} partnerships) "
          f"vs {r['counts']['comparison_matched']} matched comparison schools")
    print(f"  effect on {r['outcome']['name']} ({r['primary_estimator']}): {primary['estimate']:.3f} "
          f"(95% CI {primary['ci_low']:.3f} to {primary['ci_high']:.3f}, SE {primary['se']:.3f})")
    truth = r.get("synthetic_truth")
    if truth:
        print(f"  planted effect in the synthetic data: {truth['overall']:.3f}")
    print(f"  results: {path}/result.json")
