"""The synthetic national panel: shape, determinism, and a truth that is real.

Bias and recovery checks use tolerances of several standard errors computed from
the data themselves (school-level differences, so clustered by school).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from evaluation.data.calendar import first_exposed_year
from evaluation.data.national import write_panel
from evaluation.data.synthetic import EFFECTS, OUTCOMES, generate, true_effect


def numeric(frame: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(frame[col], errors="coerce")


def memberships_with_types(panel) -> pd.DataFrame:
    m = panel.memberships.copy()
    m["urn"] = m["urn"].astype(int)
    m = m.join(panel.partnerships.set_index("partnership_id")[["type", "sponsor_led"]], on="partnership_id")
    m["g"] = first_exposed_year(m["joined"])
    return m


def outcome_table(panel, col: str) -> pd.Series:
    sy = panel.school_years
    return pd.Series(numeric(sy, col).to_numpy(), index=pd.MultiIndex.from_arrays(
        [sy["urn"].astype(int), sy["year"].astype(int)]))


@pytest.fixture(scope="module")
def panel():
    return generate(seed=21, n_schools=8000)


def test_shape_of_the_national_panel(panel):
    s, sy = panel.schools, panel.school_years
    assert len(s) == 8000 and s["urn"].is_unique
    assert s["region"].nunique() == 9
    assert set(s["phase"]) == {"primary", "secondary"}
    assert 0.12 < (s["phase"] == "secondary").mean() < 0.20
    assert sy["year"].astype(int).min() == 2010 and sy["year"].astype(int).max() == 2024
    assert set(panel.partnerships["type"]) == {t for t, _ in EFFECTS}
    assert (s["closed"] != "").sum() > 100 and (s["opened"] != "").sum() > 100  # closures and openings
    assert (panel.memberships["left"] != "").sum() > 500  # leavers, re-brokering, alliances closed 2021
    for code in ("SUPP", "LOWCOV", "NP"):
        assert (sy == code).to_numpy().sum() > 0, code
    # no school-year rows outside a school's open years
    opened = pd.to_datetime(s["opened"].replace("", None)).dt.year + 1
    first = sy.groupby("urn")["year"].min().astype(int)
    assert (first.loc[s.loc[opened.notna(), "urn"]].to_numpy() == opened.dropna().to_numpy()).all()


def test_full_size_has_152_local_authorities():
    from evaluation.data.synthetic import REGIONS

    assert sum(r[2] for r in REGIONS) == 152


def test_same_seed_gives_byte_identical_files(tmp_path):
    a, b = generate(seed=5, n_schools=600), generate(seed=5, n_schools=600)
    pa_, pb_ = write_panel(a, tmp_path / "a"), write_panel(b, tmp_path / "b")
    for name in pa_:
        assert pa_[name].read_bytes() == pb_[name].read_bytes(), name
    c = generate(seed=6, n_schools=600)
    assert not c.school_years.equals(a.school_years)


def test_cli_synthesize_twice_is_byte_identical(tmp_path, run_cli):
    outs = []
    for run in ("one", "two"):
        code, out, err = run_cli("data", "synthesize", "--seed", 3, "--schools", 700,
                                 "--store", tmp_path / run / "impact.duckdb", "--json")
        assert code == 0, err
        outs.append(json.loads(out))
    for name, path in outs[0]["files"].items():
        assert hashlib.sha256(open(path, "rb").read()).digest() == \
            hashlib.sha256(open(outs[1]["files"][name], "rb").read()).digest(), name
    infos = []
    for run in ("one", "two"):
        code, out, _ = run_cli("data", "info", "--store", tmp_path / run / "impact.duckdb", "--json")
        infos.append(json.loads(out))
    assert infos[0]["fingerprint"] == infos[1]["fingerprint"]
    rows = {t["table"]: t["rows"] for t in infos[0]["tables"]}
    assert rows["schools"] == 700 and rows["truth_effects"] > 0 and rows["missing_values"] > 0
    years = {t["table"]: (t["first_year"], t["last_year"]) for t in infos[0]["tables"]}
    assert years["school_years"] == (2010, 2024)


def test_cli_rejects_too_few_schools(run_cli, tmp_path):
    code, _, err = run_cli("data", "synthesize", "--schools", 10, "--store", tmp_path / "s.duckdb")
    assert code == 2 and "at least 200" in err


def test_truth_is_zero_before_joining_and_grows_with_membership(panel):
    t = panel.truth_effects
    assert (t["event_time"] >= 0).all()  # rows exist only while a member
    sponsor = t[(t["partnership_type"] == "multi_academy_trust") & (t["sponsor_led"] == True)]  # noqa: E712
    # each school's first sponsored trust (a second one is a move, with its own ramp): the effect
    # grows to its full size over four years; the full size differs by trust (size and distance
    # factors: tests/test_planted_heterogeneity.py), so the ramp is checked as a share of it
    first = sponsor[sponsor["cohort"] == sponsor.groupby("urn")["cohort"].transform("min")]
    wide = first.pivot_table(index=["urn", "partnership_id"], columns="event_time", values="effect_latent")
    wide = wide[[0, 1, 2, 3]].dropna()
    assert len(wide) > 50
    share = wide.div(wide[3], axis=0)
    ramp = true_effect(("multi_academy_trust", "sponsor"), np.arange(4))
    np.testing.assert_allclose(share.to_numpy(), np.tile(ramp / ramp[3], (len(share), 1)), rtol=1e-12)
    # effects differ by type: informal clusters have none, hard federations more than soft ones
    full = t[t["event_time"] >= 3].groupby("partnership_type")["effect_latent"].mean()
    assert full["informal_cluster"] == 0 and full["federation_hard"] > full["federation_soft"]


def test_truth_per_outcome_is_loading_times_latent_unless_clipped(panel):
    t = panel.truth_effects
    loadings = {o.name: o.loading for o in OUTCOMES}
    single = t.groupby(["urn", "year"])["partnership_id"].transform("size") == 1
    for name in ("ks4_attainment8", "ks2_reading_score", "ks2_rwm_expected_pct"):
        eff = t.loc[single, f"effect_{name}"]
        ok = eff.notna()
        diff = (eff[ok] - loadings[name] * t.loc[single & ok, "effect_latent"]).abs()
        assert (diff < 1e-9).mean() > 0.99, name  # only clipped values at 0/100 differ


def test_truth_cohorts_average_the_school_year_truth(panel):
    t, c = panel.truth_effects, panel.truth_cohorts
    row = c[(c["partnership_type"] == "federation_hard") & (c["outcome"] == "ks2_reading_score")].iloc[0]
    sel = t[(t["partnership_type"] == "federation_hard") & (t["cohort"] == row["cohort"])
            & (t["event_time"] == row["event_time"]) & (t["phase"] == row["phase"]) & (t["role"] == row["role"])]
    assert row["true_att"] == pytest.approx(sel["effect_ks2_reading_score"].mean(), abs=1e-12)
    assert row["n_schools"] == sel["urn"].nunique()


def _school_did(y: pd.Series, treated: pd.DataFrame, controls: set, pre: range, post: range):
    """Per treated school: mean(post) - mean(pre), minus the control schools' same change.

    Returns the estimate, its SE (independent schools: treated variance/n + control
    variance/n) and the treated schools' years used."""
    ctrl = y[y.index.get_level_values(0).isin(controls)].groupby(level=1).mean()
    wide = y.unstack()
    diffs, years_used = [], []
    for urn, g in zip(treated["urn"], treated["g"]):
        post_y = [g + k for k in post if g + k in wide.columns]
        pre_y = [g + k for k in pre if g + k in wide.columns]
        if urn not in wide.index or not post_y or not pre_y:
            continue
        row = wide.loc[urn]
        d = row[post_y].mean() - row[pre_y].mean() - (ctrl[post_y].mean() - ctrl[pre_y].mean())
        if np.isfinite(d):
            diffs.append(d)
            years_used.append((urn, post_y))
    diffs = np.array(diffs)
    ctrl_schools = wide.loc[wide.index.isin(controls)]
    # control sampling variance of the change, for a typical window
    g0 = int(np.median(treated["g"]))
    ch = ctrl_schools[[g0 + k for k in post]].mean(axis=1) - ctrl_schools[[g0 + k for k in pre]].mean(axis=1)
    se = np.sqrt(diffs.var(ddof=1) / len(diffs) + ch.var(ddof=1) / ch.notna().sum())
    return diffs.mean(), se, years_used


def test_simple_did_recovers_a_planted_homogeneous_effect():
    planted = 0.3  # latent SD units, immediate and constant
    p = generate(seed=8, n_schools=6000, effects={k: (planted, 1) for k in EFFECTS})
    m = memberships_with_types(p)
    phase = p.schools.set_index(p.schools["urn"].astype(int))["phase"]
    counts = m.groupby("urn").size()
    # partnership types whose selection is on permanent characteristics only (no dip)
    level_only = {"federation_hard", "federation_soft", "umbrella_trust", "collaborative_partnership",
                  "informal_cluster"}
    one = m[m["urn"].map(counts).eq(1) & m["type"].isin(level_only) & m["g"].between(2013, 2020)
            & m["urn"].map(phase).eq("primary") & (m["left"] == "")]
    never = set(phase.index[phase.eq("primary")]) - set(m["urn"])
    y = outcome_table(p, "ks2_reading_score")
    est, se, used = _school_did(y, one, never, pre=range(-2, 0), post=range(0, 2))
    t = p.truth_effects.set_index(["urn", "year"])["effect_ks2_reading_score"]
    truth = np.mean([t.loc[[(u, yr) for yr in yrs]].mean() for u, yrs in used])
    loading = next(o.loading for o in OUTCOMES if o.name == "ks2_reading_score")
    assert truth == pytest.approx(planted * loading, rel=1e-6)
    assert se < truth / 4  # the test has power
    assert abs(est - truth) < 4 * se, (est, truth, se)


def test_planted_selection_biases_naive_comparisons_in_the_documented_direction(panel):
    """Sponsor-led trusts take on weaker schools in a recent dip (see synthetic.py):
    a post-only comparison with never-joined schools understates the effect, and a
    before-after comparison overstates it (the dip recovers anyway)."""
    m = memberships_with_types(panel)
    phase = panel.schools.set_index(panel.schools["urn"].astype(int))["phase"]
    sponsored = m[(m["type"] == "multi_academy_trust") & (m["sponsor_led"] == "true")].drop_duplicates("urn")
    sponsored = sponsored[sponsored["urn"].map(phase).eq("secondary") & sponsored["g"].between(2013, 2018)]
    never = set(phase.index[phase.eq("secondary")]) - set(m["urn"])
    y = outcome_table(panel, "ks4_attainment8")
    wide = y.unstack()
    ctrl = wide.loc[wide.index.isin(never)].mean()
    truth = panel.truth_effects.set_index(["urn", "year", "partnership_id"])["effect_ks4_attainment8"]
    t_by = truth.groupby(level=[0, 1]).sum()
    post_only, before_after, truth_post, truth_e0 = [], [], [], []
    for r in sponsored.itertuples():
        yrs = [r.g + k for k in range(3) if r.g + k <= 2024]
        post_only.append(np.nanmean([wide.at[r.urn, yy] - ctrl[yy] for yy in yrs]))
        truth_post.append(np.mean([t_by.get((r.urn, yy), 0.0) for yy in yrs]))
        before_after.append(wide.at[r.urn, r.g] - wide.at[r.urn, r.g - 1] - (ctrl[r.g] - ctrl[r.g - 1]))
        truth_e0.append(t_by.get((r.urn, r.g), 0.0) - t_by.get((r.urn, r.g - 1), 0.0))
    post_only, before_after = np.array(post_only), np.array(before_after)
    ok = np.isfinite(post_only)
    se_post = post_only[ok].std(ddof=1) / np.sqrt(ok.sum())
    assert len(sponsored) > 80
    assert np.mean(truth_post) > 0
    assert post_only[ok].mean() < np.mean(truth_post) - 4 * se_post  # understated (here: wrong sign)
    ok = np.isfinite(before_after)
    se_ba = before_after[ok].std(ddof=1) / np.sqrt(ok.sum())
    assert before_after[ok].mean() > np.mean(np.array(truth_e0)[ok]) + 3 * se_ba  # overstated


@pytest.mark.slow
def test_default_size_generation():
    p = generate(seed=2024)
    assert len(p.schools) == 20_000
    assert 250_000 < len(p.school_years) < 300_000
    counts = p.partnerships["type"].value_counts()
    assert counts.min() > 20
