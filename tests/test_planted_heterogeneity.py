"""The synthetic generator's planted heterogeneity and re-brokerage (issue 14), checked from the
published tables as a study sees them: the factor each trust membership's effect carries is the
one its trust size and distance bins give (``evaluation.data.partnership_attributes``, the same
function the heterogeneity stage uses), and ``truth_moves`` is the effect of moving rather than
staying. Exact identities of the generator's model, so the tolerances are rounding only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.data import synthetic as S
from evaluation.data.calendar import first_exposed_year
from evaluation.data.partnership_attributes import DISTANCE_BINS_KM, TRUST_SIZE_BINS, bin_index, partner_context


@pytest.fixture(scope="module")
def panel():
    return S.generate(seed=11, n_schools=3000)


@pytest.fixture(scope="module")
def published(panel):
    m = panel.memberships.copy()
    m["urn"] = m["urn"].astype(np.int64)
    m["joined"] = pd.to_datetime(m["joined"])
    m["left"] = pd.to_datetime(m["left"].replace("", None))
    m["g"] = first_exposed_year(m["joined"])
    schools = panel.schools.assign(urn=panel.schools["urn"].astype(np.int64)).set_index("urn")
    coords = schools[["easting", "northing"]].astype(float)
    p = panel.partnerships.set_index("partnership_id")
    m["type"] = m["partnership_id"].map(p["type"])
    m["sponsor_led"] = m["partnership_id"].map(p["sponsor_led"]) == "true"
    # a move: the school left another trust the day before (trust memberships first, in date order)
    m["is_mat"] = m["type"] == "multi_academy_trust"
    m = m.sort_values(["is_mat", "urn", "joined"], ascending=[False, True, True], kind="stable").reset_index(drop=True)
    prev_left = m.groupby(["is_mat", "urn"])["left"].shift()
    m["moved"] = (m["joined"] - prev_left).dt.days.eq(1) & m["is_mat"]
    return m, coords


def _factor(m, coords, rows) -> np.ndarray:
    size, dist = partner_context(m, rows, coords)
    sf = np.array([S.SIZE_FACTORS[bin_index(v, TRUST_SIZE_BINS)] for v in size])
    df = np.array([1.0 if (k := bin_index(v, DISTANCE_BINS_KM)) is None else S.DISTANCE_FACTORS[k] for v in dist])
    return sf * df


def test_a_trust_memberships_effect_carries_its_size_and_distance_factors(panel, published):
    m, coords = published
    mat = m[(m["type"] == "multi_academy_trust") & ~m["moved"]].copy()
    mat["factor"] = _factor(m, coords, mat)
    t = panel.truth_effects.assign(urn=panel.truth_effects["urn"].astype(np.int64))
    t = t[(t["partnership_type"] == "multi_academy_trust") & (t["event_time"] >= 3)]  # both ramps done
    t = t.merge(mat[["urn", "partnership_id", "g", "factor", "sponsor_led"]],
                left_on=["urn", "partnership_id", "cohort"], right_on=["urn", "partnership_id", "g"])
    assert len(t) > 1000 and t["factor"].nunique() >= 6  # every bin combination that occurs
    full = np.where(t["sponsor_led_y"], S.EFFECTS[("multi_academy_trust", "sponsor")][0],
                    S.EFFECTS[("multi_academy_trust", "converter")][0])
    np.testing.assert_allclose(t["effect_latent"], full * t["factor"], rtol=0, atol=1e-12)
    # the factors differ: a large, close-knit trust's effect is 1.8 x 1.5 = 2.7 times the base
    assert t["factor"].max() == pytest.approx(max(S.SIZE_FACTORS) * max(S.DISTANCE_FACTORS))


def test_truth_moves_is_the_effect_of_moving_rather_than_staying(panel, published):
    m, coords = published
    moved = m[m["moved"]]
    assert len(moved) >= 20
    old = m.loc[moved.index - 1]  # the membership each move left (sorted by school and date)
    assert (old["urn"].to_numpy() == moved["urn"].to_numpy()).all()
    assert (old["partnership_id"].to_numpy() != moved["partnership_id"].to_numpy()).all()
    # the school had been in its trust for at least REBROKER_MIN_YEARS years
    assert (moved["g"].to_numpy() - old["g"].to_numpy() >= S.REBROKER_MIN_YEARS).all()
    factor_old = pd.Series(_factor(m, coords, old), index=moved["urn"].to_numpy())
    tm = panel.truth_moves.assign(urn=panel.truth_moves["urn"].astype(np.int64))
    first = moved.drop_duplicates("urn")
    assert set(tm["urn"]) <= set(first["urn"]) and tm.groupby("urn")["cohort"].first().isin(first["g"]).all()
    full_new, ramp_new = S.EFFECTS[("multi_academy_trust", "rebrokered")]
    stay = S.EFFECTS[("multi_academy_trust", "sponsor")][0] * tm["urn"].map(factor_old[~factor_old.index.duplicated()])
    # the trust the school is in that year (a second move restarts the new trust's ramp)
    spells = moved[["urn", "g"]].rename(columns={"g": "year"}).assign(since=moved["g"]).sort_values("year")
    current = pd.merge_asof(tm.reset_index().sort_values("year"), spells, on="year", by="urn").set_index("index")
    e_new = tm["year"] - current.loc[tm.index, "since"]
    assert (e_new <= tm["event_time"]).all() and (e_new < tm["event_time"]).sum() < 0.05 * len(tm)
    want = full_new * np.minimum(e_new + 1, ramp_new) / ramp_new - stay
    np.testing.assert_allclose(tm["effect_latent"], want, rtol=0, atol=1e-12)
    # on an outcome, the same latent effect times the loading, wherever nothing was clipped
    a8 = tm.dropna(subset=["effect_ks4_attainment8"])
    loading = next(o.loading for o in S.OUTCOMES if o.name == "ks4_attainment8")
    close = np.isclose(a8["effect_ks4_attainment8"], loading * a8["effect_latent"], rtol=0, atol=1e-9)
    assert close.mean() > 0.99
