"""Meta-regression of study effects (``evaluation.meta_regression``): REML tau^2 with Knapp-Hartung inference,
checked against R's metafor on its BCG example (tests/data/bcg.csv, metafor's dat.bcg), and the synthesis
chapter's section.

The expected numbers were produced by metafor 3.8-1 (Debian's r-cran-metafor, R 4.2) with

    library(metafor)
    dat <- escalc(measure="RR", ai=tpos, bi=tneg, ci=cpos, di=cneg, data=dat.bcg)
    tight <- list(threshold=1e-12, maxiter=1000)
    res <- rma(yi, vi, mods=~ablat, data=dat, test="knha", control=tight)
    sprintf("%.15g", c(res$beta, res$se, res$zval, res$pval, res$ci.lb, res$ci.ub, res$tau2, res$s2w,
                       res$QM, res$QMp, res$QE, res$QEp, res$I2, res$H2, res$R2))

and likewise for the other models below. ``control=list(threshold=1e-12)``: metafor's default stops Fisher
scoring when tau^2 changes by less than 1e-5, before tau^2 has converged to 1e-6 (see
``test_metafor_default_threshold_stops_early``); with the tight threshold metafor and this module agree to
about 1e-10.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from evaluation.meta_regression import SKIPPED, NotEstimable, _score, meta_regression, moderator_models, \
    moderator_table, reml_tau2
from tests.test_synthesis import bcg, results_with

ROOT = Path(__file__).resolve().parents[1]


def metafor(x):
    """A metafor number: ours must agree to 1e-6 (relative to 1e-6 for numbers below 1e-3, such as p-values)."""
    return pytest.approx(x, rel=1e-6, abs=0) if abs(x) < 1e-3 else pytest.approx(x, abs=1e-6)


def check(fit, expected: dict):
    for key, values in expected.items():
        ours = {"b": [c.estimate for c in fit.coefficients], "se": [c.se for c in fit.coefficients],
                "t": [c.t for c in fit.coefficients], "p": [c.p for c in fit.coefficients],
                "ci.lb": [c.ci_low for c in fit.coefficients], "ci.ub": [c.ci_high for c in fit.coefficients],
                "tau2": fit.tau2, "s2w": fit.s2w, "QM": fit.qm, "QMp": fit.qm_p, "QE": fit.qe, "QEp": fit.qe_p,
                "I2": 100 * fit.i2, "H2": fit.h2, "R2": None if fit.r2 is None else 100 * fit.r2}[key]
        if isinstance(values, list):
            assert len(ours) == len(values), key
            for o, e in zip(ours, values):
                assert o == metafor(e), key
        else:
            assert ours == metafor(values), key


@pytest.fixture(scope="module")
def dat():
    d, y, v = bcg()
    return d, y, v


def x_of(d, *cols):
    return np.column_stack([np.ones(len(d)), *[d[c].to_numpy(float) for c in cols]])


def test_bcg_ablat_matches_metafor(dat):
    # rma(yi, vi, mods=~ablat, data=dat, test="knha", control=tight)
    d, y, v = dat
    fit = meta_regression(y, v, x_of(d, "ablat"), ["intrcpt", "ablat"])
    check(fit, {
        "b": [0.251468210006954, -0.0291017250116429],
        "se": [0.283925283743889, 0.00820141741104984],
        "t": [0.885684454343231, -3.54837750026402],
        "p": [0.394737072448152, 0.00456505154159259],
        "ci.lb": [-0.373447126088155, -0.0471529230250808],
        "ci.ub": [0.876383546102062, -0.011050526998205],
        "tau2": 0.0763479639559193, "s2w": 1.29920215897842,
        "QM": 12.5909828843799, "QMp": 0.00456505154159259,
        "QE": 30.7330900107493, "QEp": 0.00121429098742004,
        "I2": 68.3912248383852, "H2": 3.16367842438382, "R2": 75.6266218113933,
    })
    assert fit.qm_df == (1, 11) and fit.df == 11 and not fit.truncated
    assert fit.coefficient("ablat").t ** 2 == pytest.approx(fit.qm, rel=1e-12)  # one moderator: F = t^2
    assert fit.tau2_null == metafor(0.313243258136486)  # the intercept-only model's, for R^2


def test_bcg_ablat_and_year_matches_metafor(dat):
    # rma(yi, vi, mods=~ablat+year, data=dat, test="knha", control=tight)
    d, y, v = dat
    fit = meta_regression(y, v, x_of(d, "ablat", "year"), ["intrcpt", "ablat", "year"])
    check(fit, {
        "b": [-3.54535301995838, -0.0280113294441974, 0.00190748044752272],
        "se": [32.2563394835149, 0.0113456775206705, 0.0162788048736586],
        "t": [-0.109911821264477, -2.46889878486006, 0.117175705607805],
        "p": [0.914653773934945, 0.0331673351467238, 0.909040826128276],
        "ci.lb": [-75.4169562460367, -0.0532910743301106, -0.0343639571553794],
        "ci.ub": [68.32625020612, -0.00273158455828422, 0.0381789180504249],
        "tau2": 0.110784696947975, "s2w": 1.22906503460579,
        "QM": 4.96494755588157, "QMp": 0.0318035012859467,
        "QE": 28.3251436562553, "QEp": 0.00160097442223966,
        "I2": 71.9773177785456, "H2": 3.56853777271324, "R2": 64.6330147352433,
    })
    assert fit.qm_df == (2, 10)


def test_bcg_intercept_only_matches_metafor(dat):
    # rma(yi, vi, data=dat, test="knha", control=tight); no R^2 for the intercept-only model (metafor: NULL)
    _, y, v = dat
    fit = meta_regression(y, v)
    check(fit, {
        "b": [-0.71453234215814], "se": [0.180791744092848], "t": [-3.95223988652481],
        "p": [0.0019200150960573], "ci.lb": [-1.10844371368555], "ci.ub": [-0.320620970630728],
        "tau2": 0.313243258136486, "s2w": 1.01126997196684,
        "QM": 15.6202001206376, "QMp": 0.0019200150960573,
        "QE": 152.233008082373, "QEp": 1.99676459084597e-26,
        "I2": 92.2213845212691, "H2": 12.8557582353094,
    })
    assert fit.r2 is None and fit.tau2_null is None and fit.qm_df == (1, 12)


def test_bcg_factor_moderator_and_knapp_hartung_scale_below_one(dat):
    # rma(yi, vi, mods=~factor(alloc), data=dat, test="knha", control=tight): reference level "alternate";
    # s2w = 0.91 < 1 is used as it is (test="knha" does not truncate), and tau^2 above the intercept-only
    # model's gives R^2 = max(0, negative) = 0.
    d, y, v = dat
    X = np.column_stack([np.ones(len(d)), d["alloc"] == "random", d["alloc"] == "systematic"])
    fit = meta_regression(y, v, X, ["intrcpt", "random", "systematic"])
    check(fit, {
        "b": [-0.5179557771553, -0.447818401390525, 0.089038216231708],
        "se": [0.42194705859414, 0.493318571737075, 0.535603661854889],
        "p": [0.247732561391872, 0.385354852493116, 0.871281961022355],
        "ci.lb": [-1.45811241189023, -1.54700067748428, -1.10436111201329],
        "ci.ub": [0.422200857579631, 0.65136387470323, 1.28243754447671],
        "tau2": 0.3615036643239, "s2w": 0.914651868369426,
        "QM": 0.966220844813303, "QMp": 0.413383745721665,
        "QE": 132.367638262708, "QEp": 1.53521295641922e-23,
        "I2": 88.7709035717039, "H2": 8.90543603740108, "R2": 0,
    })
    assert fit.qm_df == (2, 10) and fit.s2w < 1 and not fit.truncated
    # metafor test="adhoc" (max(1, s2w), Roever, Knapp & Friede 2015):
    # rma(yi, vi, mods=~factor(alloc), data=dat, test="adhoc", control=tight)
    adhoc = meta_regression(y, v, X, ["intrcpt", "random", "systematic"], truncate=True)
    check(adhoc, {
        "se": [0.441194460386783, 0.515821633598989, 0.560035586835431],
        "ci.lb": [-1.50099829562421, -1.59714062390746, -1.15879883329125],
        "ci.ub": [0.465086741313611, 0.701503821126412, 1.33687526575467],
        "QM": 0.883755700965972, "QMp": 0.443176640600811, "s2w": 1.0,
        "p": [0.267601948842521, 0.405656597084543, 0.876844418117454],
    })
    assert adhoc.truncated and adhoc.tau2 == fit.tau2


def test_tau2_on_the_boundary_matches_metafor():
    # Studies that agree better than chance: REML tau^2 = 0 exactly, and the untruncated Knapp-Hartung scale is
    # far below 1 (the interval narrower than the Wald one). metafor gives the same with either threshold:
    #   y <- c(0.10, 0.12, 0.09, 0.11, 0.10); v <- c(0.01, 0.02, 0.015, 0.01, 0.03); x <- 1:5
    #   rma(y, v, mods=~x, test="knha"); rma(y, v, test="knha")
    y = np.array([0.10, 0.12, 0.09, 0.11, 0.10])
    v = np.array([0.01, 0.02, 0.015, 0.01, 0.03])
    X = np.column_stack([np.ones(5), np.arange(1, 6.0)])
    fit = meta_regression(y, v, X)
    assert fit.tau2 == 0
    check(fit, {
        "b": [0.102488038277512, 0.000478468899521568], "se": [0.0122641202085898, 0.0039740291482987],
        "ci.lb": [0.0634581342321302, -0.0121686654805714], "ci.ub": [0.141517942322894, 0.0131256032796145],
        "s2w": 0.0104784688995215, "QM": 0.014495904906866, "QMp": 0.911777984311634,
        "QE": 0.0314354066985646, "QEp": 0.998531562573083, "I2": 0, "H2": 1, "R2": 0,
    })
    null = meta_regression(y, v)
    assert null.tau2 == 0
    check(null, {"b": [0.103809523809524], "se": [0.00474998508172857], "ci.lb": [0.0906214509795959],
                 "ci.ub": [0.116997596639452], "I2": 0})
    assert fit.tau2_null == 0 and fit.r2 == 0  # metafor: R^2 = 0 when there is no heterogeneity to explain


def test_tau2_crept_to_the_boundary_is_zero():
    # The Hedges start is positive but the REML maximum is at 0: metafor's step halving creeps towards 0 and stops
    # at 1.07e-6 by default, 2.5e-13 with the tight threshold; ours is 0 exactly.
    #   y <- c(-0.0173, 0.054, 0.1838, -0.4294, 0.0389); v <- c(0.0017, 0.0649, 0.0723, 0.0837, 0.0289)
    #   rma(y, v, test="knha", control=tight)
    y = np.array([-0.0173, 0.054, 0.1838, -0.4294, 0.0389])
    v = np.array([0.0017, 0.0649, 0.0723, 0.0837, 0.0289])
    fit = meta_regression(y, v)
    assert fit.tau2 == 0 and fit.iterations > 0
    check(fit, {"b": [-0.0159428516340287], "se": [0.0323213171676665], "ci.lb": [-0.105681214477742]})


def test_metafor_default_threshold_stops_early(dat):
    # metafor's default control (threshold = 1e-5 on the change in tau^2) prints, for
    # rma(yi, vi, mods=~ablat, data=dat, test="knha"): tau^2 0.0764, F(1, 11) = 12.5905, ablat -0.0291 (se 0.0082),
    # intrcpt 0.2515 (se 0.2839, CI -0.3735 to 0.8764), R^2 75.62%; unrounded tau^2 = 0.0763546947056598,
    # 6.7e-6 from the converged REML value. Ours is the converged value: the printed tau^2 and F differ in
    # the 4th decimal, everything is within the default's own convergence error.
    d, y, v = dat
    fit = meta_regression(y, v, x_of(d, "ablat"))
    default_tau2 = 0.0763546947056598
    assert abs(fit.tau2 - default_tau2) < 1e-5 and abs(fit.tau2 - default_tau2) > 1e-6
    assert fit.qm == pytest.approx(12.5905, abs=1e-3) and 100 * fit.r2 == pytest.approx(75.62, abs=0.01)
    assert fit.coefficients[0].ci_low == pytest.approx(-0.3735, abs=1e-4)
    # The converged value solves the REML estimating equation y'PPy = tr(P); the default's does not quite.
    X = x_of(d, "ablat")
    assert abs(_score(y, v, X, fit.tau2)[0]) < 1e-9 < abs(_score(y, v, X, default_tau2)[0])


def test_reml_solves_its_estimating_equation_and_maximises_the_restricted_likelihood(dat):
    from evaluation.meta_regression import restricted_loglik

    d, y, v = dat
    X = x_of(d, "ablat", "year")
    tau2, iterations = reml_tau2(y, v, X)
    assert iterations > 0 and abs(_score(y, v, X, tau2)[0]) < 1e-9
    for t in (tau2 * 0.99, tau2 * 1.01, 0.0):
        assert restricted_loglik(y, v, X, t) < restricted_loglik(y, v, X, tau2)
    # Intercept only: the same as the existing fixed-point REML of Viechtbauer (2005, eq. 12).
    from tests.test_synthesis import reml_tau2 as fixed_point

    assert reml_tau2(y, v)[0] == pytest.approx(fixed_point(y, v), rel=1e-10)


def test_not_estimable():
    y = np.array([0.1, 0.2, 0.3, 0.25])
    v = np.full(4, 0.01)
    with pytest.raises(NotEstimable, match="needs at least 5 studies"):
        meta_regression(y, v, np.column_stack([np.ones(4), [0, 1, 2, 3], [0, 0, 1, 1]]))
    with pytest.raises(NotEstimable, match="collinear"):
        meta_regression(np.r_[y, 0.3, 0.1], np.full(6, 0.01),
                        np.column_stack([np.ones(6), [0, 1, 1, 0, 1, 0], [1, 0, 0, 1, 0, 1]]))
    with pytest.raises(NotEstimable, match="at least two studies"):
        meta_regression(y[:1], v[:1])
    fit = meta_regression(y, v, np.column_stack([np.ones(4), [0, 1, 2, 3]]))  # k = p + 2: estimable
    assert fit.df == 2


# ------------------------------------------------------------------------------ the studies' moderators


#: Four example studies, one informal: the edge cases of k = 4 below (more examples, more degrees of freedom).
FOUR = ("federation_primary_ks2", "mat_converter_secondary_ks4", "mat_sponsored_secondary_ks4", "tsa_members_primary_ks2")


def example_results() -> list[dict]:
    """Four example studies: definitions from studies/*.toml, effect sizes from the pinned results."""
    out = []
    for path in [ROOT / "studies" / f"{sid}.toml" for sid in FOUR]:
        definition = tomllib.loads(path.read_text())
        golden = json.loads((ROOT / "tests" / "data" / "golden" / f"{path.stem}.json").read_text())
        out.append({"study": {"id": definition["id"], "title": definition["title"], "definition": definition},
                    "effects": {"g": golden["effects.g"], "g_se": golden["effects.g_se"],
                                "g_ci": [golden["effects.g_ci[0]"], golden["effects.g_ci[1]"]],
                                "months": golden["effects.months"], "padlocks": int(golden["effects.padlocks"])}})
    return out


def test_example_studies_moderators_and_what_can_be_estimated():
    results = example_results()
    table = moderator_table(results).set_index("id")
    assert table["formal"].to_dict() == {"federation_primary_ks2": True, "mat_converter_secondary_ks4": True,
                                         "mat_sponsored_secondary_ks4": True, "tsa_members_primary_ks2": False}
    assert table["phase"].to_dict() == {"federation_primary_ks2": "primary",
                                        "mat_converter_secondary_ks4": "secondary",
                                        "mat_sponsored_secondary_ks4": "secondary",
                                        "tsa_members_primary_ks2": "primary"}
    assert "trust_size" not in table and "trust size" in SKIPPED["trust_size"]
    null, models = moderator_models(results)
    assert null.fit.k == 4 and null.fit.df == 3
    by = {m.moderators: m for m in models}
    # k = 4: one binary characteristic leaves 2 degrees of freedom; three types or two characteristics do not.
    assert by[("formal",)].fit.df == 2 and by[("phase",)].fit.df == 2
    assert by[("partnership_type",)].fit is None and "needs at least 5 studies" in by[("partnership_type",)].reason
    assert by[("formal", "phase")].fit is None and "there are 4" in by[("formal", "phase")].reason
    formal = by[("formal",)]
    assert formal.levels["formal"] == (False, [True]) and formal.counts["formal"] == {True: 3, False: 1}
    # The coefficient is the formal studies' REML mean minus the informal study's g (one informal study).
    tsa = table.loc["tsa_members_primary_ks2"]
    assert formal.fit.coefficients[0].estimate == pytest.approx(tsa["g"], rel=1e-9)


def test_moderator_that_does_not_vary_is_refused():
    results = results_with([0.1, 0.2, 0.3, 0.4, 0.5], [0.05] * 5)  # all multi-academy trusts, no phase recorded
    _, models = moderator_models(results)
    by = {m.moderators: m for m in models}
    assert by[("formal",)].fit is None and by[("formal",)].reason == "every study is of formal partnerships"
    assert "not recorded" in by[("phase",)].reason
    assert "same partnership type" in by[("partnership_type",)].reason


# ------------------------------------------------------------------------------ the chapter


def chapter_results(g, se, types, phases):
    results = results_with(g, se, types)
    for r, phase in zip(results, phases):
        r["study"]["definition"]["cohort"]["phase"] = phase
    return results


def section(results, tmp_path) -> str:
    from evaluation.report.synthesis_chapter import write_synthesis

    text = write_synthesis(results, tmp_path).read_text()
    return text[text.index("## Does the effect differ by kind of partnership?"):]


def test_chapter_with_four_studies_says_too_few_and_prints_no_over_parameterised_model(tmp_path):
    results = chapter_results([0.05, 0.35, 0.1, 0.6], [0.05, 0.06, 0.04, 0.08],
                              ["multi_academy_trust", "multi_academy_trust", "federation_hard",
                               "teaching_school_alliance"], ["secondary", "secondary", "primary", "primary"])
    text = section(results, tmp_path)
    plain = next(line for line in text.splitlines() if line.startswith("**In plain English:**"))
    assert "With only 4 studies, far fewer than the 10 per characteristic" in plain
    assert "no clear evidence" in plain and "appears to differ" not in plain
    assert "Trust size is not in the studies' results" in text
    assert "Knapp-Hartung" in text and "not truncated at 1" in text
    # Partnership type (three types, three coefficients) and formal with phase are refused, with the reason ...
    assert "- Partnership type: the model has 3 coefficients" in text and "there are 4." in text
    assert "- Formal or informal partnership and phase: the model has 3 coefficients" in text
    # ... and have no rows in the tables; the estimable single-characteristic models do.
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert not any(line.startswith("| partnership type") for line in rows)
    assert any(line.startswith("| formal or informal partnership | formal minus informal | 3 vs 1 |") for line in rows)
    assert any(line.startswith("| phase | secondary minus primary | 2 vs 2 |") for line in rows)
    assert "F(1, 2) = " in text


def test_chapter_claims_a_moderator_only_when_its_test_supports_it(tmp_path):
    from evaluation.report.markdown import escape, num, p_equals

    # Twelve studies, formal ones planted 0.3 above informal ones, phase unrelated.
    rng = np.random.default_rng(7)
    k = 12
    types = ["multi_academy_trust", "teaching_school_alliance"] * (k // 2)
    phases = ["primary"] * 3 + ["secondary"] * 3 + ["primary"] * 3 + ["secondary"] * 3
    g = np.where(np.array(types) == "multi_academy_trust", 0.35, 0.05) + rng.normal(0, 0.02, k)
    results = chapter_results(list(g), [0.03] * k, types, phases)
    text = section(results, tmp_path)
    _, models = moderator_models(results)
    by = {m.moderators: m for m in models}
    assert by[("formal",)].fit.qm_p < 0.05 <= by[("phase",)].fit.qm_p
    plain = next(line for line in text.splitlines() if line.startswith("**In plain English:**"))
    assert f"differs by formal or informal partnership ({escape(p_equals(by[('formal',)].fit.qm_p))})" in plain
    # Two types here, so partnership type is the same split as formal; phase is not claimed, nor is the joint
    # model (its test is of formal and phase at once).
    assert "but not clearly by phase" in plain and "With only" not in plain and "not proof" in plain
    assert "partnership and phase" not in plain
    c = by[("formal",)].fit.coefficients[1]
    assert f"| {num(c.estimate, 3)} | {num(c.ci_low, 3)} to {num(c.ci_high, 3)} |" in text
    # The same pattern in only six studies: "appears to", with the warning.
    _, models = moderator_models(results[:6])
    assert {m.moderators: m for m in models}[("formal",)].fit.qm_p < 0.05
    text = section(results[:6], tmp_path)
    plain = next(line for line in text.splitlines() if line.startswith("**In plain English:**"))
    assert "appears to differ by formal or informal partnership" in plain and "but not clearly by phase" in plain
    assert "with only 6 studies, far fewer than the 10" in plain and "could well be chance" in plain


def test_chapter_with_no_estimable_model(tmp_path):
    results = chapter_results([0.1, 0.3, 0.2], [0.05, 0.1, 0.07],
                              ["multi_academy_trust", "informal_cluster", "federation_hard"],
                              ["primary", "secondary", "primary"])
    text = section(results, tmp_path)
    assert "With only 3 studies, far fewer than the 10 per characteristic a meta-regression needs, no " \
           "meta-regression can be estimated" in text
    assert "| Model |" not in text and "Not estimated, so no numbers are shown" in text
