"""Stage: diagnostics and sensitivity of the primary estimate, each refitted with the study's one
specification: pre-trend tests, Goodman-Bacon, HonestDiD, placebo joining dates, few-cluster
inference."""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
import pandas as pd
from scipy import stats

from evaluation.diagnostics.honest_did import honest_did
from evaluation.diagnostics.placebo import placebo_dates
from evaluation.errors import InputError
from evaluation.estimators.bacon import bacon_decomposition
from evaluation.estimators.callaway_santanna import aggte, att_gt
from evaluation.estimators.results import EstimatorResult
from evaluation.inference.headline import headline_pretest
from evaluation.inference.wild_bootstrap import SMALL_CLUSTER_THRESHOLD, att_wild_bootstrap, robust_inference
from evaluation.numbers import json_value
from evaluation.spec import EstimationSpec
from evaluation.stages.cohort import StudyData
from evaluation.study import Study

def pretrend_test(test: str, statistic: float, distribution: str, df: list, p_value: float,
                  note: str | None = None, not_for_verdict: str | None = None) -> dict:
    """The one shape of every pre-trend test in result.json (schema 3): the statistic, its
    reference ``distribution`` ("F", "t" or "chi2") with ``df`` ([df1, df2] for F, df2 None
    meaning infinite; [df] for t and chi2), the p-value, and whether the verdict uses it
    (``for_verdict`` is set by :func:`pretrend_tests`; ``not_for_verdict`` says why a test never is)."""
    return {"test": test, "statistic": float(statistic), "distribution": distribution,
            "df": [None if d is None else (int(d) if float(d).is_integer() else float(d)) for d in df],
            "p_value": float(p_value), "for_verdict": False, "note": note, "not_for_verdict": not_for_verdict}


def event_study_pretrend(res: EstimatorResult) -> dict | None:
    """Joint Wald test that all leads (e <= -2) are zero, F with (q, G - 1) df as fixest's wald()."""
    vcov = getattr(res, "vcov", None)
    if vcov is None or res.event_time is None:
        return None
    leads = [f"e={int(e)}" for e in res.event_time["e"] if e < -1 and f"e={int(e)}" in vcov.index]
    if not leads:
        return None
    b = res.coefficients.loc[leads, "estimate"].to_numpy()
    V = vcov.loc[leads, leads].to_numpy()
    q = len(leads)
    W = float(b @ np.linalg.solve(V, b))
    df2 = res.variance.df
    F = W / q
    p = float(stats.f.sf(F, q, df2)) if df2 else float(stats.chi2.sf(W, q))
    return pretrend_test("joint Wald test that all pre-joining coefficients are zero", F, "F", [q, df2 or None], p)


def sensitivity(study: Study, spec: EstimationSpec, data: StudyData, panel: pd.DataFrame,
                ests: dict[str, EstimatorResult], executor: Executor | None = None) -> dict:
    """HonestDiD bounds, placebo joining dates and, with few clusters, the wild cluster bootstrap,
    every one refitted with the study's one specification (weights, clustering, window, alpha, seed)."""
    out: dict = {}
    hd = honest_did_of_primary(spec, panel, ests)
    if hd is not None:
        out["honest_did"] = hd
    out["placebo_dates"] = placebo_dates(study, data, spec=spec, executor=executor).to_dict()
    cluster = spec.cluster_column
    n_clusters = int(panel[cluster].nunique())
    n_treated = int(panel.loc[panel["cohort"] > 0, cluster].nunique())
    # few clusters in all, or few treated ones (MacKinnon & Webb 2017), make CRV1 unreliable
    if min(n_clusters, n_treated) < SMALL_CLUSTER_THRESHOLD:
        small = {"n_clusters": n_clusters, "n_treated_clusters": n_treated, "threshold": SMALL_CLUSTER_THRESHOLD}
        treated = panel.assign(D=((panel["cohort"] > 0) & (panel["year"] >= panel["cohort"])).astype(float))
        # with enough clusters in all but few partnerships, force the bootstrap (its own switch counts all)
        threshold = SMALL_CLUSTER_THRESHOLD if n_clusters < SMALL_CLUSTER_THRESHOLD else n_clusters + 1
        small["reason"] = (f"{n_clusters} clusters in all" if n_clusters < SMALL_CLUSTER_THRESHOLD else
                           f"only {n_treated} treated clusters (partnerships) among {n_clusters}")
        small["twfe"] = robust_inference(treated, "y ~ D | urn + year", "D", cluster=cluster,
                                         seed=spec.seed, alpha=spec.alpha, threshold=threshold,
                                         aweights=spec.weights_for(panel)).to_dict()
        cs = ests.get("callaway_santanna")
        if cs is not None and getattr(cs, "source", None) is not None:
            small["callaway_santanna"] = att_wild_bootstrap(cs.source, "simple", max_e=spec.window[1],
                                                            seed=spec.seed, alpha=spec.alpha).to_dict()
        out["small_cluster_inference"] = small
    return out


def honest_did_of_primary(spec: EstimationSpec, panel: pd.DataFrame, ests: dict[str, EstimatorResult]) -> dict | None:
    """Rambachan & Roth (2023) bounds on the primary estimator's event study (effect at e = 0).

    Callaway-Sant'Anna: its event study with a universal base period (e = -1), as HonestDiD's
    ``honest_did.AGGTEobj`` requires, same weights and clustering (the post-joining ATT(g,t) are
    those of the headline fit); other primaries: the TWFE event study, and the result says so."""
    lo, hi = spec.window
    if spec.primary == "callaway_santanna":
        gt = att_gt(panel, control=spec.control_group, base_period="universal", alpha=spec.alpha,
                    **spec.cs_options(), **spec.estimator_kwargs(panel))
        es = aggte(gt, "dynamic", min_e=lo, max_e=hi)
        source, unit_cluster = "callaway_santanna", gt.unit_cluster
        rows = es.event_time
        note = ("Callaway & Sant'Anna event study with a universal base period (e = -1), the primary "
                "estimator's weights and clustering")
    else:
        es = ests.get("event_study")
        if es is None:
            return None
        source, unit_cluster, rows = "event_study", None, es.event_time
        note = (f"the primary estimator ({spec.primary}) has no event-study covariance HonestDiD can use: "
                "bounds are for the TWFE event study")
    if rows is None or not (rows["e"] < -1).any() or not (rows["e"] == 0).any():
        return None
    se0 = float(rows.loc[rows["e"] == 0, "se"].iloc[0])
    # smoothness bounds M in outcome units, on a grid scaled by the first post-period SE
    hd = honest_did(es, m=tuple(round(k * se0, 10) for k in (0, 0.25, 0.5, 1.0)), alpha=spec.alpha,
                    breakdown=False, unit_cluster=unit_cluster)
    return {**hd.to_dict(), "estimator": source, "target": "the effect in the first year after joining (e = 0)",
            "note": note}


def _bacon(panel: pd.DataFrame) -> dict | None:
    """Goodman-Bacon decomposition of the static TWFE on the balanced part of the panel."""
    years = panel["year"].nunique()
    complete = panel.groupby("urn")["year"].transform("size") == years
    sub = panel[complete]
    if sub["urn"].nunique() < 3 or (sub["cohort"] > 0).sum() == 0:
        return None
    try:
        res = bacon_decomposition(sub, y="y", unit="urn", time="year", cohort="cohort")
    except InputError as err:
        return {"note": f"not computed: {err.render()}"}
    by = res.by_type()
    return {"note": f"static TWFE on the {sub['urn'].nunique()} schools observed in every year",
            "twfe": float(res.twfe), "by_type": [{k: json_value(v) for k, v in r.items()} for r in by.reset_index().to_dict("records")]}


def balance_summary(bal: pd.DataFrame, threshold: float) -> dict:
    """The largest standardised mean difference after matching and the covariates above the threshold."""
    return {"max_abs_smd_after": float(bal["smd_after"].abs().max()), "threshold": threshold,
            "covariates_above_threshold": [str(c) for c in bal.index[bal["smd_after"].abs() > threshold]]}


def pretrend_tests(spec: EstimationSpec, ests: dict[str, EstimatorResult]) -> dict:
    """Every estimator's test of no pre-joining effects, in one shape (:func:`pretrend_test`);
    the one the verdict reads (the primary estimator's, else the TWFE event study's) is flagged."""
    out: dict = {}
    if "event_study" in ests:
        out["event_study"] = event_study_pretrend(ests["event_study"])
    if "callaway_santanna" in ests:
        cs = ests["callaway_santanna"]
        wald = cs.details.get("pretest")
        if wald:
            out["callaway_santanna_wald"] = pretrend_test(
                "Wald test that every pre-joining ATT(g,t) is zero (R did's pre-test, clustered)",
                wald["W"], "chi2", [wald["df"]], wald["p_value"],
                note=f"cluster sums over {wald['n_clusters']} clusters" if wald.get("n_clusters") else None,
                not_for_verdict="with few partnerships per cohort it rejects true parallel trends far too often "
                                "(benchmarks/coverage_table.md: 17% at 100 partnerships, 62% at 30)")
        calibrated = headline_pretest(cs.source, seed=spec.seed) if cs.source is not None else None
        if calibrated:
            out["callaway_santanna"] = pretrend_test(calibrated["test"], calibrated["statistic"], "t",
                                                     [calibrated["df"]], calibrated["p_value"],
                                                     note=calibrated.get("reason"))
    if "imputation" in ests:
        t = ests["imputation"].details.get("pretrend_test")
        out["imputation"] = None if t is None else pretrend_test(
            f"BJS (2024) Test 1: {t['leads']} pre-joining leads jointly zero on untreated observations",
            t["F"], "F", [t["df1"], t["df2"]], t["p_value"], note=f"variance: {t['variance']}")
    if "chaisemartin_dhaultfoeuille" in ests:
        j = ests["chaisemartin_dhaultfoeuille"].details.get("placebo_joint_test")
        out["chaisemartin_dhaultfoeuille"] = None if j is None else pretrend_test(
            f"Wald test that the {j['df']} placebo(s) (long differences before the year before joining) are "
            "jointly zero (did_multiplegt_dyn's joint placebo test)", j["statistic"], "chi2", [j["df"]], j["p"],
            note="cohort-recentred influence-function variance, clustered",
            not_for_verdict="its size with few partnerships has not been measured (the calibration table, "
                            "benchmarks/coverage_table.md, does not cover this estimator)")
    # the primary estimator's test, unless it is not one the verdict may use: then the TWFE event study's
    name = spec.primary if out.get(spec.primary) and not out[spec.primary]["not_for_verdict"] else "event_study"
    if out.get(name) and not out[name]["not_for_verdict"]:
        out[name]["for_verdict"] = True
    return out


def diagnose(study: Study, spec: EstimationSpec, data: StudyData, panel: pd.DataFrame,
             ests: dict[str, EstimatorResult], bal: pd.DataFrame, smd_threshold: float,
             executor: Executor | None = None) -> dict:
    """The diagnostics block of result.json."""
    diagnostics = {"pretrend": pretrend_tests(spec, ests), "balance": balance_summary(bal, smd_threshold)}
    diagnostics["bacon"] = _bacon(panel)
    diagnostics.update(sensitivity(study, spec, data, panel, ests, executor))
    return diagnostics
