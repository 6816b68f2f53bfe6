"""``impact self-evaluate``: one partnership against matched families of similar schools."""

from __future__ import annotations

import re
import sys

from evaluation.cli.output import emit_json


def register(sub) -> None:
    p = sub.add_parser("self-evaluate", help="evaluate one partnership's schools against similar schools",
                       description="Compare a partnership's schools with families of similar schools: synthetic "
                                   "DiD, synthetic control and DiD for the partnership, school-by-school results, "
                                   "a randomisation-inference p-value and the minimum detectable effect.")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--schools", metavar="FILE",
                     help="CSV with columns urn and joined, one row per school; joined is the date the school "
                          "joined the partnership (2019-09-01 or 01/09/2019)")
    who.add_argument("--partnership", metavar="ID", help="a partnership_id in the store")
    p.add_argument("--name", help="name for the results (default: the partnership id or the file name)")
    p.add_argument("--outcome", help="outcome column (default: KS2 expected standard or Attainment 8 by phase)")
    p.add_argument("--family-size", type=int, default=50, help="comparison schools per school (default 50)")
    p.add_argument("--permutations", type=int, default=999, help="randomisation-inference draws (default 999)")
    p.add_argument("--seed", type=int, default=20240901)
    p.add_argument("--store", help="store file (default data/impact.duckdb or $IMPACT_STORE)")
    p.add_argument("--results", default="results", help="results directory (default results/)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_run)


def load_all(store):
    from evaluation.stages.cohort import StudyData
    from evaluation.errors import InputError, problem

    if not store.exists():
        raise InputError(problem(f"no store at {store.path}: run `impact data synthesize` or `impact data import` "
                                 "first", file=str(store.path)))
    truth = store.read_extra("truth_effects") if "truth_effects" in store.tables() else None
    return StudyData(store.read_table("schools"), store.read_table("partnerships"),
                     store.read_table("memberships"), store.read_table("school_years"), truth,
                     fingerprint=store.fingerprint())


def _run(args) -> int:
    from pathlib import Path

    from evaluation.data.store import Store
    from evaluation.errors import InputError, problem
    from evaluation.publish.writers import write_self_evaluation
    from evaluation.self_evaluation import (SelfEvaluationSpec, read_schools_file, schools_of_partnership,
                                            self_evaluate)

    if args.family_size < 5:
        raise InputError(problem("--family-size: expected at least 5 comparison schools per school",
                                 value=args.family_size))
    if args.permutations < 99:
        raise InputError(problem("--permutations: expected at least 99", value=args.permutations))
    schools = read_schools_file(args.schools) if args.schools else None
    data = load_all(Store(args.store))
    if schools is None:
        schools = schools_of_partnership(data, args.partnership)
    name = args.name or (args.partnership or Path(args.schools).stem)
    name = re.sub(r"[^A-Za-z0-9_\-]+", "_", name).strip("_").lower() or "self_evaluation"
    print(f"evaluating {len(schools)} schools against families of {args.family_size} similar schools ...",
          file=sys.stderr, flush=True)
    title = None
    if args.partnership:
        names = data.partnerships.set_index("partnership_id")["name"]
        title = str(names.get(args.partnership, args.partnership))
    spec = SelfEvaluationSpec(name=name, schools=schools, outcome=args.outcome, family_size=args.family_size,
                              seed=args.seed, n_perm=args.permutations, title=title)
    result = self_evaluate(spec, data)

    target = write_self_evaluation(result, args.results)
    if args.json:
        emit_json(result)
        return 0
    e = result["estimates"]["synthetic_did"]
    es = result["effect_size"]
    print(f"{name}: {sum(s['analysed'] for s in result['schools'])} schools vs {result['comparison']['schools']} "
          f"comparison schools, outcome {result['outcome']['name']}")
    size = ("no effect size: " + es["withheld"]) if es.get("g") is None else \
        f"effect size {es['g']:.2f} ({es['months']} months)"
    smallest = (f"{es['mdes_units']:.2f} in the outcome's units" if es.get("mdes") is None else
                f"{es['mdes']:.2f} ({es['mdes_months']} months)")
    print(f"  effect (synthetic DiD): {e['estimate']:.2f} (95% CI {e['ci_low']:.2f} to {e['ci_high']:.2f}); {size}")
    print(f"  randomisation p-value: {result['randomisation']['p_value']:.3f}; smallest effect we could have "
          f"detected: {smallest}")
    print(f"  results: {target}/result.json")
    return 0
