"""``impact self-evaluate``: one partnership against matched families of similar schools."""

from __future__ import annotations

import re
import sys

from evaluation.cli.output import emit_json


def register(sub) -> None:
    p = sub.add_parser("self-evaluate", help="evaluate one partnership's schools against similar schools",
                       description="Compare every school of a partnership with its family of similar schools, each "
                                   "from its own joining year and on its phase's outcome: synthetic DiD per joining "
                                   "cohort (synthetic control and DiD beside it), placebo inference, school-by-school "
                                   "results, the minimum detectable effect, targets against the baseline, and the "
                                   "history of the estimate over re-runs. Name the partnership with a partnership "
                                   "file (partnerships/ID.toml), --partnership ID or --schools FILE.")
    p.add_argument("plan", nargs="?", metavar="PARTNERSHIP.toml",
                   help="a partnership file: schools (or partnership_id), baseline year, targets (see "
                        "partnerships/example_trust.toml)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--schools", metavar="FILE",
                     help="CSV with columns urn and joined (and optionally role: member or supporting), one row per "
                          "school; joined is the date the school joined the partnership (2019-09-01 or 01/09/2019)")
    who.add_argument("--partnership", metavar="ID", help="a partnership_id in the store")
    p.add_argument("--name", help="name for the results (default: the partnership id or the file name)")
    p.add_argument("--outcome", help="outcome column for the phase of its key stage (default: KS2 expected "
                                     "standard for primary schools, Attainment 8 for secondary schools)")
    p.add_argument("--family-size", type=int, default=50, help="comparison schools per school (default 50)")
    p.add_argument("--permutations", type=int, default=200,
                   help="placebo replications per joining cohort (default 200)")
    p.add_argument("--pre-years", type=int, default=4, help="years of results before joining compared (default 4)")
    p.add_argument("--post-years", type=int, default=5,
                   help="years after the first results after joining compared (default 5)")
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


def _spec_from_args(args, data):
    from pathlib import Path

    from evaluation.errors import InputError, problem
    from evaluation.self_evaluation import SelfEvaluationSpec, read_schools_file, schools_of_partnership

    if args.family_size < 5:
        raise InputError(problem("--family-size: expected at least 5 comparison schools per school",
                                 value=args.family_size))
    if args.permutations < 99:
        raise InputError(problem("--permutations: expected at least 99", value=args.permutations))
    if args.pre_years < 2 or args.post_years < 1:
        raise InputError(problem("--pre-years: expected at least 2; --post-years: at least 1",
                                 value=f"{args.pre_years}, {args.post_years}"))
    schools = read_schools_file(args.schools) if args.schools else schools_of_partnership(data, args.partnership)
    name = args.name or (args.partnership or Path(args.schools).stem)
    name = re.sub(r"[^A-Za-z0-9_\-]+", "_", name).strip("_").lower() or "self_evaluation"
    title = None
    if args.partnership:
        names = data.partnerships.set_index("partnership_id")["name"]
        title = str(names.get(args.partnership, args.partnership))
    return SelfEvaluationSpec(name=name, schools=schools, outcome=args.outcome, family_size=args.family_size,
                              seed=args.seed, n_perm=args.permutations, title=title, pre_years=args.pre_years,
                              post_years=args.post_years, partnership_id=args.partnership)


def spec_from_plan(plan, data, source_file: str):
    """A partnership file as a SelfEvaluationSpec (its schools from the file or the store)."""
    from evaluation.partnership_file import schools_frame
    from evaluation.self_evaluation import SelfEvaluationSpec, schools_of_partnership

    schools = schools_frame(plan)
    if schools is None:
        schools = schools_of_partnership(data, plan.partnership_id, supporting=plan.supporting)
    return SelfEvaluationSpec(name=plan.id, title=plan.title, schools=schools, outcomes=dict(plan.outcomes),
                              baseline_year=plan.baseline_year, targets=tuple(plan.targets),
                              pupil_sd={k: (v.sd, v.source) for k, v in plan.pupil_sd.items()},
                              family_size=plan.family_size, pre_years=plan.pre_years, post_years=plan.post_years,
                              n_perm=plan.placebo_replications, seed=plan.seed, partnership_id=plan.partnership_id,
                              source_file=source_file)


def _run(args) -> int:
    from evaluation.data.store import Store
    from evaluation.errors import InputError, problem
    from evaluation.partnership_file import load_partnership_file
    from evaluation.publish.writers import write_self_evaluation
    from evaluation.report.results_io import previous_self_evaluation_history
    from evaluation.self_evaluation import self_evaluate

    if (args.plan is None) == (args.schools is None and args.partnership is None):
        raise InputError(problem("name the partnership once: a partnership file (PARTNERSHIP.toml), --partnership "
                                 "ID or --schools FILE"))
    plan = load_partnership_file(args.plan) if args.plan else None
    if plan is not None:
        ignored = [flag for flag, value in (("--name", args.name), ("--outcome", args.outcome)) if value]
        if ignored:
            raise InputError(problem(f"{', '.join(ignored)}: set these in the partnership file, not on the command "
                                     "line", file=args.plan))
    data = load_all(Store(args.store))
    spec = spec_from_plan(plan, data, args.plan) if plan else _spec_from_args(args, data)
    history, note = previous_self_evaluation_history(args.results, spec.name)
    if note:
        print(f"note: {note}", file=sys.stderr)
    print(f"evaluating {len(spec.schools)} schools against families of {spec.family_size} similar schools ...",
          file=sys.stderr, flush=True)
    result = self_evaluate(spec, data, history=history)

    target = write_self_evaluation(result, args.results)
    if args.json:
        emit_json(result)
        return 0
    print(describe(result))
    print(f"  results: {target}/result.json")
    return 0


def describe(result: dict) -> str:
    """What the terminal shows: schools analysed and left out, the answer, each phase, targets."""
    from evaluation.report.self_eval_chapter import answer

    lines = []
    analysed = [s for s in result["schools"] if s["status"] == "analysed"]
    lines.append(f"{result['name']}: {len(analysed)} of {len(result['schools'])} schools analysed, against "
                 f"{result['comparison']['schools']} comparison schools")
    for s in result["schools"]:
        if s["status"] != "analysed":
            lines.append(f"  {s['name']} (URN {s['urn']}): {s['reason'] or 'supporting school, reported on its own'}")
    for p in result["phases"]:
        e = p["estimates"]["synthetic_did"]
        es = p["effect_size"]
        size = f"; effect size {es['g']:.2f}" if es else ""
        lines.append(f"  {p['phase']} ({p['outcome']}, {p['schools']} schools): {e['estimate']:.2f} (95% CI "
                     f"{e['ci_low']:.2f} to {e['ci_high']:.2f}; placebo p = {e['p_value']:.3f}){size}")
    h = result["headline"]
    if h and h["scale"] == "effect size":
        lines.append(f"  partnership: effect size {h['g']:.2f} (95% CI {h['g_ci'][0]:.2f} to {h['g_ci'][1]:.2f}); "
                     f"smallest effect we could have detected: {h['mdes']:.2f}")
    elif h:
        smallest = (f"{h['mdes']:.2f} (effect size)" if h.get("mdes") is not None else
                    f"{h['mdes_units']:.2f} in the outcome's units")
        lines.append(f"  smallest effect we could have detected: {smallest}")
    lines.append(f"  {answer(result)}")
    for t in result["targets"]:
        lines.append(f"  target {t['outcome']} ({t['kind_words']}) {t['target']:g} by {t['year']}: {t['status']}"
                     + (f" ({t['reason']})" if t.get("reason") else ""))
    return "\n".join(lines)
