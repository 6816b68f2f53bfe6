"""Every subcommand describes itself: `impact X --help` has a description, not just usage."""

from __future__ import annotations

import argparse

import pytest

from evaluation.cli import build_parser


def _leaves(parser: argparse.ArgumentParser, prefix=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, prefix + (name,))


LEAVES = list(_leaves(build_parser()))


@pytest.mark.parametrize("command,parser", LEAVES, ids=[" ".join(c) for c, _ in LEAVES])
def test_every_subcommand_has_a_description(command, parser):
    assert parser.description and len(parser.description) > 40, " ".join(command)
