"""``impact data ...``: import, describe and synthesize the data in the store."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("data", help="import, validate, describe and synthesize data in the store")
    parser.set_defaults(handler=lambda args: parser.print_help())
