"""The example studies' numbers do not move unless a commit means them to (see tests/golden.py).

Tolerance: relative 1e-9 (absolute 1e-12): the same code on the same data gives the same bits
here; the slack only absorbs BLAS reordering on another machine, far below any printed digit."""

from __future__ import annotations

import json

import pytest

from tests.golden import GOLDEN, example_results, numbers


@pytest.fixture(scope="module")
def results(small_store):
    return example_results(small_store)


@pytest.mark.parametrize("study_id", sorted(p.stem for p in GOLDEN.glob("*.json")))
def test_example_study_numbers_are_unchanged(results, study_id):
    expected = json.loads((GOLDEN / f"{study_id}.json").read_text())
    got = numbers(results[study_id])
    assert sorted(got) == sorted(expected), (
        f"keys differ: new {sorted(set(got) - set(expected))[:5]}, gone {sorted(set(expected) - set(got))[:5]}")
    moved = [(k, expected[k], got[k]) for k in expected
             if (got[k] != expected[k] if isinstance(expected[k], str)  # 'nan' / 'inf' stored as text
                 else got[k] != pytest.approx(expected[k], rel=1e-9, abs=1e-12))]
    assert not moved, f"{len(moved)} numbers moved, e.g. {moved[:5]}"
