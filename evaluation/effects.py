"""Effect sizes, months' progress and the security rating, as EEF reports show them.

* Effect size: Hedges' g = J * estimate / SD, with the pupil-level SD of the outcome
  when one is known (stated in ``sd_label``), else the between-school SD (which
  overstates g relative to pupil-level effect sizes; said so). J = 1 - 3 / (4 (n_t +
  n_c) - 9) is Hedges' small-sample correction, computed with the numbers of schools.
* Months' progress: the EEF Teaching and Learning Toolkit conversion table, applied to
  |g| rounded half-up to 2 decimal places; negative effects are symmetric.
* Security rating (0-5 padlocks), following the EEF's classification: the minimum of
  the design cap (a matched difference-in-differences caps at 4), the power cap (from
  the minimum detectable effect size, MDES) and the attrition cap, then one padlock
  lost for each threat flagged by the diagnostics (a failed pre-trend test, poor
  balance after matching, effects at placebo joining dates, few clusters). Every lost
  padlock has a printed reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from scipy import stats

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


@dataclass(frozen=True)
class EffectSize:
    g: float
    ci_low: float
    ci_high: float
    se: float
    sd: float
    sd_label: str
    months: int
    months_ci: tuple[int, int]
    direction: str  # "positive", "negative" or "unclear" (CI includes zero)


def _primary(result: dict) -> dict:
    return result["estimates"][result["primary_estimator"]]


def effect_size(result: dict) -> EffectSize:
    """Hedges' g of the primary estimate, with its 95% CI and months' progress."""
    est = _primary(result)
    es = result["effect_size"]
    if es.get("pupil_sd"):
        sd, label = es["pupil_sd"], es["pupil_sd_source"]
    else:
        sd = es["sd"]
        label = (es["sd_definition"] + "; no pupil-level SD was available, so this effect size is larger than "
                 "a pupil-level one would be")
    c = result["counts"]
    n = c["treated_analysed"] + c["comparison_matched"]
    j = 1 - 3 / (4 * n - 9) if n > 3 else 1.0
    g = j * est["estimate"] / sd
    lo, hi = j * est["ci_low"] / sd, j * est["ci_high"] / sd
    direction = "positive" if lo > 0 else "negative" if hi < 0 else "unclear"
    return EffectSize(g, lo, hi, j * est["se"] / sd, sd, label, months_progress(g),
                      (months_progress(lo), months_progress(hi)), direction)


@dataclass(frozen=True)
class SecurityRating:
    padlocks: int
    reasons: list[str] = field(default_factory=list)  # one per lost padlock
    mdes: float = float("nan")
    mdes_source: str = ""

    @property
    def symbols(self) -> str:
        return "\U0001F512" * self.padlocks + "\u25CB" * (5 - self.padlocks)


def minimum_detectable_effect(result: dict, alpha: float = 0.05, power: float = POWER) -> tuple[float, str]:
    """MDES in effect-size units: a design-based one if the result carries it (power
    analysis), else (z_{1-alpha/2} + z_{power}) x SE(g) of the primary estimate."""
    planned = (result.get("power") or {}).get("mdes")
    if planned is not None:
        return float(planned), "power analysis of the design"
    mult = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return mult * effect_size(result).se, f"{mult:.2f} x the standard error of the effect size (80% power, 5% test)"


def _pretrend_failures(result: dict) -> list[str]:
    tests = (result.get("diagnostics") or {}).get("pretrend") or {}
    failed = []
    for name, t in tests.items():
        if t and t.get("p_value") is not None and t["p_value"] < 0.05:
            failed.append(f"{name.replace('_', ' ')} (p = {t['p_value']:.3f})")
    return failed


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
        reasons += [f"power: the smallest effect this study could reliably detect (MDES) is {mdes:.2f}; "
                    f"{level} padlocks need an MDES of {MDES_CAPS[5 - level][0]:.1f} or less"] * (level - power_cap)
        level = power_cap
    if attrition_cap < level:
        reasons += [f"attrition: {attrition:.0%} of the partnership schools were lost from the analysis; "
                    f"{level} padlocks allow at most {ATTRITION_CAPS[5 - level][0]:.0%}"] * (level - attrition_cap)
        level = attrition_cap
    threats = []
    failed = _pretrend_failures(result)
    if failed:
        threats.append("threat: before joining, partnership and comparison schools were already on different "
                       "paths (pre-trend test failed: " + "; ".join(failed) + ")")
    placebo = (result.get("diagnostics") or {}).get("placebo_dates") or {}
    missed = [p for p in placebo.get("placebos", []) if p.get("includes_zero") is False]
    if missed:
        shown = "; ".join(f"{p['k']} year(s) early: {p['estimate']:.2f}" for p in missed)
        threats.append("threat: pretending the schools joined earlier shows effects where there can be none "
                       f"(placebo joining dates: {shown})")
    bal = (result.get("diagnostics") or {}).get("balance") or {}
    if bal.get("max_abs_smd_after") is not None and bal["max_abs_smd_after"] > SMD_THRESHOLD:
        threats.append(f"threat: after matching the groups still differ (largest standardised difference "
                       f"{bal['max_abs_smd_after']:.2f} > {SMD_THRESHOLD})")
    clusters = _primary(result).get("n_clusters")
    treated_clusters = ((result.get("diagnostics") or {}).get("small_cluster_inference") or {}).get(
        "n_treated_clusters")
    if clusters is not None and clusters < FEW_CLUSTERS:
        threats.append(f"threat: only {clusters} independent groups (clusters), too few for conventional "
                       f"standard errors to be trusted")
    elif treated_clusters is not None and treated_clusters < FEW_CLUSTERS:
        threats.append(f"threat: only {treated_clusters} partnerships, too few for conventional standard errors "
                       f"to be trusted (the wild cluster bootstrap is reported beside them)")
    for t in threats:
        if level > 0:
            reasons.append(t)
            level -= 1
    return SecurityRating(level, reasons, mdes, source)


def plain_summary(result: dict) -> dict:
    """The summary box in plain English: question, answer and main caveat."""
    es = effect_size(result)
    sec = security_rating(result)
    outcome = result["outcome"]["description"].rstrip(".")
    outcome = outcome[0].lower() + outcome[1:]
    months = abs(es.months)
    month_words = f"{months} month{'s' if months != 1 else ''}' additional progress"
    weak = sec.padlocks <= 2
    if es.direction == "positive":
        lead = "Probably yes, but the evidence is weak" if weak else "Yes"
        answer = (f"{lead}: the partnership schools improved on {outcome} by more than similar schools that did "
                  f"not join, an effect of about {month_words} (effect size {es.g:.2f}).")
    elif es.direction == "negative":
        lead = "Possibly not, but the evidence is weak" if weak else "No"
        answer = (f"{lead}: the partnership schools did worse on {outcome} than similar schools that did not "
                  f"join, an effect of about {month_words} fewer (effect size {es.g:.2f}).")
    else:
        answer = (f"We cannot tell: the estimated effect on {outcome} is {es.g:.2f} (about {month_words}"
                  f"{'' if es.months >= 0 else ' fewer'}), but it could be zero; this study could only have "
                  f"detected an effect of {sec.mdes:.2f} or more.")
    caveats = [r.removeprefix("threat: ") for r in sec.reasons if r.startswith("threat:")]
    if caveats:
        caveat = caveats[0][0].upper() + caveats[0][1:] + "."
    elif result["counts"]["attrition"] > 0.2:
        caveat = (f"{result['counts']['attrition']:.0%} of the partnership schools could not be matched or had "
                  f"too little data and are not in the comparison.")
    else:
        caveat = ("This is not a randomised trial: comparison schools were chosen to look like the partnership "
                  "schools before they joined, but differences nobody measured may remain.")
    return {"question": result["study"]["question"], "answer": answer, "caveat": caveat}
