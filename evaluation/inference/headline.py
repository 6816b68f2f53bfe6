"""The headline interval: which inference the study reports for its primary estimator, and why.

The project measures the coverage of its own intervals (``benchmarks/coverage.py``, table in
``benchmarks/coverage_table.md``) on designs shaped like partnership studies: 8 to 100 treated
partnerships of very unequal size, 400 singleton comparison schools with matching weights,
staggered cohorts, AR(1) school noise and partnership-year shocks. :func:`choose_inference` is a
pure policy that picks, per estimator and number of treated partnerships (clusters), the method
the table shows covering within [0.93, 0.97] in every calibrated design; its reason quotes the
table. :func:`headline_interval` applies the choice to an already-fitted estimator.

A study estimator the table has no design for (:data:`UNCALIBRATED`, e.g. de Chaisemartin &
D'Haultfoeuille) has no policy: as primary, its headline is the estimator's own analytic
interval, unchanged, and the choice says so (``calibrated`` False, a ``flag`` the book prints).

The snapshot of the table the policy quotes is :data:`CALIBRATION` (coverage per method and
number of treated clusters, the lower of the two effect designs); ``tests/test_headline_inference``
checks it against ``benchmarks/coverage_results.json`` when that file is present, and its slow
tests re-run a smaller grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from evaluation.errors import InputError, problem
from evaluation.estimators.names import ESTIMATOR_NAMES, SHORT
from evaluation.inference.candidates import DEFAULT_COLUMNS, interval, treated_clusters

__all__ = ["InferenceChoice", "HeadlineInterval", "choose_inference", "headline_interval",
           "headline_pretest", "CALIBRATION", "CALIBRATED_TREATED", "POLICY", "PRETEST", "BAND"]

#: coverage band the chosen method must reach in every calibrated design
BAND = (0.93, 0.97)
#: numbers of treated partnerships in the calibration grid
CALIBRATED_TREATED = (8, 15, 30, 100)
#: comparison clusters in the calibration designs (singleton comparison schools)
CALIBRATED_COMPARISONS = 400
#: where the numbers below come from
SOURCE = "benchmarks/coverage_table.md: benchmarks/coverage.py, 1000 replications, seed 2024"

#: Coverage of 95% CIs per method and G1 (treated clusters): of the zero- and heterogeneous-effect
#: designs in benchmarks/coverage_table.md, the one further from 0.95 (TWFE: of its own estimand;
#: randomisation inference: zero effect only). Snapshot; see the module docstring.
CALIBRATION: dict[str, dict[int, float]] = {
    "callaway_santanna:analytic-means": {8: 0.419, 15: 0.520, 30: 0.703, 100: 0.976},
    "callaway_santanna:analytic": {8: 0.835, 15: 0.898, 30: 0.929, 100: 0.928},
    "callaway_santanna:analytic-t": {8: 0.896, 15: 0.926, 30: 0.940, 100: 0.930},
    "callaway_santanna:wild": {8: 0.823, 15: 0.888, 30: 0.919, 100: 0.928},
    "callaway_santanna:jackknife": {8: 0.943, 15: 0.954, 30: 0.956, 100: 0.938},
    "callaway_santanna:wild-jk": {8: 0.880, 15: 0.917, 30: 0.938, 100: 0.932},
    "sun_abraham:crv1": {8: 0.731, 15: 0.847, 30: 0.899, 100: 0.924},
    "sun_abraham:crv1-t": {8: 0.799, 15: 0.878, 30: 0.912, 100: 0.928},
    "sun_abraham:wcr": {8: 0.897, 15: 0.935, 30: 0.948, 100: 0.932},
    "sun_abraham:jackknife": {8: 0.943, 15: 0.954, 30: 0.956, 100: 0.938},
    "imputation:bjs": {8: 0.943, 15: 0.949, 30: 0.961, 100: 0.945},
    "imputation:bjs-t": {8: 0.965, 15: 0.964, 30: 0.966, 100: 0.948},
    "twfe:crv1": {8: 0.856, 15: 0.894, 30: 0.935, 100: 0.943},
    "twfe:crv1-t": {8: 0.904, 15: 0.916, 30: 0.945, 100: 0.945},
    "twfe:wcr": {8: 0.946, 15: 0.942, 30: 0.962, 100: 0.951},
    "twfe:jackknife": {8: 0.948, 15: 0.942, 30: 0.967, 100: 0.953},
    "twfe:ri": {8: 0.939, 15: 0.947, 30: 0.972, 100: 0.962},
}

#: The policy: per estimator, (smallest number of treated clusters, method) in increasing order.
#: What the table supports (coverage of the chosen method at G1 = 8 / 15 / 30 / 100):
#: CS and Sun-Abraham: the cluster jackknife with t(G1-1) at every size (0.943 / 0.952 / 0.953 /
#: 0.938; the R did 2.5 analytic CI covers 0.835 / 0.898 / 0.929 / 0.928, the score wild bootstrap
#: 0.823 / 0.888 / 0.919 / 0.928, SA's own CR1 0.731 / 0.847 / 0.899 / 0.924); imputation: its
#: own conservative BJS SE with normal critical values at every size (0.943 / 0.949 / 0.961 /
#: 0.945); TWFE: the WCR wild cluster bootstrap below 30 treated partnerships (0.946 / 0.942),
#: from 30 on CR1 with t(G1-1) (0.945 / 0.945; fixest's t(G-1) covers 0.856 / 0.894 / 0.935 /
#: 0.943). The switch at 30 is the smallest calibrated size where CR1 with t(G1-1) covers.
POLICY: dict[str, tuple[tuple[int, str], ...]] = {
    "callaway_santanna": ((2, "jackknife"),),
    "sun_abraham": ((2, "jackknife"),),
    "imputation": ((2, "bjs"),),
    "twfe": ((2, "wcr"), (30, "crv1-t")),
}

#: the pre-test of parallel trends the table supports (evaluation.inference.pretest)
PRETEST = "average-jk"

_LABEL = {
    "callaway_santanna:analytic": "the analytic influence-function CI (R did 2.5, normal)",
    "callaway_santanna:analytic-t": "the analytic CI with t(G1-1)",
    "callaway_santanna:wild": "the score wild bootstrap",
    "callaway_santanna:jackknife": "the cluster-jackknife CI with t(G1-1)",
    "callaway_santanna:wild-jk": "the wild bootstrap of the jackknife changes",
    "sun_abraham:crv1": "the CR1 CI (fixest, t(G-1))",
    "sun_abraham:crv1-t": "the CR1 CI with t(G1-1)",
    "sun_abraham:wcr": "the wild cluster bootstrap (WCR)",
    "sun_abraham:jackknife": "the cluster-jackknife CI with t(G1-1)",
    "imputation:bjs": "the BJS conservative CI (normal)",
    "imputation:bjs-t": "the BJS conservative CI with t(G1-1)",
    "twfe:crv1": "the CR1 CI (fixest, t(G-1))",
    "twfe:crv1-t": "the CR1 CI with t(G1-1)",
    "twfe:wcr": "the wild cluster bootstrap (WCR)",
    "twfe:jackknife": "the cluster-jackknife CI with t(G1-1)",
}
_DEFAULT = {"callaway_santanna": "analytic", "sun_abraham": "crv1", "imputation": "bjs",
            "twfe": "crv1"}

#: Study estimators that can be primary but have no design in the calibration table: their headline
#: is their own analytic interval (method "<estimator>:own"), flagged as not calibrated.
UNCALIBRATED = tuple(n for n in ESTIMATOR_NAMES if n not in POLICY and n != "event_study")


@dataclass(frozen=True)
class InferenceChoice:
    """The inference for the headline and why.

    method: "<estimator>:<method>" (see :mod:`evaluation.inference.candidates`); reason: plain
    English, quoting the calibration table; calibrated: the table shows the method covering within
    [0.93, 0.97] in the calibrated designs bracketing this number of treated clusters; flag: a
    warning to show with the result when not (None otherwise).
    """

    estimator: str
    method: str
    n_treated_clusters: int
    n_clusters: int
    reason: str
    calibrated: bool
    flag: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _cov(method: str, g: int) -> float | None:
    return CALIBRATION.get(method, {}).get(g)


def _bracket(n_treated: int) -> list[int]:
    """Calibrated designs that bracket n_treated (the one at or below and the one above)."""
    below = [g for g in CALIBRATED_TREATED if g <= n_treated]
    above = [g for g in CALIBRATED_TREATED if g > n_treated]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


def choose_inference(estimator: str, n_treated_clusters: int, n_clusters: int) -> InferenceChoice:
    """The headline inference for ``estimator`` with ``n_treated_clusters`` treated partnerships
    among ``n_clusters`` clusters in all (pure; the thresholds are :data:`POLICY`)."""
    if estimator not in POLICY and estimator not in UNCALIBRATED:
        raise InputError(problem(f"a primary estimator with a calibrated headline interval: "
                                 f"{', '.join(POLICY)}", value=estimator))
    for name, v in (("n_treated_clusters", n_treated_clusters), ("n_clusters", n_clusters)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InputError(problem(f"{name}: a whole number", value=v))
    G1, G = int(n_treated_clusters), int(n_clusters)
    if G1 < 2:
        raise InputError(problem("at least two treated partnerships (clusters): with one, no "
                                 "cluster-robust interval of any kind exists", value=G1))
    if G < G1 + 1:
        raise InputError(problem("n_clusters counts every cluster, treated and comparison, so "
                                 "it must exceed n_treated_clusters", value=G))
    if estimator in UNCALIBRATED:
        return _uncalibrated(estimator, G1, G)
    method = next(m for lo, m in reversed(POLICY[estimator]) if G1 >= lo)
    row = f"{estimator}:{method}"
    brackets = _bracket(G1)
    covs = {g: _cov(row, g) for g in brackets}
    calibrated = bool(covs) and all(c is not None and BAND[0] <= c <= BAND[1]
                                    for c in covs.values())
    parts = [(g, c) for g, c in covs.items() if c is not None]
    shown = " and ".join(f"{c:.3f}" + (" of replications" if i == 0 else "") + f" with {g}"
                         for i, (g, c) in enumerate(parts))
    alt = f"{estimator}:{_DEFAULT[estimator]}"
    alt_text = ""
    if alt != row:
        alt_cov = [f"{_cov(alt, g):.3f} with {g}" for g in brackets if _cov(alt, g) is not None]
        if alt_cov:
            alt_text = f"; {_LABEL[alt]} covers {' and '.join(alt_cov)}"
    reason = (f"with {G1} treated partnerships ({G} clusters in all) the calibration table "
              f"({SOURCE}) shows {_LABEL[row]} covering the true effect in "
              f"{shown or 'no measured design'} partnerships (target 0.95){alt_text}")
    flags = []
    if G1 < CALIBRATED_TREATED[0]:
        flags.append(f"only {G1} treated partnerships: fewer than the smallest calibrated design "
                     f"({CALIBRATED_TREATED[0]}), so the coverage of this interval is not measured "
                     "and is likely below 95%; treat the interval as indicative")
    elif not calibrated:
        bad = " and ".join(f"{c:.3f} with {g}" for g, c in covs.items() if c is not None)
        flags.append(f"no implemented method covers within [{BAND[0]:.2f}, {BAND[1]:.2f}] here: "
                     f"{_LABEL[row]}, the best available, covers {bad}")
    if G - G1 < min(CALIBRATED_COMPARISONS, 4 * G1):
        flags.append(f"only {G - G1} comparison clusters; the calibration designs have "
                     f"{CALIBRATED_COMPARISONS} singleton comparison schools")
    return InferenceChoice(estimator, row, G1, G, reason, calibrated and not flags,
                           "; ".join(flags) or None)


def _uncalibrated(estimator: str, G1: int, G: int) -> InferenceChoice:
    """The choice for a primary estimator the calibration table does not cover: its own interval."""
    name = SHORT.get(estimator, estimator)
    reason = (f"the calibration table ({SOURCE}) has no design for the {name} estimator, so no "
              f"interval is chosen for it: the headline is the estimator's own analytic interval, as "
              f"fitted, with {G1} treated partnerships ({G} clusters in all)")
    flags = [(f"the coverage of the {name} estimator's own interval has not been measured on designs like "
              f"this one (the calibration table covers {', '.join(SHORT.get(k, k) for k in POLICY)} only); "
              "treat the interval as indicative")]
    if G1 < CALIBRATED_TREATED[0]:
        g0 = CALIBRATED_TREATED[0]
        flags.append(f"only {G1} treated partnerships, fewer than the smallest calibrated design ({g0}), where "
                     f"the analytic intervals of Callaway & Sant'Anna and Sun & Abraham cover only "
                     f"{_cov('callaway_santanna:analytic', g0):.3f} and {_cov('sun_abraham:crv1', g0):.3f}")
    return InferenceChoice(estimator, f"{estimator}:own", G1, G, reason, False, "; ".join(flags))


@dataclass(frozen=True)
class HeadlineInterval:
    """The headline estimate with the chosen interval.

    estimate: the fitted estimator's point estimate (the same number); se: the standard error the
    method uses; ci_low/ci_high: the (1 - alpha) interval; p: for ATT = 0; method: the
    :class:`InferenceChoice` method id; df: t degrees of freedom (None: normal or bootstrap);
    reason/flag: from the policy; B/seed: bootstrap draws and seed when bootstrapped.
    """

    estimator: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p: float
    method: str
    df: int | None
    reason: str
    flag: str | None
    alpha: float
    n_treated_clusters: int
    n_clusters: int
    description: str
    B: int | None = None
    seed: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _cs_gt(panel, result, gt, columns):
    """The att_gt result behind a CS headline: given, the result itself, or a refit with the
    fit's options and the same weights."""
    from evaluation.estimators.callaway_santanna import GroupTimeResult, att_gt

    if gt is not None:
        return gt
    if isinstance(result, GroupTimeResult):
        return result
    d = result.details
    return att_gt(panel, y=columns["y"], unit=columns["unit"], time=columns["time"],
                  cohort=columns["cohort"], cluster=columns["cluster"],
                  weights=columns["weights"] if columns["weights"] in panel.columns else None,
                  control=d.get("control", "never"), method=d.get("method", "dr"),
                  base_period=d.get("base_period", "varying"),
                  anticipation=d.get("anticipation", 0), max_e=d.get("max_e"))


def headline_interval(panel: pd.DataFrame, estimator: str, result, *, alpha: float = 0.05,
                      seed: int = 0, gt=None, aggte_kwargs: dict | None = None, B: int = 9999,
                      columns: dict | None = None,
                      choice: InferenceChoice | None = None) -> HeadlineInterval:
    """Apply the policy's inference to an already-fitted primary estimator.

    panel: the analysis panel the estimator was fitted on (columns y, urn, year, cohort (0 =
    comparison), weight (matching weights: every refit uses them), cluster; other names through
    ``columns``). estimator: "callaway_santanna", "sun_abraham", "imputation" or "twfe".
    result: the fitted EstimatorResult (for CS the simple aggregation, or the att_gt result).
    gt/aggte_kwargs (CS): the att_gt result and the kwargs of the simple aggregation (e.g.
    ``{"max_e": 3}``); without ``gt`` att_gt is re-run with the fit's options and the same weights.
    The returned estimate is ``result``'s own point estimate; any refit that does not reproduce it
    raises InputError. Deterministic given ``seed``.
    """
    columns = {**DEFAULT_COLUMNS, **(columns or {})}
    if not isinstance(panel, pd.DataFrame):
        raise InputError(problem("the analysis panel as a pandas DataFrame",
                                 value=type(panel).__name__))
    missing = [c for k, c in columns.items() if k != "weights" and c not in panel.columns]
    if missing:
        raise InputError([problem("a column of the analysis panel", column=c) for c in missing])
    if columns["weights"] not in panel.columns:
        columns["weights"] = None
    G1, G = treated_clusters(panel[columns["cluster"]], panel[columns["cohort"]])
    choice = choice or choose_inference(estimator, G1, G)
    if choice.estimator != estimator:
        raise InputError(problem(f"an inference choice for {estimator}", value=choice.method))
    method = choice.method.split(":", 1)[1]
    if method == "own":  # no calibrated method: the fitted estimator's own interval, unchanged
        ov = getattr(result, "overall", None)
        if ov is None:
            raise InputError(problem(f"a fitted {estimator} result with an overall estimate",
                                     value=type(result).__name__))
        from evaluation.estimators.results import Estimate

        ov = Estimate.from_se(ov.estimate, ov.se, result.variance, alpha)  # the fit's interval at this alpha
        return HeadlineInterval(
            estimator=estimator, estimate=float(ov.estimate), se=float(ov.se), ci_low=float(ov.ci_low),
            ci_high=float(ov.ci_high), p=float(ov.p_value), method=choice.method, df=result.variance.df,
            reason=choice.reason, flag=choice.flag, alpha=float(alpha), n_treated_clusters=G1,
            n_clusters=G, description=f"the estimator's own interval: {result.variance.describe()}")
    if estimator == "callaway_santanna":
        gt = _cs_gt(panel, result, gt, columns)
        fitted = getattr(result, "overall", None)
        iv = interval(estimator, method, gt=gt, aggte_kwargs=aggte_kwargs, alpha=alpha,
                      seed=seed, B=B, columns=columns)
        estimate = iv.estimate if fitted is None else fitted.estimate
        if abs(iv.estimate - estimate) > 1e-8 * max(1.0, abs(estimate)):
            raise InputError(problem(
                f"the att_gt/aggte refit gives {iv.estimate:.10g} but the fitted estimate is "
                f"{estimate:.10g}: pass the att_gt result (gt=) and the aggte kwargs "
                f"(aggte_kwargs=, e.g. max_e) of the fit, and the same weights", value=estimate))
    else:
        if getattr(result, "overall", None) is None:
            raise InputError(problem(f"a fitted {estimator} result with an overall estimate",
                                     value=type(result).__name__))
        iv = interval(estimator, method, panel=panel, result=result, alpha=alpha, seed=seed, B=B,
                      columns=columns)
        estimate = result.overall.estimate
    is_boot = iv.B is not None
    return HeadlineInterval(
        estimator=estimator, estimate=float(estimate), se=float(iv.se), ci_low=float(iv.ci_low),
        ci_high=float(iv.ci_high), p=float(iv.p_value), method=choice.method, df=iv.df,
        reason=choice.reason, flag=choice.flag, alpha=float(alpha), n_treated_clusters=G1,
        n_clusters=G, description=iv.description, B=iv.B if is_boot else None,
        seed=int(seed) if is_boot else None)


def headline_pretest(gt, *, B: int = 999, seed: int = 0) -> dict | None:
    """The pre-test of parallel trends the calibration table supports (:data:`PRETEST`) for an
    att_gt result; att_gt's own clustered Wald test over-rejects with few treated partnerships."""
    from evaluation.inference.pretest import pretest_bootstrap

    out = pretest_bootstrap(gt, statistic=PRETEST, B=B, seed=seed)
    if out is not None:
        out["reason"] = (f"the calibration table ({SOURCE}) shows this test holding its 5% size "
                         "where att_gt's clustered Wald test rejects far too often")
    return out
