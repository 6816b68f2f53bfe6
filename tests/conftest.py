"""Shared fixtures. Tests run the code the way a user does: files in, CLI or library out."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny"


@pytest.fixture(autouse=True)
def _no_default_store(monkeypatch, tmp_path_factory):
    """Every test names its store: the default (``$IMPACT_STORE`` or ``data/impact.duckdb``) points at
    an empty place, so a store the README's demo left in the checkout cannot leak into a test."""
    from evaluation.data.store import STORE_ENV

    monkeypatch.setenv(STORE_ENV, str(tmp_path_factory.getbasetemp() / "no-default-store" / "impact.duckdb"))


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


@pytest.fixture(scope="session")
def small_store(tmp_path_factory):
    """A store holding a small synthetic national panel (3,000 schools, seed 7)."""
    from evaluation.data.national import synthesize
    from evaluation.data.store import Store

    root = tmp_path_factory.mktemp("small_store")
    store = Store(root / "impact.duckdb")
    synthesize(store, seed=7, n_schools=3000, out_dir=root / "synthetic", progress=lambda m: None, pupils=True)
    return store


@pytest.fixture(scope="session")
def national_store(tmp_path_factory):
    """The bundled national panel (20,000 schools, seed 2024), for slow tests."""
    from evaluation.data.national import synthesize
    from evaluation.data.store import Store

    root = tmp_path_factory.mktemp("national")
    store = Store(root / "impact.duckdb")
    synthesize(store, seed=2024, out_dir=root / "synthetic", progress=lambda m: None, pupils=True)
    return store
