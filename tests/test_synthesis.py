"""Random-effects meta-analysis: checked against its defining equations."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.synthesis import forest_plot, meta_analysis
from tests.test_effects import make_result


def results_with(estimates, ses, types=None):
    out = []
    for i, (e, s) in enumerate(zip(estimates, ses)):
        r = make_result(estimate=e, se=s, sd=1.0, treated=10_000, comparison=10_000, mdes=0.1)
        t = (types or ["multi_academy_trust"] * len(estimates))[i]
        r["study"] = {"id": f"s{i}", "title": f"Study {i}", "question": "?",
                      "definition": {"cohort": {"partnership_types": [t]}}}
        out.append(r)
    return out


def test_homogeneous_studies_pool_to_the_fixed_effect_mean():
    ses = np.array([0.05, 0.1, 0.08])
    m = meta_analysis(results_with([0.2, 0.2, 0.2], ses))
    j = 1 - 3 / (4 * 20_000 - 9)
    w = 1 / (j * ses) ** 2
    assert m.tau2 == 0 and m.i2 == 0
    assert m.pooled == pytest.approx(0.2 * j, rel=1e-12)
    assert m.se == pytest.approx(np.sqrt(1 / w.sum()), rel=1e-10)


def test_paule_mandel_solves_its_estimating_equation():
    g = np.array([0.05, 0.35, 0.1, 0.6])
    ses = np.array([0.05, 0.06, 0.04, 0.08])
    m = meta_analysis(results_with(g, ses))
    j = 1 - 3 / (4 * 20_000 - 9)
    y, v = j * g, (j * ses) ** 2
    w = 1 / (v + m.tau2)
    mu = (w * y).sum() / w.sum()
    assert m.tau2 > 0
    assert (w * (y - mu) ** 2).sum() == pytest.approx(len(g) - 1, rel=1e-6)  # generalised Q = k - 1
    assert m.pooled == pytest.approx(mu, rel=1e-8)
    wf = 1 / v
    q = (wf * (y - (wf * y).sum() / wf.sum()) ** 2).sum()
    assert m.q == pytest.approx(q, rel=1e-10) and m.i2 == pytest.approx((q - 3) / q, rel=1e-10)
    assert m.table["weight"].sum() == pytest.approx(1.0)


def test_needs_two_studies():
    with pytest.raises(ValueError):
        meta_analysis(results_with([0.1], [0.1]))


def test_forest_plot(tmp_path):
    m = meta_analysis(results_with([0.1, 0.3], [0.05, 0.1], ["multi_academy_trust", "informal_cluster"]))
    assert set(m.table["formal"]) == {True, False}
    path = forest_plot(m, tmp_path / "forest.png")
    assert path.stat().st_size > 5000
