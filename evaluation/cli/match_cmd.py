"""``impact match DATA ...``: match treated units to comparison units and report balance.

Reads a CSV or Parquet file with one row per unit, runs
:func:`evaluation.matching.match` (MatchIt's nearest-neighbour matching) and prints a
balance table like MatchIt's ``summary()``, or with ``--json`` the pairs, sample
sizes and balance before/after matching. ``--out FILE`` writes the matched units
with ``distance``, ``weights`` and ``subclass`` columns (MatchIt's ``match_data()``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from evaluation.cli.output import emit_json
from evaluation.data.csv_input import note_decimal_commas, read_table_file
from evaluation.errors import InputError, problem
from evaluation.matching import DISCARD_OPTIONS, DISTANCES, match

READABLE = (".csv", ".parquet", ".pq")


def register(sub) -> None:
    parser = sub.add_parser(
        "match", help="match treated units to comparison units (MatchIt nearest neighbour) and show balance",
        description="Greedy nearest-neighbour matching with MatchIt's conventions: propensity score "
        "from a logistic regression (largest score first) or Mahalanobis distance, k:1, "
        "with or without replacement, caliper in SDs of the propensity score, exact matching.")
    parser.add_argument("data", metavar="DATA", help="CSV or Parquet file, one row per unit")
    parser.add_argument("--treatment", required=True, metavar="COL", help="0/1 column, 1 = treated")
    parser.add_argument("--covariates", required=True, metavar="A,B,C",
                        help="comma-separated columns to match on (text columns become one dummy per level)")
    parser.add_argument("--id", metavar="COL", help="unit identifier column (default: the row number)")
    parser.add_argument("--exact", metavar="COL[,COL]", help="column(s) to match exactly on")
    parser.add_argument("--distance", choices=DISTANCES, default="logit",
                        help="logit propensity score (default) or mahalanobis")
    parser.add_argument("--ratio", type=int, default=1, metavar="K", help="controls per treated unit (default 1)")
    parser.add_argument("--caliper", type=float, metavar="C",
                        help="caliper in standard deviations of the propensity score")
    parser.add_argument("--replace", action="store_true", help="match with replacement")
    parser.add_argument("--discard", choices=DISCARD_OPTIONS, default="none",
                        help="drop units outside common support of the propensity score")
    parser.add_argument("--json", action="store_true", help="print JSON (pairs, counts, balance)")
    parser.add_argument("--out", metavar="FILE",
                        help="write the matched units with distance, weights and subclass (CSV or Parquet)")
    parser.set_defaults(handler=run)


def _split(text: str | None) -> list[str]:
    if text is None:
        return []
    return [part.strip() for part in text.split(",") if part.strip()]


def read_table(path: str) -> tuple[pd.DataFrame, list[int]]:
    """Read DATA; also return the row number a person sees for each record (CSV: the
    line number, header = 1; Parquet: the 1-based record number)."""
    data, first, dialect = read_table_file(path)
    note_decimal_commas(path, dialect)
    return data, list(range(first, first + len(data)))


def _check_out(path: str | None) -> None:
    if path is None:
        return
    p = Path(path)
    if p.suffix.lower() not in READABLE:
        raise InputError(problem("--out must end in .csv or .parquet", file=path))
    if not p.parent.exists():
        raise InputError(problem("the folder for --out does not exist", file=path))


def _write_atomic(frame: pd.DataFrame, path: str) -> None:
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    os.close(fd)
    try:
        if p.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run(args) -> int:
    _check_out(args.out)
    if args.ratio < 1:
        raise InputError(problem("--ratio must be 1 or more", value=args.ratio, column=None))
    data, rows = read_table(args.data)
    covariates = _split(args.covariates)
    if not covariates:
        raise InputError(problem("--covariates needs at least one column name", file=args.data))
    result = match(data, args.treatment, covariates, id=args.id, exact=_split(args.exact) or None,
                   distance=args.distance, ratio=args.ratio, replace=args.replace,
                   caliper=args.caliper, discard=args.discard, source=args.data, row_numbers=rows)
    if args.out:
        _write_atomic(result.matched_data(data), args.out)
    if args.json:
        payload = result.to_dict()
        payload["data"] = args.data
        payload["out"] = args.out
        emit_json(payload)
    else:
        sys.stdout.write(_header(args, result))
        sys.stdout.write(result.summary())
        if args.out:
            sys.stdout.write(f"\nMatched data ({int(result.matched.sum())} rows) written to {args.out}\n")
    return 0


def _header(args, result) -> str:
    how = f"{result.ratio}:1 nearest neighbour matching {'with' if result.replace else 'without'} replacement"
    dist = ("propensity score (logistic regression)" if result.distance_method == "logit"
            else "Mahalanobis distance")
    lines = [f"Data: {args.data}", f"Method: {how}", f"Distance: {dist}"]
    if result.caliper_width:
        lines.append("Caliper: " + ", ".join(
            f"{'<distance>' if k == 'distance' else k} {result.caliper[k]:g} SD ({w:.4g})"
            for k, w in result.caliper_width.items()))
    if result.exact:
        lines.append("Exact: " + ", ".join(result.exact))
    support = result.common_support()
    if support is not None:
        lines.append(f"Treated units outside the controls' propensity-score range: {support['treated_outside']}")
    return "\n".join(lines) + "\n"
