"""``impact book build`` (results -> the published Jupyter Book) and ``impact demo``
(synthesize the national panel, run every example study, build the book)."""

from __future__ import annotations

import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from evaluation.cli.output import add_executor_options, emit_json

DEFAULT_OUT = "book"
DEMO_MULTIVERSE = "mat_converter_secondary_ks4"  # the example study whose specification curve the demo book shows  # the HTML lands in book/_build/html (git-ignored), the source in book/_build/source


def register(sub) -> None:
    book = sub.add_parser("book", help="build the published Jupyter Book from results/",
                          description="Turn every results/<id>/ into a chapter and build static HTML "
                                      "(Jupyter Book 1.x, strict, offline).")
    book_sub = book.add_subparsers(dest="book_command", metavar="SUBCOMMAND", required=True)
    build = book_sub.add_parser("build", help="build the book: one chapter per study, synthesis, methods, "
                                              "data dictionary",
                                description="Build the Jupyter Book from results/: a chapter per study and per "
                                            "self-evaluation, the synthesis, methods and data dictionary. Strict "
                                            "(any warning fails) and offline; HTML in OUT/_build/html.")
    build.add_argument("--results", default="results", help="results directory (default results/)")
    build.add_argument("--out", default=DEFAULT_OUT,
                       help="output directory; the HTML goes to OUT/_build/html (default book/)")
    build.add_argument("--json", action="store_true", help="print {index, studies, seconds} as JSON")
    build.set_defaults(handler=_build)

    demo = sub.add_parser("demo", help="synthesize the national panel, run every example study, build the book",
                          description="The main job in one command: synthesize the national panel into the "
                                      "store, run every studies/*.toml into results/, build the book and print "
                                      "the path of its index.html.")
    demo.add_argument("--store", help="store file (default data/impact.duckdb or $IMPACT_STORE)")
    demo.add_argument("--results", default="results", help="results directory (default results/)")
    demo.add_argument("--out", default=DEFAULT_OUT,
                      help="book output directory; the HTML goes to OUT/_build/html (default book/)")
    demo.add_argument("--seed", type=int, default=2024, help="seed of the synthetic panel (default 2024)")
    demo.add_argument("--schools", type=int, default=20_000,
                      help="number of schools in the synthetic panel (default 20,000; fewer is quicker)")
    demo.add_argument("--studies", default="studies", help="directory of study definitions (default studies/)")
    demo.add_argument("--partnerships", default="partnerships",
                      help="directory of partnership files to self-evaluate (default partnerships/)")
    demo.add_argument("--json", action="store_true", help="print {index, studies, seconds} as JSON")
    demo.add_argument("--multiverse", metavar="STUDY_ID",
                      help=f"also run the multiverse of this study, shown in its chapter (default {DEMO_MULTIVERSE} "
                           "when it is among the studies; 'none' to skip)")
    add_executor_options(demo)
    demo.set_defaults(handler=_demo)


def _say(args):
    return (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))


def _build_book(args, say) -> tuple[Path | None, int]:
    from evaluation.report.book import BookBuildError, build_book

    try:
        return build_book(args.results, args.out, say=say), 0
    except BookBuildError as err:
        print(f"impact: error: {err}", file=sys.stderr)
        return None, 1


def _report(args, index: Path, studies: list[str], t0: float) -> int:
    if args.json:
        emit_json({"index": str(index), "studies": studies, "seconds": round(time.perf_counter() - t0, 1)})
    else:
        print(index)
    return 0


def _build(args) -> int:
    from evaluation.report.book import load_results

    t0 = time.perf_counter()
    studies = [s.result["study"]["id"] for s in load_results(args.results)]
    index, code = _build_book(args, _say(args))
    return code if index is None else _report(args, index, studies, t0)


def _demo_self_evaluations(args, store, say) -> None:
    """Each partnership file in --partnerships whose partnership is in the store; when none is, one
    example partnership of the panel (so a smaller demo panel still shows the chapter)."""
    from evaluation.cli.self_eval_cmd import load_all, spec_from_plan
    from evaluation.partnership_file import load_partnership_file
    from evaluation.self_evaluation import SelfEvaluationSpec, example_partnership, schools_of_partnership

    everything = load_all(store)
    known = set(everything.memberships["partnership_id"].astype(str))
    specs = []
    for path in sorted(Path(args.partnerships).glob("*.toml")):
        plan = load_partnership_file(path)
        if plan.partnership_id is not None and plan.partnership_id not in known:
            say(f"  {path}: partnership {plan.partnership_id} is not in this store; skipped")
            continue
        specs.append(spec_from_plan(plan, everything, str(path)))
    written = 0
    for spec in specs:
        written += _demo_self_evaluation(args, spec, everything, say)
    if not written:
        pid = example_partnership(everything)
        title = str(everything.partnerships.set_index("partnership_id").at[pid, "name"])
        _demo_self_evaluation(args, SelfEvaluationSpec(name=pid.lower(), title=title, partnership_id=pid,
                                                       schools=schools_of_partnership(everything, pid)),
                              everything, say)


def _demo_self_evaluation(args, spec, everything, say) -> bool:
    from evaluation.errors import InputError
    from evaluation.publish.writers import write_self_evaluation
    from evaluation.report.markdown import plural
    from evaluation.report.results_io import previous_self_evaluation_history
    from evaluation.self_evaluation import self_evaluate

    say(f"  self-evaluation of one partnership: {spec.title} ({plural(len(spec.schools), 'school')})")
    history, _ = previous_self_evaluation_history(args.results, spec.name)
    try:
        result = self_evaluate(spec, everything, history=history)
    except InputError as err:  # a partnership file written for another panel
        say(f"    skipped: {err.render()}")
        return False
    say(f"    -> {write_self_evaluation(result, args.results)}/result.json")
    return True


def _demo(args) -> int:
    from evaluation.data.national import synthesize
    from evaluation.cli.study_cmd import open_executor
    from evaluation.data.store import Store
    from evaluation.errors import InputError, problem
    from evaluation.data.panels import load_study_data
    from evaluation.multiverse import run_multiverse
    from evaluation.publish.writers import write_multiverse, write_results
    from evaluation.runner import run_studies_that_can_run
    from evaluation.study import load_study

    t0 = time.perf_counter()
    say = _say(args)
    specs = sorted(Path(args.studies).glob("*.toml"))
    if not specs:
        raise InputError(problem("no study definitions (*.toml) found", file=str(args.studies)))
    if args.schools < 200:
        raise InputError(problem("expected at least 200 schools", column="--schools", value=args.schools))
    studies = [load_study(p) for p in specs]  # check every definition before the long steps
    chosen = [s for s in studies if s.id == (args.multiverse or DEMO_MULTIVERSE)]
    if args.multiverse not in (None, "none") and not chosen:
        raise InputError(problem(f"no study {args.multiverse!r} among {[s.id for s in studies]} for the multiverse "
                                 "(--multiverse ID, or none)",
                                 column="--multiverse", value=args.multiverse))
    store = Store(args.store)
    say(f"[demo 1/3] synthesizing the national panel (seed {args.seed}) into {store.path}")
    pupils = any(s.outcome.level == "pupil" for s in studies)  # the pupil panel only when a study needs it
    synthesize(store, seed=args.seed, n_schools=args.schools, progress=lambda m: say("  " + m), pupils=pupils)
    say(f"[demo 2/3] running {len(studies)} studies into {args.results}/")
    if args.multiverse == "none":
        chosen = []
    with ExitStack() as stack:
        executor = open_executor(stack, args)
        runs, left_out = run_studies_that_can_run(studies, store, executor=executor,
                                                  say=lambda m: None if m.startswith(" ") else say("  " + m))
        for why in left_out:
            say(f"  not run on this panel ({args.schools:,} schools): {why}")
        ran = set()
        for run in runs:
            sid = run.result["study"]["id"]
            try:
                say(f"  {sid} -> {write_results(run, args.results)}/result.json")
                ran.add(sid)
            except InputError as err:  # e.g. too few schools to publish anything under disclosure control
                left_out.append(f"{sid}: {err.render()}")
                say(f"  not published from this panel ({args.schools:,} schools): {left_out[-1]}")
        for study in studies:  # the demo rewrites its examples' results: an older one would be stale
            stale = Path(args.results) / study.id
            if study.id not in ran and (stale / "result.json").exists():
                shutil.rmtree(stale)
                say(f"  removed {stale}/ (an earlier demo's result for a study not run this time)")
        if not ran:
            raise InputError(problem(f"no example study can be estimated on a panel of {args.schools:,} schools: "
                                     + "; ".join(left_out), column="--schools", value=args.schools))
        for study in chosen:
            say(f"  multiverse of {study.id}")
            mv = run_multiverse(study, load_study_data(store, study), executor=executor)
            path, content = write_multiverse(mv, args.results)
            say(f"    {content['summary']['specifications']} specifications -> {path}/multiverse.json")
    _demo_self_evaluations(args, store, say)
    say("[demo 3/3] building the book")
    index, code = _build_book(args, say)
    return code if index is None else _report(args, index, [s.id for s in studies if s.id in ran], t0)
