"""The example studies' numbers do not move unless a commit means them to (see tests/golden.py).

Tolerance: relative 1e-9 (absolute 1e-12): the same code on the same data gives the same bits
here (one BLAS thread, ``evaluation.executors``); the slack only absorbs BLAS reordering on
another machine, far below any printed digit. HonestDiD's FLCI is the argmin of a bounded
scalar search stopped at ``xatol = 1e-7 * h0`` (``diagnostics/honest_did.py``), so its
numbers are only defined to that search's precision: relative 1e-5 (absolute 1e-6) there."""

from __future__ import annotations

import json

import pytest

from tests.golden import GOLDEN, example_results, numbers


def tolerance(path: str) -> dict:
    if path.startswith("diagnostics.honest_did.smoothness"):
        return {"rel": 1e-5, "abs": 1e-6}
    return {"rel": 1e-9, "abs": 1e-12}


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
                 else got[k] != pytest.approx(expected[k], **tolerance(k)))]
    assert not moved, f"{len(moved)} numbers moved, e.g. {moved[:5]}"
