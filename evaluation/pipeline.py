"""Run a study: cohort -> per-cohort matching -> matched panel -> estimators -> result.

Pure functions of the study definition and the tables (``StudyData``); reading the
store and writing ``results/<id>/`` happen at the edges (``evaluation/report``,
``evaluation/cli``). The returned ``StudyRun.result`` is the content of result.json
(schema: ``evaluation.result_schema``), deterministic for the same inputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from evaluation import __version__
from evaluation.cohorts import Cohort, StudyData, build_cohort, matching_frame
from evaluation.data.schema import load_schema
from evaluation.effects import effect_size as effect_size_of, security_rating, verdict
from evaluation.errors import InputError, problem
from evaluation.estimators.results import EstimatorResult
from evaluation.estimators import registry
from evaluation.inference.headline import headline_interval, headline_pretest
from evaluation.matching import MatchResult, balance, family_of_schools, match
from evaluation.spec import CLUSTER_COLUMNS, CLUSTER_WORDS, EstimationSpec, build_spec
from evaluation.study import Study

RESULT_SCHEMA_VERSION = 2
SMD_THRESHOLD = 0.1


@dataclass
class MatchedCohort:
    g: int
    frame: pd.DataFrame  # the matching frame (one row per candidate school)
    result: MatchResult | None  # None when matching.method == "none"
    weights: np.ndarray
    counts: dict


@dataclass
class StudyRun:
    result: dict
    panel: pd.DataFrame
    matched: list[MatchedCohort]
    cohort: Cohort
    estimators: dict[str, EstimatorResult] = field(default_factory=dict)
    balance: pd.DataFrame | None = None
    schools: pd.DataFrame | None = None  # analysed schools: urn, name, group, easting, northing, la_code, region


# ---------------------------------------------------------------------------- matching


def match_cohorts(study: Study, data: StudyData, cohort: Cohort, say: Callable[[str], None]) -> list[MatchedCohort]:
    """Match each joining cohort to pool schools on its own pre-years."""
    spec = study.matching
    out = []
    for g in cohort.cohorts:
        frame, counts = matching_frame(study, data, cohort, g)
        n_t = int(frame["treated"].sum())
        n_c = int((frame["treated"] == 0).sum())
        say(f"  cohort {g}: {n_t} partnership schools, {n_c} candidate comparison schools")
        if n_t == 0:
            out.append(MatchedCohort(g, frame, None, np.zeros(len(frame)), counts))
            continue
        if n_c == 0:
            raise InputError(problem(f"no comparison schools with enough pre-{g} data for cohort {g}",
                                     column="comparison.pool"))
        covs = list(spec.covariates)
        exact = list(spec.exact) or None
        if spec.method == "none":
            res = None
            weights = np.ones(len(frame))
        elif spec.method == "family":
            res = family_of_schools(frame, "treated", covs, k=spec.family_size, id="urn", exact=exact)
            weights = res.weights
        else:
            res = match(frame, "treated", covs, id="urn", exact=exact,
                        distance="mahalanobis" if spec.method == "mahalanobis" else "logit",
                        ratio=spec.ratio, replace=spec.replace,
                        caliper=spec.caliper if spec.method == "nearest" else None)
            weights = res.weights
        counts["treated_unmatched"] = int(((frame["treated"] == 1) & (weights == 0)).sum())
        out.append(MatchedCohort(g, frame, res, np.asarray(weights, dtype=float), counts))
    return out


def pooled_balance(study: Study, matched: list[MatchedCohort]) -> pd.DataFrame:
    """Balance over all cohorts together, before and after matching (MatchIt definitions)."""
    frames = [m.frame.assign(_w=m.weights) for m in matched if m.frame["treated"].sum() > 0]
    frame = pd.concat(frames, ignore_index=True)
    covs = list(study.matching.covariates)
    before = balance(frame, "treated", covs)
    after = balance(frame, "treated", covs, weights=frame["_w"].to_numpy())
    table = pd.DataFrame({
        "mean_treated": after["Means Treated"], "mean_comparison_before": before["Means Control"],
        "mean_comparison_after": after["Means Control"], "smd_before": before["Std. Mean Diff."],
        "smd_after": after["Std. Mean Diff."], "variance_ratio_before": before["Var. Ratio"],
        "variance_ratio_after": after["Var. Ratio"],
    })
    table.index.name = "covariate"
    return table


# ---------------------------------------------------------------------------- panel


def matched_sets(cohort: Cohort, matched: list[MatchedCohort]) -> dict[int, str]:
    """Cluster label per school for matched-set clustering (Abadie & Spiess 2022), merged with
    partnerships: the connected components of the graph linking each partnership school to its
    partnership and to the comparison schools matched to it. A comparison school matched in
    several cohorts (or to several schools, with replacement) links those sets into one cluster.
    Without matching (method "none") there are no sets: partnership clusters are used."""
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb, key=str)] = min(ra, rb, key=str)

    pid_of = cohort.treated.set_index("urn")["partnership_id"]
    for m in matched:
        if m.result is None:
            continue
        urns = m.frame["urn"].to_numpy()
        treated_rows = np.flatnonzero(m.frame["treated"].to_numpy() == 1)
        for i, row in zip(treated_rows, m.result.match_matrix):
            if m.weights[i] <= 0:
                continue
            u = int(urns[i])
            union(("S", u), ("P", str(pid_of.get(u))))
            for j in row[row >= 0]:
                union(("S", u), ("S", int(urns[j])))
    labels = {}
    for node in list(parent):
        if node[0] == "S":
            root = find(node)
            labels[node[1]] = f"M:{root[0]}:{root[1]}"
    return labels


def analysis_panel(study: Study, data: StudyData, cohort: Cohort, matched: list[MatchedCohort]) -> pd.DataFrame:
    """The matched panel: matched treated schools and the union of their comparison schools,
    over the calendar years the cohorts' windows span, rows with a published outcome only.

    Columns: urn, year, y, cohort (first exposed year; 0 for comparison schools), weight
    (1 for treated; summed MatchIt weights for comparison schools), cluster."""
    lo, hi = study.outcome.window
    treated_w: dict[int, float] = {}
    control_w: dict[int, float] = {}
    for m in matched:
        for urn, t, w in zip(m.frame["urn"], m.frame["treated"], m.weights):
            if w <= 0:
                continue
            if t == 1:
                treated_w[int(urn)] = 1.0
            else:
                control_w[int(urn)] = control_w.get(int(urn), 0.0) + float(w)
    g_of = cohort.treated.set_index("urn")["g"]
    pid_of = cohort.treated.set_index("urn")["partnership_id"]
    first = min(cohort.cohorts) + lo
    last = max(cohort.cohorts) + hi
    units = pd.DataFrame({"urn": list(treated_w) + list(control_w),
                          "weight": list(treated_w.values()) + list(control_w.values())})
    units["cohort"] = units["urn"].map(g_of).fillna(0).astype("int64")
    units.loc[units["urn"].isin(control_w), "cohort"] = 0
    treated = units["cohort"] > 0
    units["cluster_partnership"] = np.where(treated, "P:" + units["urn"].map(pid_of).astype(str),
                                            "S:" + units["urn"].astype(str))
    units["cluster_school"] = "S:" + units["urn"].astype(str)
    units["cluster_matched_set"] = units["urn"].map(matched_sets(cohort, matched)).fillna(
        units["cluster_partnership"])
    units["cluster"] = units[CLUSTER_COLUMNS[study.inference.cluster]]
    sy = data.school_years
    rows = sy.loc[sy["urn"].isin(units["urn"]) & sy["year"].between(first, last),
                  ["urn", "year", study.outcome.name]].rename(columns={study.outcome.name: "y"})
    rows = rows[rows["y"].notna()]
    panel = rows.merge(units, on="urn", how="left")
    panel = panel.astype({"urn": "int64", "year": "int64", "y": "float64"})
    return panel.sort_values(["urn", "year"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------- estimators


def run_estimators(spec: EstimationSpec, panel: pd.DataFrame, say: Callable[[str], None],
                   skipped: dict[str, str] | None = None) -> dict[str, EstimatorResult]:
    """Every estimator the spec lists, on the matched panel, with its weights and clustering.

    A secondary estimator the design cannot support (an InputError, e.g. leave-out variance
    with one partnership in a cohort) is left out and its reason put in ``skipped``; the
    primary estimator must succeed."""
    skipped = {} if skipped is None else skipped
    out: dict[str, EstimatorResult] = {}
    for name in spec.estimators:
        say(f"  {name}")
        if name != spec.primary:
            try:
                out[name] = registry.fit(name, panel, spec)
            except InputError as err:  # this design cannot support it: say why, keep the others
                say(f"    not computed: {err.render()}")
                skipped[name] = err.render()
            continue
        out[name] = registry.fit(name, panel, spec)
    return out


def headline_of(spec: EstimationSpec, panel: pd.DataFrame, primary: EstimatorResult) -> dict:
    """The primary estimate with the interval the calibration table supports for this design
    (``evaluation.inference.headline``): the same point estimate, weights and clustering."""
    kw: dict = {"columns": {"cluster": spec.cluster_column}, "alpha": spec.alpha, "seed": spec.seed}
    if spec.primary == "callaway_santanna":
        kw.update(gt=primary.source, aggte_kwargs={"max_e": spec.window[1]})
    return headline_interval(panel, spec.primary, primary, **kw).to_dict()


def alternative_clusterings(spec: EstimationSpec, panel: pd.DataFrame, primary: EstimatorResult) -> dict:
    """The primary estimate under each clustering the panel carries (same point estimate, same
    weights; only the variance changes), beside the headline's."""
    out = {"headline": spec.cluster, "rows": []}
    treated = panel["cohort"] > 0
    for kind, column in CLUSTER_COLUMNS.items():
        res = primary if kind == spec.cluster else registry.fit(spec.primary, panel, spec, cluster=kind)
        ov = res.overall
        if ov is None:
            continue
        if not np.isclose(ov.estimate, primary.overall.estimate, rtol=1e-9, atol=1e-12):
            raise RuntimeError(f"the {kind}-clustered refit changed the point estimate "
                               f"({ov.estimate!r} vs {primary.overall.estimate!r})")
        out["rows"].append({"clustering": kind, "description": CLUSTER_WORDS[kind],
                            "estimate": float(ov.estimate), "se": float(ov.se), "ci_low": float(ov.ci_low),
                            "ci_high": float(ov.ci_high), "p": _f(ov.p_value),
                            "n_clusters": int(panel[column].nunique()),
                            "n_treated_clusters": int(panel.loc[treated, column].nunique()),
                            "variance": res.variance.to_dict()})
    return out


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
    return {"test": "joint Wald test that all pre-joining coefficients are zero", "statistic": F,
            "df1": q, "df2": df2, "p_value": p}


# ---------------------------------------------------------------------------- truth


def synthetic_truth(study: Study, data: StudyData, cohort: Cohort, panel: pd.DataFrame,
                    matched: list[MatchedCohort]) -> dict | None:
    """The planted effect of the studied membership on the analysed treated schools
    (synthetic data only): by event time, and averaged over post-joining school-years
    within the window (the estimand of the "simple" aggregation)."""
    if data.truth is None or data.truth.empty:
        return None
    lo, hi = study.outcome.window
    col = f"effect_{study.outcome.name}"
    treated = cohort.treated[cohort.treated["urn"].isin(panel.loc[panel["cohort"] > 0, "urn"])]
    t = data.truth.merge(treated[["urn", "partnership_id", "g"]], on=["urn", "partnership_id"])
    eff = t.set_index(["urn", "year"])[col].groupby(level=[0, 1]).sum()
    cells = panel[panel["cohort"] > 0][["urn", "year", "cohort"]].copy()
    cells["e"] = cells["year"] - cells["cohort"]
    cells = cells[cells["e"].between(lo, hi)]
    cells["effect"] = [float(eff.get((u, y), 0.0)) for u, y in zip(cells["urn"], cells["year"])]
    by_e = cells.groupby("e")["effect"].mean()
    post = cells[cells["e"] >= 0]
    return {"note": "synthetic data: the effect planted by the generator on the analysed partnership schools",
            "overall": float(post["effect"].mean()),
            "event_time": [{"e": int(e), "effect": float(v)} for e, v in by_e.items()],
            "did_of_all_planted_effects": _did_of_planted(study, data, matched)}


def _matched_long(study: Study, matched: list[MatchedCohort]) -> pd.DataFrame:
    """Matched schools x event times: columns g, urn, treated, w, e, year (= g + e)."""
    lo, hi = study.outcome.window
    parts = [pd.DataFrame({"g": m.g, "urn": m.frame["urn"].to_numpy()[m.weights > 0],
                           "treated": m.frame["treated"].to_numpy()[m.weights > 0],
                           "w": m.weights[m.weights > 0]}) for m in matched]
    units = pd.concat(parts, ignore_index=True)
    es = pd.DataFrame({"e": np.arange(lo, hi + 1)})
    out = units.merge(es, how="cross")
    out["year"] = out["g"] + out["e"]
    return out


def _lookup(series: pd.Series, urn: pd.Series, year: pd.Series, fill=np.nan) -> np.ndarray:
    index = pd.MultiIndex.from_arrays([urn.to_numpy(), year.to_numpy()])
    return series.reindex(index, fill_value=fill).to_numpy(dtype=float)


def _did_of_planted(study: Study, data: StudyData, matched: list[MatchedCohort]) -> list[dict]:
    """What a DiD of the matched schools targets given every planted effect (the studied
    membership and any other memberships of treated and comparison schools): by event time,
    the treated schools' change in total planted effect since e = -1 minus the matched
    comparison schools' (weighted) change over the same years, averaged over cohorts by
    their numbers of treated schools."""
    col = f"effect_{study.outcome.name}"
    total = data.truth.groupby(["urn", "year"])[col].sum()
    long = _matched_long(study, matched)
    long["change"] = (_lookup(total, long["urn"], long["year"], 0.0)
                      - _lookup(total, long["urn"], long["g"] - 1, 0.0))
    long["tw"] = np.where(long["treated"] == 1, 1.0, long["w"])
    means = (long.assign(x=long["change"] * long["tw"]).groupby(["g", "e", "treated"])[["x", "tw"]].sum())
    means = (means["x"] / means["tw"]).unstack("treated")
    n_treated = long[long["treated"] == 1].groupby(["g", "e"]).size()
    frame = pd.DataFrame({"did": means[1] - means[0], "n": n_treated}).dropna().reset_index()
    out = frame.groupby("e").apply(lambda d: np.average(d["did"], weights=d["n"]), include_groups=False)
    return [{"e": int(e), "effect": float(v)} for e, v in out.items()]


# ---------------------------------------------------------------------------- result


def _estimate_entry(name: str, res: EstimatorResult) -> dict:
    entry = {"estimator": name, "n_obs": int(res.n_obs), "n_units": int(res.n_units),
             "n_clusters": None if res.n_clusters is None else int(res.n_clusters),
             "variance": res.variance.to_dict(), "notes": list(res.notes)}
    if res.overall is not None:
        entry.update(res.overall.to_dict())
    else:
        entry.update({"estimate": None, "se": None, "ci_low": None, "ci_high": None, "p": None})
    return entry


def _event_rows(res: EstimatorResult) -> list[dict]:
    if res.event_time is None:
        return []
    rows = []
    for rec in res.event_time.to_dict("records"):
        rows.append({"e": int(rec["e"]), "estimate": float(rec["estimate"]), "se": float(rec["se"]),
                     "ci_low": float(rec["ci_low"]), "ci_high": float(rec["ci_high"]),
                     "p": float(rec["p_value"]) if "p_value" in rec else None})
    return rows


def trends(study: Study, data: StudyData, matched: list[MatchedCohort]) -> list[dict]:
    """Mean outcome by event time for partnership schools and their matched comparison
    schools (each comparison school aligned on the joining year of the cohort it matched)."""
    sy = data.school_years.set_index(["urn", "year"])[study.outcome.name].astype("float64")
    long = _matched_long(study, matched)
    long["y"] = _lookup(sy, long["urn"], long["year"])
    long = long[long["y"].notna()]
    out = []
    for (t, e), grp in long.groupby(["treated", "e"], sort=True):
        out.append({"group": "partnership" if t == 1 else "comparison", "e": int(e),
                    "mean": float(np.average(grp["y"], weights=grp["w"])), "n_schools": int(len(grp))})
    return out


def effect_size(study: Study, data: StudyData, cohort: Cohort, estimate: float | None, se: float | None) -> dict:
    """The SDs an effect size can use: the between-school SD of the outcome (always, for reference)
    and the pupil-level SD with its source, from the study definition (``[outcome] pupil_sd``) or,
    on synthetic data, the generator's; None when neither gives one (then no months or g)."""
    year = min(cohort.cohorts) - 1
    sy = data.school_years
    phase_urns = data.schools.loc[data.schools["phase"] == study.cohort.phase, "urn"]
    values = sy.loc[(sy["year"] == year) & sy["urn"].isin(phase_urns), study.outcome.name].dropna()
    sd = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    if study.outcome.pupil_sd is not None:
        pupil_sd, source = float(study.outcome.pupil_sd), (f"national pupil-level SD of {study.outcome.name} "
                                                           f"({study.outcome.pupil_sd:g}) stated in the study "
                                                           f"definition: {study.outcome.pupil_sd_source}")
    else:
        pupil_sd, source = pupil_level_sd(study.outcome.name, data)
    return {"sd": sd, "sd_definition": f"between-school SD of {study.outcome.name} among {study.cohort.phase} "
                                        f"schools in {year} (the year before the first cohort joined), "
                                        f"{len(values)} schools",
            "estimate_sd_units": None if estimate is None or not sd > 0 else estimate / sd,
            "se_sd_units": None if se is None or not sd > 0 else se / sd,
            "pupil_sd": pupil_sd, "pupil_sd_source": source}


def pupil_level_sd(outcome: str, data: StudyData) -> tuple[float | None, str | None]:
    """The national pupil-level SD of an outcome, where the data tell it.

    For the synthetic panel (a store with the generator's truth tables) it is the SD the
    generator assumed; real school-level data carry none (a study states it in
    ``[outcome] pupil_sd`` with its source, or results stay in the outcome's own units)."""
    if data.truth is None:
        return None, None
    from evaluation.data.synthetic import OUTCOMES

    sd = next((o.pupil_sd for o in OUTCOMES if o.name == outcome), None)
    if sd is None:
        return None, None
    return float(sd), (f"national pupil-level SD of {outcome} ({sd:g}) as set in the synthetic data "
                       f"generator (evaluation/data/synthetic.py)")


def data_fingerprint(data: StudyData) -> str:
    """SHA-256 over the canonical CSV text of the tables the study read."""
    digest = hashlib.sha256()
    for name in ("schools", "partnerships", "memberships", "school_years"):
        frame = getattr(data, name)
        digest.update(name.encode() + b"\n")
        digest.update(frame.to_csv(index=False, lineterminator="\n").encode())
    return digest.hexdigest()


def run_study(study: Study, data: StudyData, say: Callable[[str], None] = lambda m: None) -> StudyRun:
    """The whole study, from tables to the result.json content."""
    say("[1/6] building the cohort and comparison pool")
    cohort = build_cohort(study, data)
    say(f"  {len(cohort.treated)} partnership schools in cohorts {cohort.cohorts}; pool of {len(cohort.pool)}")
    say("[2/6] matching comparison schools")
    matched = match_cohorts(study, data, cohort, say)
    bal = pooled_balance(study, matched)
    panel = analysis_panel(study, data, cohort, matched)
    if (panel["cohort"] > 0).sum() == 0:
        raise InputError(problem("no partnership school could be matched: relax the caliper or the covariates",
                                 column="matching.caliper", value=study.matching.caliper))
    say(f"[3/6] estimating on {len(panel)} school-years of {panel['urn'].nunique()} schools")
    spec = build_spec(study)
    not_computed: dict[str, str] = {}
    ests = run_estimators(spec, panel, say, not_computed)
    say("[4/6] diagnostics")
    primary = ests[spec.primary]
    diagnostics = {"pretrend": {}, "balance": {
        "max_abs_smd_after": float(bal["smd_after"].abs().max()),
        "threshold": SMD_THRESHOLD,
        "covariates_above_threshold": [str(c) for c in bal.index[bal["smd_after"].abs() > SMD_THRESHOLD]]}}
    if "event_study" in ests:
        diagnostics["pretrend"]["event_study"] = event_study_pretrend(ests["event_study"])
    if "callaway_santanna" in ests:
        cs = ests["callaway_santanna"]
        wald = cs.details.get("pretest")
        if wald:
            diagnostics["pretrend"]["callaway_santanna_wald"] = {
                **wald, "test": "Wald test that every pre-joining ATT(g,t) is zero (R did's pre-test, clustered)",
                "not_for_verdict": "with few partnerships per cohort it rejects true parallel trends far too often "
                                   "(benchmarks/coverage_table.md: 17% at 100 partnerships, 62% at 30)"}
        calibrated = headline_pretest(cs.source, seed=spec.seed) if cs.source is not None else None
        if calibrated:
            diagnostics["pretrend"]["callaway_santanna"] = {
                "test": calibrated["test"], "t": calibrated["statistic"], "df": calibrated["df"],
                "p_value": calibrated["p_value"], "reason": calibrated.get("reason")}
    if "imputation" in ests:
        diagnostics["pretrend"]["imputation"] = ests["imputation"].details.get("pretrend_test")
    diagnostics["bacon"] = _bacon(panel)
    say("[5/6] sensitivity, placebo dates, power")
    diagnostics.update(sensitivity(study, spec, data, panel, ests))
    power = _power(study, data)
    say("[6/6] assembling the result")
    treated_found = len(cohort.treated)
    lost = {"too_few_pre_years": sum(m.counts["treated_few_pre_years"] for m in matched),
            "missing_covariates": sum(m.counts["treated_missing_covariates"] for m in matched),
            "no_match_within_caliper": sum(m.counts.get("treated_unmatched", 0) for m in matched)}
    analysed = panel.loc[panel["cohort"] > 0, "urn"].nunique()
    lost["no_outcome_in_window"] = treated_found - sum(lost.values()) - analysed
    controls = panel.loc[panel["cohort"] == 0, "urn"].nunique()
    counts = {
        "treated_found": treated_found, "treated_analysed": int(analysed), "treated_lost": lost,
        "attrition": (treated_found - analysed) / treated_found,
        "partnerships": int(cohort.treated.loc[cohort.treated["urn"].isin(panel["urn"]), "partnership_id"].nunique()),
        "comparison_pool": int(len(cohort.pool)), "comparison_matched": int(controls),
        "school_years": int(len(panel)), "clusters": int(panel["cluster"].nunique()),
        "cohorts": [{"g": m.g, "treated": int(m.frame["treated"].sum()),
                     "treated_matched": int(((m.frame["treated"] == 1) & (m.weights > 0)).sum()),
                     "comparison_matched": int(((m.frame["treated"] == 0) & (m.weights > 0)).sum())}
                    for m in matched],
    }
    outcome_spec = load_schema("school_years").column(study.outcome.name)
    result = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "study": {"id": study.id, "title": study.title, "question": study.question,
                  "definition": study.model_dump(mode="json")},
        "provenance": {"spec_hash": study.spec_hash, "data_fingerprint": data_fingerprint(data),
                       "package_version": __version__, "seed": study.inference.seed,
                       "command": f"impact run studies/{study.id}.toml"},
        "outcome": {"name": study.outcome.name, "description": outcome_spec.description,
                    "unit": outcome_spec.unit, "window": list(study.outcome.window),
                    "data_years": list(data.years)},
        "counts": counts,
        "matching": {"method": study.matching.method, "covariates": list(study.matching.covariates),
                     "ratio": study.matching.ratio, "replace": study.matching.replace,
                     "caliper": study.matching.caliper, "exact": ["phase", *study.matching.exact],
                     "balance": [{"covariate": str(k), **{c: _f(v) for c, v in row.items()}}
                                 for k, row in bal.iterrows()],
                     "comparison_pool_rule": cohort.notes},
        "primary_estimator": study.estimators.primary,
        "estimates": {name: _estimate_entry(name, res) for name, res in ests.items()},
        "estimators_not_computed": not_computed,
        "clustering": alternative_clusterings(spec, panel, primary),
        "headline": headline_of(spec, panel, primary),
        "event_study": {name: _event_rows(res) for name, res in ests.items() if res.event_time is not None},
        "diagnostics": diagnostics,
        "trends": trends(study, data, matched),
        "effect_size": effect_size(study, data, cohort, primary.overall.estimate if primary.overall else None,
                                   primary.overall.se if primary.overall else None),
        "synthetic_truth": synthetic_truth(study, data, cohort, panel, matched),
        "power": power,
    }
    result["effects"] = effects_block(result)
    result["verdict"] = verdict(result).to_dict()
    units = panel.drop_duplicates("urn")[["urn", "cohort"]]
    schools = units.merge(data.schools[["urn", "name", "easting", "northing", "la_code", "region"]], on="urn")
    schools.insert(1, "group", np.where(schools.pop("cohort") > 0, "partnership", "comparison"))
    return StudyRun(result, panel, matched, cohort, ests, bal, schools.sort_values("urn").reset_index(drop=True))


def effects_block(result: dict) -> dict:
    """g (pupil-level SD) or why it is withheld, months, padlocks with reasons: what the book shows."""
    es = effect_size_of(result)
    sec = security_rating(result)
    return {"g": es.g, "g_ci": None if es.g is None else [es.ci_low, es.ci_high], "g_se": es.se,
            "sd": es.sd, "sd_source": es.sd_label, "months": es.months,
            "months_ci": None if es.months_ci is None else list(es.months_ci), "withheld": es.withheld,
            "padlocks": sec.padlocks, "padlock_reasons": list(sec.reasons),
            "mdes": _f(float(sec.mdes)), "mdes_source": sec.mdes_source}


def _power(study: Study, data: StudyData) -> dict:
    """Planned MDES of the design (the security rating's power criterion)."""
    from evaluation.diagnostics.power import study_power

    return study_power(study, data).to_dict()


def sensitivity(study: Study, spec: EstimationSpec, data: StudyData, panel: pd.DataFrame,
                ests: dict[str, EstimatorResult]) -> dict:
    """HonestDiD bounds, placebo joining dates and, with few clusters, the wild cluster bootstrap,
    every one refitted with the study's one specification (weights, clustering, window, alpha, seed)."""
    from evaluation.diagnostics.placebo import placebo_dates
    from evaluation.inference.wild_bootstrap import SMALL_CLUSTER_THRESHOLD, att_wild_bootstrap, robust_inference

    out: dict = {}
    hd = honest_did_of_primary(spec, panel, ests)
    if hd is not None:
        out["honest_did"] = hd
    out["placebo_dates"] = placebo_dates(study, data, spec=spec).to_dict()
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
    from evaluation.diagnostics.honest_did import honest_did
    from evaluation.estimators.callaway_santanna import aggte, att_gt

    lo, hi = spec.window
    if spec.primary == "callaway_santanna":
        gt = att_gt(panel, control=spec.control_group, base_period="universal", alpha=spec.alpha,
                    **spec.estimator_kwargs(panel))
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
    from evaluation.estimators.bacon import bacon_decomposition

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
            "twfe": float(res.twfe), "by_type": [{k: _f(v) for k, v in r.items()} for r in by.reset_index().to_dict("records")]}


def _f(v):
    if isinstance(v, (np.floating, float)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v
