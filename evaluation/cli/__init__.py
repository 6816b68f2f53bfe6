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
import warnings

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


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one plain line (no source path or code line; IMPACT_DEBUG=1 shows those)."""
    print(f"impact: warning: {message}", file=sys.stderr if file is None else file)


class _Parser(argparse.ArgumentParser):
    """argparse, remembering the last usage error so ``main`` can repeat it as JSON."""

    last_error: str | None = None

    def error(self, message):
        _Parser.last_error = f"{self.prog}: error: {message}"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    """Run ``impact``. With ``--json`` every failure is also a JSON document on stdout
    (:func:`evaluation.cli.output.error_document`) with the same exit code; the text
    stays on stderr."""
    from evaluation.cli.output import emit_error_json

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    _Parser.last_error = None
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        # usage errors exit 2 after argparse prints the usage on stderr; --help/--version exit 0
        if stop.code == 2 and "--json" in argv and _Parser.last_error:
            emit_error_json(_Parser.last_error, kind="usage", exit_code=2)
        raise
    as_json = bool(getattr(args, "json", False))
    try:
        with warnings.catch_warnings():
            if not os.environ.get("IMPACT_DEBUG"):
                warnings.showwarning = _show_warning
            code = args.handler(args)
        return 0 if code is None else int(code)
    except InputError as err:
        print(f"impact: error: {err.render()}", file=sys.stderr)
        if as_json:
            emit_error_json(err.summary or err.render(), kind="input", exit_code=2, problems=err.problems,
                            total=err.total)
        return 2
    except KeyboardInterrupt:
        print("impact: interrupted; nothing was half-written", file=sys.stderr)
        return 130
    except Exception as err:  # internal failure: say so plainly
        if os.environ.get("IMPACT_DEBUG"):
            traceback.print_exc()
        message = (f"internal error ({type(err).__name__}: {err}). "
                   "This is a bug; rerun with IMPACT_DEBUG=1 for the traceback.")
        print(f"impact: {message}", file=sys.stderr)
        if as_json:
            emit_error_json(message, kind="internal", exit_code=1)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
