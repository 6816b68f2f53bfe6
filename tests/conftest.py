"""Shared fixtures. Tests run the code the way a user does: files in, CLI or library out."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny"


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    """A writable copy of the tiny valid data set (schools, partnerships, memberships, school_years)."""
    dest = tmp_path / "tiny"
    shutil.copytree(TINY, dest)
    return dest


@pytest.fixture
def run_cli(capsys):
    """Run ``impact ARGS...`` in-process; returns (exit code, stdout, stderr)."""
    from evaluation.cli import main

    def run(*args: str):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
