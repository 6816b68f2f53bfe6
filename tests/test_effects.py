"""Effect sizes, EEF months' progress and padlocks: table-driven, at every boundary."""

from __future__ import annotations

import copy

import pytest

from evaluation.effects import (VERDICT_RULES, effect_size, minimum_detectable_effect, months_progress,
                                plain_summary, round2, security_rating, verdict)

# (effect, months): both ends of every band of the EEF Toolkit table, and the half-up rounding
# between bands (x.xx5 rounds up before the table is read).
MONTHS_CASES = [
    (0.0, 0), (0.01, 0), (0.0149, 0), (0.015, 1), (0.02, 1), (0.09, 1), (0.094, 1), (0.095, 2),
    (0.10, 2), (0.18, 2), (0.185, 3), (0.19, 3), (0.26, 3), (0.27, 4), (0.35, 4), (0.36, 5), (0.44, 5),
    (0.45, 6), (0.52, 6), (0.53, 7), (0.61, 7), (0.62, 8), (0.69, 8), (0.70, 9), (0.78, 9), (0.79, 10),
    (0.87, 10), (0.88, 11), (0.95, 11), (0.96, 12), (1.00, 12), (1.5, 12),
]


@pytest.mark.parametrize("effect,months", MONTHS_CASES)
def test_months_progress_table(effect, months):
    assert months_progress(effect) == months
    assert months_progress(-effect) == -months


def test_round_half_up_on_decimal_text():
    assert round2(0.125) == 0.13 and round2(0.115) == 0.12 and round2(0.0149) == 0.01


def make_result(estimate=1.0, se=0.25, sd=10.0, treated=100, comparison=200, attrition=0.05, pre_p=0.5,
                smd=0.05, clusters=150, pupil_sd=None, mdes=None):
    crit = 1.959963984540054
    r = {
        "primary_estimator": "callaway_santanna",
        "estimates": {"callaway_santanna": {"estimate": estimate, "se": se, "ci_low": estimate - crit * se,
                                            "ci_high": estimate + crit * se, "n_clusters": clusters}},
        "effect_size": {"sd": sd, "sd_definition": "between-school SD", "pupil_sd": pupil_sd,
                        "pupil_sd_source": "pupil SD" if pupil_sd else None},
        "counts": {"treated_analysed": treated, "comparison_matched": comparison, "attrition": attrition},
        "diagnostics": {"pretrend": {"event_study": {"p_value": pre_p, "for_verdict": True}}, "balance": {"max_abs_smd_after": smd}},
        "outcome": {"description": "Average Attainment 8 score per pupil (ATT8SCR).", "unit": "points"},
        "study": {"question": "Did it work?"},
    }
    if mdes is not None:
        r["power"] = {"mdes": mdes}
    return r


def test_hedges_g_uses_pupil_sd_when_known_and_small_sample_correction():
    r = make_result(estimate=2.0, se=0.5, sd=8.0, pupil_sd=20.0, treated=10, comparison=20)
    es = effect_size(r)
    j = 1 - 3 / (4 * 30 - 9)
    assert es.g == pytest.approx(j * 2.0 / 20.0, rel=1e-12)
    assert es.sd == 20.0 and es.sd_label == "pupil SD"
    assert es.ci_low == pytest.approx(j * (2.0 - 1.959963984540054 * 0.5) / 20.0, rel=1e-12)
    es = effect_size(make_result(estimate=2.0, se=0.5, sd=8.0))
    # no pupil-level SD: no g and no months, and the reason says the between-school SD would inflate them
    assert es.g is None and es.months is None and es.sd is None and es.direction == "positive"
    assert "no pupil-level standard deviation" in es.withheld and "between-school SD (8)" in es.withheld


@pytest.mark.parametrize("mdes,padlocks", [(0.20, 4), (0.2001, 4), (0.30, 4), (0.3001, 3), (0.40, 3),
                                           (0.4001, 2), (0.50, 2), (0.5001, 1), (0.60, 1), (0.6001, 0)])
def test_power_caps(mdes, padlocks):
    rating = security_rating(make_result(mdes=mdes))
    assert rating.padlocks == padlocks
    assert len(rating.reasons) == 5 - padlocks
    assert rating.reasons[0].startswith("design:")
    assert all(r.startswith("power:") for r in rating.reasons[1:])


@pytest.mark.parametrize("attrition,padlocks", [(0.0, 4), (0.10, 4), (0.20, 4), (0.2001, 3), (0.30, 3),
                                                (0.3001, 2), (0.40, 2), (0.4001, 1), (0.50, 1), (0.5001, 0)])
def test_attrition_caps(attrition, padlocks):
    rating = security_rating(make_result(mdes=0.1, attrition=attrition))
    assert rating.padlocks == padlocks and len(rating.reasons) == 5 - padlocks


def test_threats_each_lose_a_padlock_with_a_reason():
    base = dict(mdes=0.1)
    assert security_rating(make_result(**base)).padlocks == 4
    r = security_rating(make_result(pre_p=0.049, **base))
    assert r.padlocks == 3 and "different paths" in r.reasons[-1] and "p = 0.049" in r.reasons[-1]
    assert security_rating(make_result(pre_p=0.05, **base)).padlocks == 4
    r = security_rating(make_result(smd=0.11, **base))
    assert r.padlocks == 3 and "largest standardised difference 0.11" in r.reasons[-1]
    assert security_rating(make_result(smd=0.1, **base)).padlocks == 4
    r = security_rating(make_result(clusters=29, **base))
    assert r.padlocks == 3 and "only 29 independent groups" in r.reasons[-1]
    assert security_rating(make_result(clusters=30, **base)).padlocks == 4
    r = security_rating(make_result(pre_p=0.01, smd=0.3, clusters=5, **base))
    assert r.padlocks == 1 and len(r.reasons) == 4
    r = security_rating(make_result(pre_p=0.01, smd=0.3, clusters=5, mdes=0.55))
    assert r.padlocks == 0 and len(r.reasons) == 5


def test_mdes_from_standard_error_when_no_power_analysis():
    r = make_result(se=0.25, sd=10.0, pupil_sd=10.0, treated=1000, comparison=1000)
    mdes, source = minimum_detectable_effect(r)
    j = 1 - 3 / (4 * 2000 - 9)
    assert mdes == pytest.approx((1.959963984540054 + 0.8416212335729143) * j * 0.025, rel=1e-9)
    assert "standard error" in source
    # without a pupil-level SD: the between-school SD (smaller, so a larger MDES), and the reason says so
    mdes, source = minimum_detectable_effect(make_result(se=0.25, sd=5.0))
    assert mdes == pytest.approx((1.959963984540054 + 0.8416212335729143) * 0.05, rel=1e-9)
    assert "between-school" in source and "cautious" in source


def test_plain_summary_never_claims_more_than_the_evidence():
    yes = plain_summary(make_result(estimate=3.0, se=0.5, mdes=0.1, pupil_sd=10.0))
    assert yes["answer"].startswith("Yes:") and "months' additional progress" in yes["answer"]
    weak = plain_summary(make_result(estimate=3.0, se=0.5, mdes=0.55, pupil_sd=10.0))
    assert weak["answer"].startswith("Probably yes, but the evidence is weak")
    biased = plain_summary(make_result(estimate=3.0, se=0.5, mdes=0.1, pre_p=0.01, pupil_sd=10.0))
    assert biased["answer"].startswith("We cannot tell: the checks point to bias") and "Yes" not in biased["answer"]
    assert biased["caveat"].startswith("Before joining")
    unclear = plain_summary(make_result(estimate=0.3, se=0.5, mdes=0.1, pupil_sd=10.0))
    assert unclear["answer"].startswith("We cannot tell") and "could only have detected an effect of 0.10" in \
        unclear["answer"]
    neg = plain_summary(make_result(estimate=-3.0, se=0.5, mdes=0.1, pupil_sd=10.0))
    assert neg["answer"].startswith("No:") and "less progress" in neg["answer"]
    # no pupil-level SD: the answer is in the outcome's units and says why no months are given
    units = plain_summary(make_result(estimate=3.0, se=0.5, mdes=0.1))
    assert units["answer"].startswith("Yes:") and "3.00 points" in units["answer"] and "month" not in \
        units["answer"].split("No pupil-level")[0].split("no pupil-level")[0]


def test_yes_never_comes_with_zero_months():
    # significant but tiny: g = 0.003 rounds to 0 months
    r = make_result(estimate=0.03, se=0.005, mdes=0.1, pupil_sd=10.0)
    answer = plain_summary(r)["answer"]
    assert answer.startswith("Yes") and "0 months" not in answer and "less than one month" in answer


def test_verdict_follows_unrounded_ci_and_checks():
    # the CI's lower bound is -0.002: printed to 2 decimals it would read 0.00, but the answer is "cannot tell"
    crit = 1.959963984540054
    r = make_result(estimate=0.2, se=(0.2 + 0.002) / crit, mdes=0.1, pupil_sd=10.0)
    assert r["estimates"]["callaway_santanna"]["ci_low"] == pytest.approx(-0.002)
    assert verdict(r).answer == "cannot_tell"
    ok = make_result(estimate=3.0, se=0.5, mdes=0.1, pupil_sd=10.0)
    assert verdict(ok).answer == "yes" and verdict(ok).rule == VERDICT_RULES[0][0]
    # a failed placebo family turns "Yes" into "the checks point to bias"
    ok["diagnostics"]["placebo_dates"] = {"placebos": [{"k": 1, "estimate": -2.5, "p": 0.001},
                                                       {"k": 2, "estimate": 0.1, "p": 0.6}]}
    v = verdict(ok)
    assert v.answer == "cannot_tell_bias" and [c.name for c in v.failed] == ["placebo"]
    assert "-2.50 points, effect size -0.25" in v.failed[0].detail  # in the headline's units too
    # HonestDiD: a violation as large as the largest pre-joining one could explain the first-year effect
    h = make_result(estimate=3.0, se=0.5, mdes=0.1, pupil_sd=10.0)
    h["diagnostics"]["honest_did"] = {"original": {"lb": 1.0, "ub": 5.0},
                                      "relative_magnitudes": [{"Mbar": 0.5, "lb": 0.2, "ub": 5.5},
                                                              {"Mbar": 1.0, "lb": -0.4, "ub": 6.0}]}
    assert verdict(h).answer == "cannot_tell_sensitivity"
    h["diagnostics"]["honest_did"]["relative_magnitudes"][1]["lb"] = 0.1
    assert verdict(h).answer == "yes"


def test_inputs_are_not_modified():
    r = make_result()
    before = copy.deepcopy(r)
    effect_size(r), security_rating(r), plain_summary(r)
    assert r == before


def test_failed_placebo_dates_lose_a_padlock():
    r = make_result(mdes=0.1)
    r["diagnostics"]["placebo_dates"] = {"placebos": [{"k": 1, "estimate": 0.4, "p": 0.02, "includes_zero": False},
                                                      {"k": 2, "estimate": 0.1, "p": 0.7, "includes_zero": True}]}
    rating = security_rating(r)
    assert rating.padlocks == 3 and "1 year(s) early: 0.40 points" in rating.reasons[-1]
    # Bonferroni over the dates: p = 0.03 with two dates (threshold 0.025) is not a failure
    r["diagnostics"]["placebo_dates"]["placebos"][0]["p"] = 0.03
    assert security_rating(r).padlocks == 4


def with_blocks(r: dict) -> dict:
    """``r`` with the blocks the pipeline stores for the book (effects, verdict, summary)."""
    from evaluation.effects import plain_summary, verdict
    from evaluation.stages.effects import effects_block

    r["effects"] = effects_block(r)
    r["verdict"] = verdict(r).to_dict()
    r["summary"] = plain_summary(r)
    return r


def test_sentence_case_keeps_acronyms():
    from evaluation.effects import sentence_case

    assert sentence_case("KS1-KS2 maths progress score") == "KS1-KS2 maths progress score"
    assert sentence_case("Average Attainment 8 score") == "average Attainment 8 score"
    assert sentence_case("") == ""
