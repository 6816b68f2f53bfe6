"""``impact estimate DATA --estimator ...``: staggered difference-in-differences from a panel file.

Estimators: ``twfe`` (static two-way fixed effects), ``event-study`` (dynamic TWFE),
``callaway-santanna`` (Callaway & Sant'Anna 2021, R did numbers), ``sun-abraham`` (Sun &
Abraham 2021, fixest sunab numbers), ``imputation`` (Borusyak, Jaravel & Spiess 2024) and
``chaisemartin-dhaultfoeuille`` (de Chaisemartin & D'Haultfoeuille 2024, DID_l with not-yet-switched
comparisons; every effect and placebo the panel identifies; the headline is the average total effect).
"""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd

from evaluation.cli.output import emit_json
from evaluation.estimators.names import ESTIMATOR_NAMES, canonical, cli_spelling
from evaluation.result_schema import RESULT_SCHEMA_VERSION, EstimateResult
from evaluation.cli.regress_cmd import read_table
from evaluation.errors import InputError, plain, problem, with_file
from evaluation.estimators.fixed_effects import missing_column, numeric_column
from evaluation.estimators.results import EstimatorResult

#: estimator -> (module, function) in evaluation.estimators: the raw estimators on a user's panel
#: (the registry wraps the same functions with a study's specification).
_FUNCTIONS = {
    "twfe": ("evaluation.estimators.twfe", "twfe_did"),
    "event_study": ("evaluation.estimators.twfe", "event_study"),
    "callaway_santanna": ("evaluation.estimators.callaway_santanna", "att_gt"),
    "sun_abraham": ("evaluation.estimators.sun_abraham", "sun_abraham"),
    "imputation": ("evaluation.estimators.imputation", "imputation_did"),
    "chaisemartin_dhaultfoeuille": ("evaluation.estimators.chaisemartin", "chaisemartin_from_cohort"),
}
#: --estimator choice (the command-line spelling of each name) -> (module, function).
ESTIMATORS = {cli_spelling(name): _FUNCTIONS[name] for name in ESTIMATOR_NAMES}
CS_ONLY = {"method": "dr", "aggregate": "simple", "control": "never", "bootstrap": 0}


def register(sub) -> None:
    parser = sub.add_parser(
        "estimate",
        help="difference-in-differences with staggered adoption (TWFE, event study, "
        "Callaway-Sant'Anna, Sun-Abraham, imputation, de Chaisemartin-D'Haultfoeuille)",
        description="Estimate the effect of joining a partnership from a long panel (one row per "
        "unit and period). --cohort holds the first treated period (0 or empty = never treated).",
    )
    parser.add_argument("data", metavar="DATA", help="CSV or Parquet file, one row per unit and period")
    parser.add_argument("--unit", required=True, metavar="COL", help="unit identifier column")
    parser.add_argument("--time", required=True, metavar="COL", help="period column (numeric)")
    parser.add_argument("--outcome", required=True, metavar="COL", help="outcome column (numeric)")
    parser.add_argument("--cohort", required=True, metavar="COL",
                        help="first treated period column (0 or empty = never treated)")
    parser.add_argument("--estimator", required=True, choices=list(ESTIMATORS),
                        type=lambda text: cli_spelling(canonical(text)),  # the study file's spelling works too
                        help="the estimator (callaway-santanna or callaway_santanna: both spellings work)")
    parser.add_argument("--control", choices=["never", "not-yet"], default="never",
                        help="comparison units for callaway-santanna (default: never treated)")
    parser.add_argument("--covariates", metavar="A,B", default="",
                        help="comma-separated covariate columns")
    parser.add_argument("--method", choices=["dr", "ipw", "reg"], default="dr",
                        help="callaway-santanna 2x2 estimator: doubly robust (default), IPW, regression")
    parser.add_argument("--cluster", metavar="COL", help="cluster standard errors by this column")
    parser.add_argument("--weights", metavar="COL", help="sampling weights column")
    parser.add_argument("--aggregate", choices=["simple", "group", "dynamic", "calendar"],
                        default="simple",
                        help="callaway-santanna headline aggregation (default: simple)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="callaway-santanna multiplier-bootstrap draws (0 = analytic SEs)")
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="bootstrap seed")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(handler=run)


def _covariates(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _check_columns(args, data: pd.DataFrame, row_base: int) -> list[str]:
    """Every named column exists (else suggest the closest name) and numeric ones are numbers."""
    covariates = _covariates(args.covariates)
    roles = [("unit column", args.unit), ("time column", args.time), ("outcome column", args.outcome),
             ("cohort column", args.cohort), ("cluster column", args.cluster),
             ("weights column", args.weights)] + [("covariate column", c) for c in covariates]
    for role, col in roles:
        if col is not None and col not in data.columns:
            raise missing_column(col, data, role)
    for col in [args.time, args.outcome, args.cohort, args.weights, *covariates]:
        if col is not None:
            numeric_column(data, col, file=args.data, row_base=row_base)
    times = data[args.time]
    if times.isna().any():
        pos = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise InputError(problem("a period (number) on every row", file=args.data, row=pos + row_base,
                                 column=args.time, value=None))
    dup = data.duplicated([args.unit, args.time], keep="first")
    if dup.any():
        pos = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero(((data[args.unit] == data[args.unit].iloc[pos])
                                    & (times == times.iloc[pos])).to_numpy())[0])
        raise InputError(problem(
            f"one row per unit and period: this unit and period are also on row {first + row_base} "
            f"({int(dup.sum())} duplicate row(s) in all)", file=args.data, row=pos + row_base,
            column=args.unit, value=plain(data[args.unit].iloc[pos])), total=int(dup.sum()))
    n_units, n_times = data[args.unit].nunique(dropna=True), times.nunique(dropna=True)
    if n_units < 2 or n_times < 2:
        raise InputError(problem(
            f"a panel with at least two units and two periods (one row per unit and period); the file has "
            f"{len(data)} row(s), {n_units} unit(s) in column {args.unit!r} and {n_times} period(s) in column "
            f"{args.time!r}", file=args.data))
    return covariates


def _check_options(args) -> None:
    if args.bootstrap < 0:
        raise InputError(problem("a non-negative number of bootstrap draws", value=args.bootstrap))
    if args.estimator == "callaway-santanna":
        return
    changed = [f"--{k}" for k, default in CS_ONLY.items() if getattr(args, k) != default]
    if changed:
        raise InputError(f"{', '.join(changed)} only appl{'ies' if len(changed) == 1 else 'y'} to "
                         f"--estimator callaway-santanna (got --estimator {args.estimator})")


def _estimator(name: str):
    module, func = ESTIMATORS[name]
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        raise InputError(f"--estimator {name} is not available yet in this version "
                         f"({module}.{func} is missing)") from None


def _callaway_santanna(args, data, covariates):
    from evaluation.estimators.callaway_santanna import aggte, att_gt

    fit = att_gt(data, y=args.outcome, unit=args.unit, time=args.time, cohort=args.cohort,
                 control="notyet" if args.control == "not-yet" else "never",
                 covariates=covariates or None, method=args.method, cluster=args.cluster,
                 weights=args.weights, bootstrap=args.bootstrap, seed=args.seed)
    headline = aggte(fit, args.aggregate, bootstrap=args.bootstrap, seed=args.seed)
    dynamic = headline if args.aggregate == "dynamic" else aggte(
        fit, "dynamic", bootstrap=args.bootstrap, seed=args.seed)
    headline.event_time = dynamic.event_time
    return headline


def estimate(args, data: pd.DataFrame, covariates: list[str]) -> EstimatorResult:
    """Run the chosen estimator on the loaded panel (the library call behind the CLI)."""
    if args.estimator == "callaway-santanna":
        return _callaway_santanna(args, data, covariates)
    func = _estimator(args.estimator)
    return func(data, y=args.outcome, unit=args.unit, time=args.time, cohort=args.cohort,
                covariates=tuple(covariates), cluster=args.cluster, weights=args.weights)


def _rows(frame: pd.DataFrame | None, keys: list[str]) -> list[dict]:
    if frame is None or len(frame) == 0:
        return []
    cols = [c for c in [*keys, "estimate", "se", "ci_low", "ci_high", "p_value"] if c in frame.columns]
    out = frame[cols].rename(columns={"p_value": "p"})
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()}
            for rec in out.to_dict("records")]


def payload(res: EstimatorResult, args) -> dict:
    """The JSON document: headline, group-time and event-time rows, sample sizes, variance."""
    out = {
        "schema_version": RESULT_SCHEMA_VERSION, "kind": "estimate",
        "estimator": args.estimator,
        "description": res.estimator,
        "data": str(args.data),
        "overall": res.overall.to_dict() if res.overall else None,
        "group_time": _rows(res.group_time, ["g", "t"]),
        "event_time": _rows(res.event_time, ["e"]),
        "n_obs": int(res.n_obs),
        "n_units": int(res.n_units),
        "n_clusters": None if res.n_clusters is None else int(res.n_clusters),
        "variance": res.variance.to_dict(),
        "variance_convention": res.variance.describe(),
        "notes": list(res.notes),
    }
    if args.estimator == "callaway-santanna":
        out.update({"control": args.control, "method": args.method, "aggregate": args.aggregate,
                    "aggregation_rows": _rows(res.egt, ["egt"]),
                    "pretest": res.details.get("pretest"),
                    "bootstrap": {"draws": args.bootstrap, "seed": args.seed}})
    EstimateResult.model_validate(out)
    return out


def _summary(res: EstimatorResult, args) -> str:
    lines = [f"impact estimate: {args.estimator} on {args.data}", res.summary()]
    if args.estimator == "callaway-santanna":
        fmt = lambda v: f"{v:.6g}"  # noqa: E731
        lines.append("Group-time ATT(g,t):")
        lines.append(res.group_time.drop(columns=["post"]).to_string(index=False, float_format=fmt))
        if args.aggregate not in ("simple", "dynamic"):
            lines.append(f"By {'cohort' if args.aggregate == 'group' else 'calendar period'}:")
            lines.append(res.egt.to_string(index=False, float_format=fmt))
        pre = res.details.get("pretest")
        if pre:
            lines.append(f"Pre-test of parallel trends: W = {pre['W']:.4f} (df {pre['df']}), "
                         f"p = {pre['p_value']:.4g}")
    return "\n".join(lines)


def run(args) -> int:
    data, row_base = read_table(args.data)
    covariates = _check_columns(args, data, row_base)
    _check_options(args)
    try:
        res = estimate(args, data, covariates)
    except InputError as err:  # the estimators do not know the file: name it
        raise with_file(err, args.data, row_base) from None
    if args.json:
        emit_json(payload(res, args))
    else:
        print(_summary(res, args))
    return 0
