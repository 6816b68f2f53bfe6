"""``impact regress DATA --formula "y ~ x1 + x2 | fe1 + fe2"``: fixed-effects OLS (feols)."""

from __future__ import annotations

import re
import pandas as pd

from evaluation.cli.output import emit_json
from evaluation.data.csv_input import note_decimal_commas, read_table_file
from evaluation.errors import InputError, with_file
from evaluation.estimators.fixed_effects import (
    VCOV_TYPES,
    feols,
    missing_column,
    numeric_column,
    parse_formula,
)

def register(sub) -> None:
    parser = sub.add_parser(
        "regress",
        help="OLS with absorbed fixed effects (fixest syntax) and clustered standard errors",
        description="Estimate y ~ x1 + x2 | fe1 + fe2 by OLS, absorbing the fixed effects after "
        "'|'. Standard errors: --vcov iid (usual OLS), hetero (HC1), CR1 (clustered, "
        "G/(G-1)*(N-1)/(N-K), fixest/Stata default; the default with --cluster), CR0, or "
        "panelols (linearmodels PanelOLS clustered convention).",
    )
    parser.add_argument("data", metavar="DATA", help="CSV or Parquet file with one row per observation")
    parser.add_argument("--formula", required=True,
                        help='model, e.g. "y ~ x1 + x2 | unit + year" (a:b products, C(g), log(x))')
    parser.add_argument("--cluster", metavar="COL", help="cluster standard errors by this column")
    parser.add_argument("--weights", metavar="COL", help="analytic (regression) weights column")
    parser.add_argument("--vcov", choices=VCOV_TYPES,
                        help="variance estimator (default: CR1 with --cluster, else iid)")
    parser.add_argument("--drop-singletons", action="store_true",
                        help="drop singleton fixed-effect groups (reghdfe); fixest keeps them (default)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(handler=run)


def read_table(path: str) -> tuple[pd.DataFrame, int]:
    """Load a CSV or Parquet file; returns the frame and the row number of its first record.

    CSV files may be UTF-8, Windows-1252 or UTF-16 and comma, semicolon or tab separated
    (:mod:`evaluation.data.csv_input`); empty and header-only files are bad input."""
    data, first, dialect = read_table_file(path)
    note_decimal_commas(path, dialect)
    return data, first


def _model_columns(formula: str, data: pd.DataFrame) -> list[str]:
    parsed = parse_formula(formula)
    cols = set(map(str, data.columns))
    out = []
    for expr in [parsed.lhs, *parsed.rhs]:
        if re.search(r"\bC\(", expr):  # categorical: need not be numeric
            continue
        for name in re.findall(r"[A-Za-z_.][A-Za-z0-9_.]*", expr):
            if name in cols and name not in out:
                out.append(name)
    return out


def run(args) -> int:
    data, row_base = read_table(args.data)
    for col in _model_columns(args.formula, data) + ([args.weights] if args.weights else []):
        if col in data.columns:
            numeric_column(data, col, file=args.data, row_base=row_base)
    for col in (args.cluster,):
        if col and col not in data.columns:
            raise missing_column(col, data, "cluster column")
    try:
        res = feols(data, args.formula, cluster=args.cluster, weights=args.weights, vcov=args.vcov,
                    drop_singletons=args.drop_singletons)
    except InputError as err:  # the estimator does not know the file: name it
        raise with_file(err, args.data, row_base) from None
    if args.json:
        out = res.to_dict()
        out["formula"] = args.formula
        out["data"] = str(args.data)
        out["variance_convention"] = res.variance.describe()
        emit_json(out)
    else:
        print(f"feols: {args.formula}")
        print(res.summary())
    return 0
