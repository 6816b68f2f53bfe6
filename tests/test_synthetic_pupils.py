"""The synthetic pupil panel (evaluation.data.synthetic_pupils) and the calibration of the school panel.

Tolerances come from sampling error, 3.29 standard errors (two-sided 0.1%): an SD estimated over
n units has SE ~ SD / sqrt(2 (n - 1)) (normal data); a mean has SE SD / sqrt(n).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from evaluation.data.synthetic import EFFECTS, OUTCOMES, generate
from evaluation.data.synthetic_pupils import (
    DISADVANTAGED_RATIO,
    STAGES,
    pupils_frame,
    write_pupils,
)

Z = 3.29
OUT = {o.name: o for o in OUTCOMES}
KS_OUTCOMES = {"KS4": ["ks4_attainment8", "ks4_progress8"],
               "KS2": ["ks2_reading_score", "ks2_maths_score", "ks2_reading_progress", "ks2_maths_progress"]}


def _numeric(panel) -> pd.DataFrame:
    sy = panel.school_years
    out = pd.DataFrame({c: pd.to_numeric(sy[c], errors="coerce") for c in sy.columns})
    return out.astype({"urn": "int64", "year": "int64"})


# ----------------------------------------------------------------------------- calibration (Task A)
@pytest.mark.slow
def test_2019_panel_matches_the_published_figures():
    """2018/19 KS4 and KS2 tables, state-funded mainstream schools: among the 3,196 secondaries with
    a Progress 8, Attainment 8 mean 47.0 and between-school SD 9.2, Progress 8 SD 0.50; KS2 reading
    and maths progress between-school SD 2.4 (about 15,000 primaries)."""
    y = _numeric(generate(seed=2024))
    y = y[y["year"] == 2019]
    sec = y[y["ks4_progress8"].notna()]
    pri = y[y["ks2_reading_progress"].notna()]
    assert 2800 < len(sec) < 3600 and 14000 < len(pri) < 17500

    def sd_tol(sd, n):
        return Z * sd / np.sqrt(2 * (n - 1))

    a8 = sec["ks4_attainment8"].dropna()
    assert abs(a8.mean() - 47.0) < Z * 9.2 / np.sqrt(len(a8))
    assert abs(a8.std() - 9.2) < sd_tol(9.2, len(a8))
    assert abs(sec["ks4_progress8"].std() - 0.50) < sd_tol(0.50, len(sec))
    for name in ("ks2_reading_progress", "ks2_maths_progress"):
        v = pri[name].dropna()
        assert abs(v.std() - 2.4) < sd_tol(2.4, len(v)), name


def test_school_noise_is_the_within_school_pupil_sd():
    for o in OUTCOMES:
        if not o.percent:
            assert 0 < o.within_sd < o.pupil_sd
    assert OUT["ks4_attainment8"].within_sd == pytest.approx(np.sqrt(19.0**2 - 8.66**2 * (1 + 0.35**2)))


# ----------------------------------------------------------------------------- the pupil panel (Task B)
@pytest.fixture(scope="module")
def small():
    panel = generate(seed=11, n_schools=300)
    pupils, truth = pupils_frame(panel, seed=11)
    return panel, pupils, truth


def test_one_row_per_pupil_of_every_published_cohort(small):
    panel, pupils, _ = small
    y = _numeric(panel)
    assert pupils["pupil_id"].is_unique
    for ks, outcomes in KS_OUTCOMES.items():
        cohort = "ks4_eligible_pupils" if ks == "KS4" else "ks2_eligible_pupils"
        pub = y[(y[cohort] >= 1) & y[outcomes].notna().any(axis=1)].set_index(["urn", "year"])[cohort]
        got = pupils[pupils["key_stage"] == ks].groupby(["urn", "year"]).size()
        pd.testing.assert_series_equal(got.sort_index(), pub.sort_index().astype("int64"), check_names=False)
        other = [c for cs in KS_OUTCOMES.values() for c in cs if c not in outcomes]
        assert pupils.loc[pupils["key_stage"] == ks, other].isna().all().all()
    assert pupils["month_of_birth"].between(1, 12).all()
    assert (pupils["first_year_on_roll"] <= pupils["year"]).all()
    start = np.where(pupils["key_stage"] == "KS4", pupils["year"] - 4, pupils["year"] - 6)
    assert (pupils["first_year_on_roll"] >= start).all()
    assert 0.7 < (pupils["first_year_on_roll"] == start).mean() < 0.95
    assert not (pupils["fsm"] & ~pupils["disadvantaged"]).any()


def test_school_means_equal_the_published_values(small):
    """Exactly (floating point): pupils are drawn around the published, rounded, school value."""
    panel, pupils, _ = small
    y = _numeric(panel).set_index(["urn", "year"])
    for ks, outcomes in KS_OUTCOMES.items():
        p = pupils[pupils["key_stage"] == ks]
        means = p.groupby(["urn", "year"])[outcomes].mean()
        pub = y.loc[means.index, outcomes]
        assert (means.isna() == pub.isna()).all().all()
        assert np.nanmax(np.abs(means.to_numpy() - pub.to_numpy())) < 1e-9
        n = p.groupby(["urn", "year"]).size()
        dis = p.groupby(["urn", "year"])["disadvantaged"].sum()
        if ks == "KS4":
            share = y.loc[n.index, "ks4_disadvantaged_pct"] / 100
            assert (np.abs(dis / n - share) <= 0.5 / n + 1e-12).all()


def test_pupil_sd_and_disadvantaged_gap_near_the_targets(small):
    from evaluation.estimators.fixed_effects import feols

    _, pupils, _ = small
    for ks, outcomes in KS_OUTCOMES.items():
        p = pupils[pupils["key_stage"] == ks]
        n_schools = p["urn"].nunique()
        for name in outcomes:
            o = OUT[name]
            between2 = o.pupil_sd**2 - o.within_sd**2
            # the between-school variance is estimated from n_schools (persistent) schools
            tol = Z * between2 * np.sqrt(2 / (n_schools - 1)) / (2 * o.pupil_sd)
            assert abs(p[name].std() - o.pupil_sd) < tol, (name, p[name].std(), o.pupil_sd, tol)
    # the within-school disadvantaged gap is the model's (prior gap x slope + conditional gap)
    stage = {s.key_stage: s for s in STAGES}
    for ks, sub in (("KS4", stage["KS4"].subjects[0]), ("KS2", stage["KS2"].subjects[0])):
        p = pupils[pupils["key_stage"] == ks].copy()
        p["dis"] = p["disadvantaged"].astype(float)
        p["sy"] = p["urn"].astype(str) + "_" + p["year"].astype(str)
        r = feols(p, f"{sub.score} ~ dis | sy", cluster="urn")
        want = -(sub.beta * stage[ks].prior_gap_disadvantaged + sub.gamma)
        assert abs(r.params["dis"] - want) < Z * r.se()["dis"], (ks, r.params["dis"], want, r.se()["dis"])
    # the national Attainment 8 gap about 13 points (published 2019): within-school gap 12.3 plus
    # the schools the disadvantaged attend; at 300 schools only roughly
    p = pupils[pupils["key_stage"] == "KS4"]
    gap = p.loc[~p["disadvantaged"], "ks4_attainment8"].mean() - p.loc[p["disadvantaged"], "ks4_attainment8"].mean()
    assert 11.0 < gap < 15.5, gap
    assert 0.6 < p[["ks4_attainment8", "prior_attainment"]].corr().iloc[0, 1] < 0.85


def test_pupil_weighted_planted_effect_equals_the_school_truth(small):
    panel, pupils, truth = small
    assert len(truth) > 100
    school = panel.truth_effects.groupby(["urn", "year"])[[f"effect_{o}" for cs in KS_OUTCOMES.values()
                                                             for o in cs]].sum(min_count=1)
    t = truth.set_index(["urn", "year"])
    want = np.array([school.at[(u, yr), f"effect_{o}"] for (u, yr), o in zip(t.index, t["outcome"])])
    n = t["n_disadvantaged"] + t["n_other"]
    got = (t["n_disadvantaged"] * t["effect_disadvantaged"] + t["n_other"] * t["effect_other"]) / n
    assert np.max(np.abs(got.to_numpy() - want)) < 1e-12
    nz = t["effect_other"] != 0
    assert nz.sum() > 50
    assert np.allclose(t.loc[nz, "effect_disadvantaged"] / t.loc[nz, "effect_other"], DISADVANTAGED_RATIO)
    # the counts are the pupils'
    counts = pupils.groupby(["urn", "year", "key_stage"])["disadvantaged"].agg(["sum", "size"])
    c = counts.loc[list(zip(t.index.get_level_values(0), t.index.get_level_values(1), t["key_stage"], strict=True))]
    assert (c["sum"].to_numpy() == t["n_disadvantaged"].to_numpy()).all()
    assert (c["size"].to_numpy() - c["sum"].to_numpy() == t["n_other"].to_numpy()).all()


def test_value_added_recovers_the_planted_pupil_effects():
    """A pupil-level value-added regression with school and year fixed effects, on primaries that
    joined one partnership selected on permanent characteristics (no dip) and primaries that never
    joined, recovers the disadvantaged and other pupils' planted effects on KS2 reading."""
    from evaluation.estimators.fixed_effects import feols

    panel = generate(seed=8, n_schools=1500, effects={k: (0.3, 1) for k in EFFECTS})
    pupils, truth = pupils_frame(panel, seed=8, stages=[s for s in STAGES if s.key_stage == "KS2"])
    mem = panel.memberships.merge(panel.partnerships[["partnership_id", "type"]], on="partnership_id")
    mem["urn"] = mem["urn"].astype("int64")
    counts = mem.groupby("urn").size()
    level_only = {"federation_hard", "federation_soft", "umbrella_trust", "collaborative_partnership",
                  "informal_cluster"}
    one = mem[mem["urn"].map(counts).eq(1) & mem["type"].isin(level_only) & mem["left"].eq("")]["urn"]
    never = set(pupils["urn"]) - set(mem["urn"])
    p = pupils[pupils["urn"].isin(set(one) | never)].copy()
    t = truth[truth["outcome"] == "ks2_reading_score"].set_index(["urn", "year"])
    key = pd.MultiIndex.from_arrays([p["urn"], p["year"]])
    treated = key.isin(t.index[t["effect_school"] != 0])
    dis = p["disadvantaged"].to_numpy()
    p["treat_dis"] = (treated & dis).astype(float)
    p["treat_other"] = (treated & ~dis).astype(float)
    p["dis"] = dis.astype(float)
    r = feols(p, "ks2_reading_score ~ prior_attainment + dis + treat_dis + treat_other | urn + year", cluster="urn")
    eff = t.reindex(key)
    true_dis = eff["effect_disadvantaged"].to_numpy()[treated & dis].mean()
    true_other = eff["effect_other"].to_numpy()[treated & ~dis].mean()
    assert r.se()["treat_other"] < true_other / 3  # the test has power
    assert abs(r.params["treat_dis"] - true_dis) < Z * r.se()["treat_dis"], (r.params["treat_dis"], true_dis)
    assert abs(r.params["treat_other"] - true_other) < Z * r.se()["treat_other"], (r.params["treat_other"], true_other)
    print(f"VA: disadvantaged {r.params['treat_dis']:.3f} (SE {r.se()['treat_dis']:.3f}, truth {true_dis:.3f}); "
          f"other {r.params['treat_other']:.3f} (SE {r.se()['treat_other']:.3f}, truth {true_other:.3f}); "
          f"{len(p):,} pupils")


def _digest(root) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.parquet")):
        h.update(str(f.relative_to(root)).encode() + f.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_byte_identical_files(tmp_path):
    panel = generate(seed=5, n_schools=200)
    a = write_pupils(panel, tmp_path / "a", seed=5)
    b = write_pupils(panel, tmp_path / "b", seed=5)
    write_pupils(panel, tmp_path / "c", seed=6)
    assert a.rows == b.rows > 10_000 and len(a.files) == 30
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert (tmp_path / "a" / "key_stage=KS4" / "year=2019" / "part-0.parquet").exists()


def test_cli_synthesize_pupils(tmp_path, run_cli):
    """`impact data synthesize --pupils`: the pupils are imported into the dataset beside the store
    (evaluation.data.pupils) and their truth is a store table like the other truth tables."""
    import json

    from evaluation.data.pupils import has_pupils, read_pupils
    from evaluation.data.store import Store

    store = tmp_path / "impact.duckdb"
    code, out, err = run_cli("data", "synthesize", "--pupils", "--schools", "200", "--seed", "3",
                             "--store", store, "--json")
    assert code == 0, err
    result = json.loads(out)
    truth = Store(store).read_extra("truth_pupils")
    assert len(truth) == result["rows"]["truth_pupils"] > 0
    assert set(truth["key_stage"]) == {"KS2", "KS4"}
    assert has_pupils(store)
    pupils = read_pupils(store, ["pupil_id", "year", "key_stage", "urn", "ks4_attainment8"])
    assert len(pupils) == result["rows"]["pupils"] > 10_000
    assert set(pupils["key_stage"].astype(str)) == {"KS2", "KS4"}
