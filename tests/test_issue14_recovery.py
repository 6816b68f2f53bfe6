"""Issue 14 end to end on the national synthetic panel (slow: 20,000 schools): the example studies
recover what the generator planted. Tolerances are normal quantiles of the estimators' own
standard errors (3.29: two-sided 99.9%), so a failure means a bias of more than about three
standard errors, not bad luck; for a difference of two subgroups the variance bound
se_a^2 + se_b^2 is used (the subgroups share comparison schools, a positive covariance, so the
true variance of the difference is smaller and the bound is conservative)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parent.parent
Z = 3.29

pytestmark = pytest.mark.slow


def _run(store, name):
    from evaluation.data.panels import load_study_data
    from evaluation.pipeline import run_study
    from evaluation.study import load_study

    study = load_study(ROOT / "studies" / f"{name}.toml")
    return run_study(study, load_study_data(store, study)).result


def test_effects_by_trust_size_and_distance_recover_the_planted_differences(national_store):
    r = _run(national_store, "mat_sponsored_secondary_ks4_by_trust")
    het = r["heterogeneity"]
    for ch in het["characteristics"]:
        rows = [s for s in ch["subgroups"] if s["estimate"] is not None]
        assert len(rows) == 3, ch["name"]
        lo, hi = rows[0], rows[-1]
        planted = hi["planted"] - lo["planted"]
        assert abs(planted) > 1.0  # the generator planted a difference of more than a point of Attainment 8
        found = hi["estimate"] - lo["estimate"]
        assert abs(found - planted) <= Z * np.hypot(hi["se"], lo["se"]), (ch["name"], found, planted)
        # the permutation test sees it (planted differences of 4-5 standard errors)
        assert ch["test"]["p_value"] < het["alpha"], ch["name"]
        assert ch["test"]["unit"] == "block"  # trust size and distance vary within trusts


def test_the_rebrokerage_study_recovers_the_planted_effect_of_moving(national_store):
    r = _run(national_store, "mat_rebrokered_secondary_ks4")
    planted = r["synthetic_truth"]["overall"]
    assert planted > 0.3  # moving helps (after a first year of disruption)
    for name in ("callaway_santanna", "chaisemartin_dhaultfoeuille"):
        e = r["estimates"][name]
        assert abs(e["estimate"] - planted) <= Z * e["se"], (name, e["estimate"], planted)
    assert r["counts"]["treated_analysed"] >= 40


def test_while_members_study_recovers_the_effect_per_year_in_a_federation(national_store):
    r = _run(national_store, "federation_primary_ks2_while_members")
    e = r["estimates"]["chaisemartin_dhaultfoeuille"]
    planted = r["synthetic_truth"]["overall"]
    assert abs(e["estimate"] - planted) <= Z * e["se"], (e["estimate"], planted)
