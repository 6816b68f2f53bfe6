"""Machine-readable output shared by every command (``--json``)."""

from __future__ import annotations

import json
import math
import sys
from datetime import date, datetime
from pathlib import Path

import numpy as np


def to_jsonable(obj):
    """Convert numpy/pandas scalars, NaN (-> null), dates and paths to JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if obj is not None and not isinstance(obj, (str, int, bool)):
        try:
            import pandas as pd

            if obj is pd.NA or obj is pd.NaT:
                return None
        except ImportError:  # pragma: no cover
            pass
    return obj


def dumps(obj) -> str:
    """Deterministic JSON text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def emit_json(obj, stream=None) -> None:
    (stream or sys.stdout).write(dumps(obj))


def add_executor_options(parser) -> None:
    """``--workers N`` (a local process pool) or ``--scheduler ADDRESS`` (a Dask cluster)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=_positive_int, metavar="N",
                       help="run independent tasks on N local processes (default: serially in this process)")
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help="run independent tasks on the Dask distributed cluster at ADDRESS "
                            "(for example tcp://10.0.0.5:8786); results are identical to a serial run")


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of workers, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 worker, got {value}")
    return value


def error_document(message: str, *, kind: str, exit_code: int, problems=(), total: int | None = None) -> dict:
    """What ``--json`` prints on stdout when a command fails.

    ``{"error": {"kind": "input" | "usage" | "internal", "exit_code": 2, "message": ...,
    "total": N, "problems": [{"file", "row", "column", "value", "expected", "message"}, ...]}}``:
    each problem as :meth:`evaluation.errors.Problem.to_dict` gives it ("value" only when the
    problem names one), plus "message", the line the text output prints for it."""
    items = []
    for p in problems:
        item = {"file": None, "row": None, "column": None, "value": None, **p.to_dict(), "message": p.render()}
        items.append(item)
    return {"error": {"kind": kind, "exit_code": exit_code, "message": message,
                      "total": len(items) if total is None else total, "problems": items}}


def emit_error_json(message: str, *, kind: str, exit_code: int, problems=(), total: int | None = None,
                    stream=None) -> None:
    emit_json(error_document(message, kind=kind, exit_code=exit_code, problems=problems, total=total), stream)
