"""``impact multiverse STUDY``: the study rerun over a grid of defensible choices (specification curve)."""

from __future__ import annotations

import sys
from contextlib import ExitStack

from evaluation.cli.output import add_executor_options, emit_json


def register(sub) -> None:
    p = sub.add_parser(
        "multiverse", help="rerun a study over a grid of defensible choices -> results/<id>.multiverse/",
        description="Rerun a study over every combination of defensible analysis choices (matching distance, "
                    "comparison schools per school, caliper, matching characteristics, comparison pool, "
                    "estimator, event window; the study's own choices are one of them) and write "
                    "results/<id>.multiverse/ (multiverse.json and the specification curve), which the study's "
                    "book chapter shows. Specifications sharing a matching run as one task (--workers N or "
                    "--scheduler ADDRESS); the bytes of multiverse.json do not depend on where they ran.")
    p.add_argument("study", metavar="STUDY", help="studies/<id>.toml")
    p.add_argument("--store", help="store file (default data/impact.duckdb or $IMPACT_STORE)")
    p.add_argument("--results", default="results", help="results directory (default results/)")
    p.add_argument("--json", action="store_true", help="print multiverse.json instead of a summary")
    add_executor_options(p)
    p.set_defaults(handler=_multiverse)


def _multiverse(args) -> int:
    from evaluation.cli.study_cmd import open_executor
    from evaluation.data.panels import load_study_data
    from evaluation.data.store import Store
    from evaluation.errors import InputError, problem
    from evaluation.multiverse import default_grid, run_multiverse
    from evaluation.publish.writers import write_multiverse
    from evaluation.study import load_study

    study = load_study(args.study)
    store = Store(args.store)
    if not store.exists():
        raise InputError(problem(f"no store at {store.path}: run `impact data synthesize` or `impact data import` "
                                 "first", file=str(store.path)))
    data = load_study_data(store, study)
    grid = default_grid(study, data)
    print(f"{study.id}: {len(grid.specifications())} specifications, {grid.tasks} matchings (one task each)",
          file=sys.stderr, flush=True)
    with ExitStack() as stack:
        mv = run_multiverse(study, data, executor=open_executor(stack, args), grid=grid, label="matchings")
    path, content = write_multiverse(mv, args.results)
    if args.json:
        emit_json(content)
        return 0
    s = content["summary"]
    h = content["headline"]
    conf = f"{100 * (1 - content['alpha']):g}%"
    print(study.title)
    print(f"  headline ({h['choices']['estimator']}): {h['estimate']:.3f} ({conf} CI {h['ci_low']:.3f} to "
          f"{h['ci_high']:.3f})")
    print(f"  {s['estimated']} of {s['specifications']} specifications estimated"
          + (f"; {s['not_estimated']} could not be" if s["not_estimated"] else "")
          + (f"; {s['withheld']} withheld (disclosure control)" if s["withheld"] else ""))
    print(f"  same sign as the headline: {s['same_sign']} ({s['share_same_sign']:.0%}); agree with the headline: "
          f"{s['agree']} ({s['share_agree']:.0%}); {conf} CI excludes zero: {s['excluding_zero']}")
    print(f"  estimates {s['min_estimate']:.3f} to {s['max_estimate']:.3f} (median {s['median_estimate']:.3f})")
    print(f"  results: {path}/multiverse.json and {path}/specification_curve.png")
    return 0
