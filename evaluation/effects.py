"""Effect sizes, months' progress and the security rating, as EEF reports show them.

* Effect size: Hedges' g = J * estimate / SD with the pupil-level SD of the outcome (EEF
  thresholds assume pupil-level effect sizes): from pupil data, the synthetic truth, or
  the study definition (``[outcome] pupil_sd`` with ``pupil_sd_source``). Without one no g
  or months are given (the between-school SD is 2.5-3x smaller and would inflate them):
  results stay in the outcome's units and the reason is printed. J = 1 - 3 / (4 (n_t +
  n_c) - 9) is Hedges' small-sample correction, computed with the numbers of schools.
* Months' progress: the EEF Teaching and Learning Toolkit conversion table, applied to
  |g| rounded half-up to 2 decimal places; negative effects are symmetric.
* Security rating (0-5 padlocks), following the EEF's classification: the minimum of
  the design cap (a matched difference-in-differences caps at 4), the power cap (from
  the minimum detectable effect size, MDES) and the attrition cap, then one padlock
  lost for each threat flagged by the diagnostics (a failed pre-trend test, poor
  balance after matching, effects at placebo joining dates, few clusters). Every lost
  padlock has a printed reason.
* Verdict (the summary's answer, ``verdict``): from the unrounded confidence interval of
  the primary estimate and the checks of its design (``VERDICT_RULES``): "Yes"/"No" only
  when the interval excludes zero and no check fails; otherwise "we cannot tell", saying
  whether the checks point to bias or the interval includes zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
from scipy import stats

from evaluation.data.schema import description_words, sentence_case
from evaluation.estimators.names import SHORT
from evaluation.numbers import sign_safe_decimals

#: EEF Toolkit: upper bound of |effect size| (2 dp) for each number of months.
MONTHS_TABLE = [(0.01, 0), (0.09, 1), (0.18, 2), (0.26, 3), (0.35, 4), (0.44, 5), (0.52, 6), (0.61, 7),
                (0.69, 8), (0.78, 9), (0.87, 10), (0.95, 11), (1.00, 12)]
#: MDES (in g) needed for each number of padlocks on power, EEF classification.
MDES_CAPS = [(0.2, 5), (0.3, 4), (0.4, 3), (0.5, 2), (0.6, 1)]
#: Attrition (share of the cohort lost from the analysis) allowed for each number of padlocks.
ATTRITION_CAPS = [(0.10, 5), (0.20, 4), (0.30, 3), (0.40, 2), (0.50, 1)]
DESIGN_CAPS = {"matched_did": 4, "randomised": 5}
POWER = 0.8
SMD_THRESHOLD = 0.1
FEW_CLUSTERS = 30


def round2(x: float) -> float:
    """Round half-up to 2 decimal places (0.015 -> 0.02), on the decimal text of x."""
    return float(Decimal(repr(float(x))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def months_progress(effect: float) -> int:
    """Additional months' progress for an effect size (EEF Toolkit table; capped at 12)."""
    r = round2(abs(effect))
    months = 12
    for upper, m in MONTHS_TABLE:
        if r <= upper:
            months = m
            break
    return -months if effect < 0 else months


def _cap(value: float, caps: list[tuple[float, int]]) -> int:
    for upper, locks in caps:
        if value <= upper + 1e-12:
            return locks
    return 0


def _primary(result: dict) -> dict:
    """The headline: the primary estimate with the interval the calibration table supports
    (``result["headline"]``), or the estimator's own interval in results without one."""
    return result.get("headline") or result["estimates"][result["primary_estimator"]]


headline = _primary


def hedges_j(result: dict) -> float:
    c = result["counts"]
    n = c["treated_analysed"] + c["comparison_matched"]
    return 1 - 3 / (4 * n - 9) if n > 3 else 1.0


ESTIMATOR_WORDS = SHORT

NO_PUPIL_SD = ("no pupil-level standard deviation of this outcome is known (no pupil data, and the study "
               "definition states none in [outcome] pupil_sd), so no effect size or months' progress is given: "
               "the EEF's months conversion assumes pupil-level effect sizes, and the between-school SD "
               "({sd}) is 2.5-3 times smaller, so it would overstate them. Results are in {unit}.")


@dataclass(frozen=True)
class EffectSize:
    """Hedges' g of the primary estimate in pupil-level SDs, or withheld (``g is None``) with the reason."""

    g: float | None
    ci_low: float | None
    ci_high: float | None
    se: float | None
    sd: float | None
    sd_label: str
    months: int | None
    months_ci: tuple[int, int] | None
    direction: str  # "positive", "negative" or "unclear" (the unrounded CI includes zero)
    withheld: str | None = None  # why no g or months are given

    def in_sd_units(self, x: float | None, j: float) -> float | None:
        return None if x is None or self.sd is None else j * x / self.sd


def effect_size(result: dict) -> EffectSize:
    """Hedges' g of the primary estimate (pupil-level SD), its 95% CI and months' progress."""
    est = _primary(result)
    es = result["effect_size"]
    direction = ("positive" if est["ci_low"] > 0 else "negative" if est["ci_high"] < 0 else "unclear")
    if not es.get("pupil_sd"):
        unit = result["outcome"].get("unit") or "points"
        sd = es.get("sd")
        return EffectSize(None, None, None, None, None, "", None, None, direction,
                          NO_PUPIL_SD.format(sd=f"{sd:.3g}" if sd else "unknown",
                                             unit="the outcome's own units (" + unit + ")"))
    sd, label = float(es["pupil_sd"]), es["pupil_sd_source"]
    j = hedges_j(result)
    g = j * est["estimate"] / sd
    lo, hi = j * est["ci_low"] / sd, j * est["ci_high"] / sd
    return EffectSize(g, lo, hi, j * est["se"] / sd, sd, label, months_progress(g),
                      (months_progress(lo), months_progress(hi)), direction)


@dataclass(frozen=True)
class SecurityRating:
    padlocks: int
    reasons: list[str] = field(default_factory=list)  # one per lost padlock
    mdes: float = float("nan")
    mdes_source: str = ""
    caveats: list[str] = field(default_factory=list)  # each threat that cost a padlock, in plain words

    @property
    def symbols(self) -> str:
        return "\U0001F512" * self.padlocks + "\u25CB" * (5 - self.padlocks)


def minimum_detectable_effect(result: dict, alpha: float = 0.05, power: float = POWER) -> tuple[float, str]:
    """MDES in effect-size units: a design-based one if the result carries it (power analysis,
    in the SD it names), else (z_{1-alpha/2} + z_{power}) x SE(g) of the primary estimate (pupil
    SD) or, without a pupil-level SD, x SE / between-school SD (larger, so the rating is cautious)."""
    planned = result.get("power") or {}
    if planned.get("mdes") is not None:
        label = planned.get("sd_label") or "the SD the power analysis used"
        return float(planned["mdes"]), f"power analysis of the design, in SDs: {label}"
    mult = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    es = effect_size(result)
    if es.se is not None:
        return mult * es.se, f"{mult:.2f} x the standard error of the effect size (80% power, 5% test)"
    sd = result["effect_size"].get("sd")
    se = _primary(result)["se"]
    return (mult * se / sd if sd else float("nan"),
            f"{mult:.2f} x the standard error in between-school SDs (no pupil-level SD: this overstates the "
            "MDES, so the power criterion is cautious)")


# ---------------------------------------------------------------------------- checks of the design


@dataclass(frozen=True)
class Check:
    """One diagnostic of the headline's design: did it fail, and what it showed (headline units)."""

    name: str  # "pretrend", "placebo", "honest_did"
    failed: bool | None  # None: not computed / not applicable
    detail: str  # for the technical reader (the chapter's list of checks)
    kind: str = "bias"  # "bias": the checks point to bias; "sensitivity": a plausible violation explains it
    plain: str = ""  # what a failure means, in words for the answer sentence (not stored)

    @property
    def title(self) -> str:
        return CHECK_TITLES.get(self.name, self.name)


CHECK_TITLES = {"pretrend": "pre-trend test", "placebo": "placebo", "honest_did": "HonestDiD"}

#: A failed check in words for the answer sentence (no test names, symbols or row numbers: the
#: chapter's list of checks gives those).
PLAIN_CHECKS = {
    "pretrend": "before joining, the partnership schools were already on a different path from the comparison "
                "schools",
    "placebo": "pretending the schools joined earlier than they did shows effects in years when there can be none",
    "honest_did": "under the HonestDiD sensitivity analysis, allowing post-joining departures from parallel trends "
                  "as large as the largest seen before joining, the effect in the first year after joining could "
                  "be zero",
}
#: A threat that cost a padlock, as the summary's main caveat says it (no numbers of single years).
PLAIN_THREATS = {
    "pretrend": "Before joining, the partnership and comparison schools were already on different paths, so part of "
                "the difference after joining may not be the partnership's doing",
    "placebo": "Pretending the schools joined earlier than they did shows effects in years when there can be none, "
               "so the comparison schools may not show what would have happened without the partnership",
    "honest_did": "If the partnership and comparison schools drifted apart after joining as much as they did before, "
                  "that alone could explain the effect (HonestDiD sensitivity analysis)",
}


def _unit(result: dict) -> str:
    unit = result["outcome"].get("unit") or "points"
    return "percentage points" if unit == "percent" else unit


def _in_units(result: dict, x: float) -> str:
    """A number in the outcome's units, and in effect-size units when a pupil-level SD is known."""
    text = f"{_signed(x)} {_unit(result)}"
    es = effect_size(result)
    if es.sd is not None:
        text += f", effect size {_signed(hedges_j(result) * x / es.sd)}"
    return text


def _signed(x: float, digits: int = 2) -> str:
    """Fixed digits that never hide a sign (see ``evaluation.numbers``)."""
    return f"{x:.{sign_safe_decimals(x, digits)}f}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def pretrend_check(result: dict, alpha: float = 0.05) -> Check:
    """The pre-trend test the result flags ``for_verdict`` (the primary estimator's, else the TWFE
    event study's: ``stages.diagnose.pretrend_tests``)."""
    tests = (result.get("diagnostics") or {}).get("pretrend") or {}
    name = next((n for n, t in tests.items() if t and t.get("for_verdict")), None)
    if name is None:
        return Check("pretrend", None, "no pre-trend test was computed")
    t = tests[name]
    rows = (result.get("event_study") or {}).get(name) or []
    pre = [r for r in rows if r["e"] < -1]
    worst = max(pre, key=lambda r: abs(r["estimate"])) if pre else None
    shown = (f"; largest pre-joining difference {_in_units(result, worst['estimate'])} at e = {worst['e']}"
             if worst else "")
    failed = t["p_value"] < alpha
    return Check("pretrend", failed, f"{ESTIMATOR_WORDS.get(name, name)} pre-trend test {_p(t['p_value'])}{shown}",
                 plain=PLAIN_CHECKS["pretrend"])


def placebo_check(result: dict, alpha: float = 0.05) -> Check:
    """Placebo joining dates, as a family: fails when the smallest p-value is below alpha / K
    (Bonferroni over the K placebo dates, so the family errs at most alpha of the time)."""
    placebo = (result.get("diagnostics") or {}).get("placebo_dates") or {}
    rows = [p for p in placebo.get("placebos", []) if p.get("estimate") is not None and p.get("p") is not None]
    if not rows:
        return Check("placebo", None, "no placebo joining date could be estimated")
    k = len(rows)
    pmin = min(p["p"] for p in rows)
    shown = "; ".join(f"{p['k']} year(s) early: {_in_units(result, p['estimate'])}, {_p(p['p'])}" for p in rows)
    return Check("placebo", bool(pmin < alpha / k),
                 f"placebo joining dates ({shown}; Bonferroni threshold {alpha / k:.3f} for {k} dates)",
                 plain=PLAIN_CHECKS["placebo"])


def honest_did_check(result: dict) -> Check:
    """HonestDiD relative magnitudes at Mbar = 1: can a post-joining violation of parallel trends no
    larger than the largest seen before joining explain the effect (Rambachan & Roth 2023)?"""
    h = (result.get("diagnostics") or {}).get("honest_did") or {}
    rows = [r for r in h.get("relative_magnitudes") or [] if abs(r["Mbar"] - 1.0) < 1e-9]
    orig = h.get("original") or {}
    if not rows or orig.get("lb") is None:
        return Check("honest_did", None, "HonestDiD not computed", "sensitivity")
    if orig["lb"] <= 0 <= orig["ub"]:
        return Check("honest_did", None, "HonestDiD not applicable: the first-year effect's interval already "
                     "includes zero", "sensitivity")
    r = rows[0]
    failed = bool(r["lb"] <= 0 <= r["ub"])
    unit = _unit(result)
    return Check("honest_did", failed,
                 f"HonestDiD, first-year effect, departures from parallel trends up to the largest seen before "
                 f"joining (Mbar = 1): robust interval {_signed(r['lb'])} to {_signed(r['ub'])} against "
                 f"{_signed(orig['lb'])} to {_signed(orig['ub'])} without departures", "sensitivity",
                 plain=(f"{PLAIN_CHECKS['honest_did']}: its 95% confidence interval, {_signed(orig['lb'])} to "
                        f"{_signed(orig['ub'])} {unit}, becomes {_signed(r['lb'])} to {_signed(r['ub'])}, which "
                        f"includes zero"))


def design_checks(result: dict) -> list[Check]:
    alpha = float(((result.get("study") or {}).get("definition") or {}).get("inference", {}).get("alpha", 0.05))
    return [pretrend_check(result, alpha), placebo_check(result, alpha), honest_did_check(result)]


#: The verdict rule, as the methods chapter prints it (condition -> answer).
VERDICT_RULES = [
    ("The 95% CI of the primary estimate excludes zero and no check fails",
     "Yes (above zero) / No (below zero); 'but the evidence is weak' with 2 padlocks or fewer"),
    ("The CI excludes zero but the pre-trend test of the primary estimator fails (p < 0.05) or a placebo "
     "joining date shows an effect (smallest p below 0.05 / number of dates)",
     "We cannot tell: the checks point to bias"),
    ("The CI excludes zero, the bias checks pass, but a violation of parallel trends no larger than the largest "
     "seen before joining could explain the first-year effect (HonestDiD sensitivity analysis, relative "
     "magnitudes with Mbar = 1)",
     "We cannot tell: a plausible failure of parallel trends could explain the effect"),
    ("The CI includes zero", "We cannot tell: the effect could be zero (with the MDES, and any failed check)"),
]


@dataclass(frozen=True)
class Verdict:
    answer: str  # "yes", "no", "cannot_tell_bias", "cannot_tell_sensitivity", "cannot_tell"
    lead: str
    rule: str
    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    def to_dict(self) -> dict:
        return {"answer": self.answer, "lead": self.lead, "rule": self.rule,
                "checks": [{"name": c.name, "title": c.title, "failed": c.failed, "kind": c.kind, "detail": c.detail}
                           for c in self.checks]}


def verdict(result: dict) -> Verdict:
    """The answer from the unrounded CI and the design checks (``VERDICT_RULES``)."""
    est = _primary(result)
    checks = design_checks(result)
    bias = [c for c in checks if c.failed and c.kind == "bias"]
    sens = [c for c in checks if c.failed and c.kind == "sensitivity"]
    if est["ci_low"] <= 0 <= est["ci_high"]:
        return Verdict("cannot_tell", "We cannot tell", VERDICT_RULES[3][0], checks)
    if bias:
        return Verdict("cannot_tell_bias", "We cannot tell: the checks point to bias", VERDICT_RULES[1][0], checks)
    if sens:
        return Verdict("cannot_tell_sensitivity", "We cannot tell: a plausible failure of parallel trends could "
                       "explain the effect", VERDICT_RULES[2][0], checks)
    weak = security_rating(result).padlocks <= 2
    if est["ci_low"] > 0:
        return Verdict("yes", "Probably yes, but the evidence is weak" if weak else "Yes", VERDICT_RULES[0][0], checks)
    return Verdict("no", "Possibly not, but the evidence is weak" if weak else "No", VERDICT_RULES[0][0], checks)


def security_rating(result: dict) -> SecurityRating:
    """0-5 padlocks with a reason for every padlock lost."""
    reasons: list[str] = []
    design = DESIGN_CAPS["matched_did"]
    reasons += ["design: a matched difference-in-differences comparison is capped at 4 padlocks (only a "
                "randomised trial can reach 5)"] * (5 - design)
    mdes, source = minimum_detectable_effect(result)
    power_cap = _cap(mdes, MDES_CAPS)
    attrition = result["counts"]["attrition"]
    attrition_cap = _cap(attrition, ATTRITION_CAPS)
    level = design
    if power_cap < level:
        reasons += [f"power: the smallest effect this study could reliably detect (MDES) is {mdes:.2f} ({source}); "
                    f"{level} padlocks need an MDES of {MDES_CAPS[5 - level][0]:.1f} or less"] * (level - power_cap)
        level = power_cap
    if attrition_cap < level:
        reasons += [f"attrition: {attrition:.0%} of the partnership schools were lost from the analysis; "
                    f"{level} padlocks allow at most {ATTRITION_CAPS[5 - level][0]:.0%}"] * (level - attrition_cap)
        level = attrition_cap
    threats = []  # (the reason, for the list of padlocks lost; the same in plain words, for the caveat)
    checks = {c.name: c for c in design_checks(result)}
    if checks["pretrend"].failed:
        threats.append(("threat: before joining, partnership and comparison schools were already on different "
                        f"paths ({checks['pretrend'].detail})", PLAIN_THREATS["pretrend"]))
    if checks["placebo"].failed:
        threats.append(("threat: pretending the schools joined earlier shows effects where there can be none "
                        f"({checks['placebo'].detail})", PLAIN_THREATS["placebo"]))
    if checks["honest_did"].failed:
        threats.append(("threat: a failure of parallel trends no larger than seen before joining could explain the "
                        f"effect ({checks['honest_did'].detail})", PLAIN_THREATS["honest_did"]))
    bal = (result.get("diagnostics") or {}).get("balance") or {}
    if bal.get("max_abs_smd_after") is not None and bal["max_abs_smd_after"] > SMD_THRESHOLD:
        smd = bal["max_abs_smd_after"]
        threats.append((f"threat: after matching the groups still differ (largest standardised difference "
                        f"{smd:.2f} > {SMD_THRESHOLD})",
                        f"After matching, the partnership and comparison schools still differ on at least one "
                        f"characteristic by more than the usual limit (a standardised difference of {smd:.2f}, "
                        f"above {SMD_THRESHOLD})"))
    clusters = _primary(result).get("n_clusters")
    treated_clusters = ((result.get("diagnostics") or {}).get("small_cluster_inference") or {}).get(
        "n_treated_clusters")
    if clusters is not None and clusters < FEW_CLUSTERS:
        threats.append((f"threat: only {clusters} independent groups (clusters), too few for conventional "
                        f"standard errors to be trusted",
                        f"The schools fall into only {clusters} independent groups, too few for the usual measure "
                        f"of uncertainty to be trusted"))
    elif treated_clusters is not None and treated_clusters < FEW_CLUSTERS:
        threats.append((f"threat: only {treated_clusters} partnerships, too few for conventional standard errors "
                        f"to be trusted (the wild cluster bootstrap is reported beside them)",
                        f"Only {treated_clusters} partnerships are in the study, too few for the usual measure of "
                        f"uncertainty to be trusted (the chapter gives one made for few partnerships beside it)"))
    caveats = []
    for t, plain in threats:
        if level > 0:
            reasons.append(t)
            caveats.append(plain)
            level -= 1
    return SecurityRating(level, reasons, mdes, source, caveats)


def _size_words(es: EffectSize, result: dict) -> str:
    """How big, never 'about 0 months' beside a non-zero answer."""
    est = _primary(result)
    units = _in_units(result, est["estimate"])
    if es.g is None:
        return f"an effect of {units}"
    months = abs(es.months)
    if months == 0:
        return f"a very small effect, less than one month's additional progress ({units})"
    possessive = "1 month's" if months == 1 else f"{months} months'"
    return f"an effect of about {possessive} {'additional' if es.g > 0 else 'less'} progress ({units})"


def plain_summary(result: dict) -> dict:
    """The summary box in plain English: question, answer (from ``verdict``) and main caveat."""
    es = effect_size(result)
    sec = security_rating(result)
    v = verdict(result)
    outcome = "the " + sentence_case(description_words(result["outcome"]["description"]))
    size = _size_words(es, result)
    failed = "; and ".join(c.plain or c.detail for c in v.failed)
    mdes = f"{sec.mdes:.2f}" if np.isfinite(sec.mdes) else "unknown"
    if v.answer == "yes":
        answer = (f"{v.lead}: the partnership schools improved on {outcome} by more than similar schools that did "
                  f"not join: {size}.")
    elif v.answer == "no":
        answer = (f"{v.lead}: the partnership schools did worse on {outcome} than similar schools that did not "
                  f"join: {size}.")
    elif v.answer == "cannot_tell_bias":
        answer = (f"{v.lead}. The estimate is {size}, but the checks of the design failed: {failed}; so part or "
                  f"all of it may not be the partnership's doing.")
    elif v.answer == "cannot_tell_sensitivity":
        answer = (f"{v.lead}. The estimate is {size}, but {failed}.")
    else:
        extra = f" A check of the design also failed: {failed}." if failed else ""
        answer = (f"We cannot tell: on {outcome} the estimate is {size}, but it could be zero; this study "
                  f"could only have detected an effect of {mdes} or more.{extra}")
    if es.withheld:
        answer += " " + es.withheld[0].upper() + es.withheld[1:]
    if sec.caveats:
        caveat = sec.caveats[0] + "."
    elif result["counts"]["attrition"] > 0.2:
        caveat = (f"{result['counts']['attrition']:.0%} of the partnership schools could not be matched or had "
                  f"too little data and are not in the comparison.")
    else:
        caveat = ("This is not a randomised trial: comparison schools were chosen to look like the partnership "
                  "schools before they joined, but differences nobody measured may remain.")
    return {"question": result["study"]["question"], "answer": answer, "caveat": caveat}
