"""The ``impact`` command.

Each command group lives in its own module with a ``register(subparsers)``
function; add the module to ``COMMAND_MODULES`` to expose it. Exit codes:
0 success, 2 bad input (the message names file, row, column and value),
1 internal failure (set IMPACT_DEBUG=1 to see the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from evaluation import __version__
from evaluation.errors import InputError

COMMAND_MODULES = [
    "evaluation.cli.data_cmd",
    "evaluation.cli.study_cmd",
    "evaluation.cli.self_eval_cmd",
    "evaluation.cli.match_cmd",
    "evaluation.cli.regress_cmd",
    "evaluation.cli.estimate_cmd",
    "evaluation.cli.book_cmd",
    "evaluation.cli.power_cmd",
    "evaluation.cli.multiverse_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="impact",
        description="Measure whether school partnerships work: import and validate data, "
        "match comparison schools, estimate effects, publish the book.",
    )
    parser.add_argument("--version", action="version", version=f"impact {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
        return 0 if code is None else int(code)
    except InputError as err:
        print(f"impact: error: {err.render()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("impact: interrupted; nothing was half-written", file=sys.stderr)
        return 130
    except Exception as err:  # internal failure: say so plainly
        if os.environ.get("IMPACT_DEBUG"):
            traceback.print_exc()
        print(f"impact: internal error ({type(err).__name__}: {err}). "
              "This is a bug; rerun with IMPACT_DEBUG=1 for the traceback.", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
