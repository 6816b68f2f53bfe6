"""Stage: subgroup effects (``[heterogeneity] by = [...]``) and a test that they differ.

For each characteristic the study names, the analysed partnership schools (those in the matched
panel) are split into subgroups; a school whose characteristic is unknown is in none of them.
Each subgroup is estimated with the study's primary estimator and its one ``EstimationSpec``
(same window, weights rule, clustering, comparison group, alpha): the subgroup's partnership
schools keep the comparison schools matched to them, whose MatchIt weights are recomputed from
the matching's match matrix restricted to those schools (``_weights_from_matrix``: the same rule
the matching used), and the panel is rebuilt by ``stages.panel.analysis_panel`` over the study's
calendar years. A subgroup holding every analysed partnership school therefore reproduces the
primary estimate exactly. Each subgroup's interval is the primary estimator's own (its variance
convention under the study's clustering), not the headline's calibrated interval.

Characteristics (``evaluation.study.HETEROGENEITY_CHARACTERISTICS``):

- ``trust_size``: member schools of the partnership on the school's joining date (memberships
  joined on or before that date and not yet left, the school included), in fixed bins
  1-5, 6-15 and 16 or more schools (fixed so that studies can be compared);
- ``sponsor_led``: the partnership's ``sponsor_led`` flag (unknown when missing);
- ``urban``: the school's ``urban_rural`` (GIAS);
- ``phase``: the school's phase (a study has one phase, so this only confirms it);
- ``distance_to_partner``: straight-line distance from the school's easting/northing to the
  nearest other school of the same partnership on its joining date (the same membership rule as
  ``trust_size``), in bins under 5 km, 5-20 km, 20 km or more; unknown without coordinates or
  without a partner school on that date;
- ``role``: lead or member school; ``partnership_type``; ``region``.

A subgroup of fewer partnership schools than the study's disclosure threshold is not estimated
(its effect could not be published) and is left out of the test.

The test of difference. The subgroup estimates are not independent: subgroups share comparison
schools (a comparison school matched to schools of two subgroups is in both fits) and, for a
characteristic that varies within partnerships, partnerships. So their covariance is not zero
and a chi-square Wald test with a diagonal covariance would be wrong. The statistic is the Wald
statistic of equality with the subgroups' own standard errors,
``W = sum_k (b_k - b_bar)^2 / se_k^2`` (``b_bar`` the precision-weighted mean), and its null
distribution comes from a permutation of the subgroup labels with partnerships as the units:
when the characteristic is constant within every partnership (trust size, sponsor-led, kind of
partnership, often region) whole partnerships' labels are permuted among partnerships; when it
varies within partnerships (e.g. urban/rural) labels are permuted among the schools of each
partnership (partnerships as strata), which compares schools of the same partnership and keeps
each partnership's mix; partnerships whose schools all share one label then add nothing to the
reference distribution, so a difference that lies between partnerships is tested with little
power (the chapter says so when few partnerships can be relabelled). Every relabelling re-estimates every subgroup with the same comparison
schools, so the shared schools' covariance is in the reference distribution. The p-value is
``(1 + #{W* >= W}) / (1 + B)`` over the ``B`` relabellings that could be estimated; the seed is
the study's. ``n_units`` counts the partnerships a relabelling can change (all of them, or those
whose schools fall in different subgroups); with fewer than two there is no test. With few such
partnerships the reference distribution is coarse and the test has little power: a p-value above
alpha then says little.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from evaluation.errors import InputError
from evaluation.estimators import registry
from evaluation.matching import _weights_from_matrix
from evaluation.spec import EstimationSpec
from evaluation.stages.cohort import Cohort, StudyData
from evaluation.stages.match import MatchedCohort
from evaluation.stages.panel import analysis_panel
from evaluation.study import HETEROGENEITY_CHARACTERISTICS, Study

#: (from, up to but not including, words); None: no upper end.
TRUST_SIZE_BINS = ((1, 6, "1-5 schools"), (6, 16, "6-15 schools"), (16, None, "16 or more schools"))
DISTANCE_BINS_KM = ((0.0, 5.0, "under 5 km"), (5.0, 20.0, "5-20 km"), (20.0, None, "20 km or more"))

TEST_WORDS = ("permutation test of equal subgroup effects: the Wald statistic with the subgroups' own "
              "standard errors, referred to its distribution over random relabellings with partnerships as "
              "the units ({how}); every relabelling re-estimates every subgroup with the same comparison "
              "schools, so the covariance from shared comparison schools and partnerships is accounted for")
HOW = {"partnership": "whole partnerships' labels permuted among partnerships",
       "within_partnership": "labels permuted among the schools of each partnership"}


def heterogeneity(study: Study, spec: EstimationSpec, data: StudyData, cohort: Cohort,
                  matched: list[MatchedCohort], panel: pd.DataFrame) -> dict:
    """The ``heterogeneity`` block of a study result (see the module docstring)."""
    het = study.heterogeneity
    analysed = cohort.treated[cohort.treated["urn"].isin(panel.loc[panel["cohort"] > 0, "urn"])]
    analysed = analysed.sort_values("urn", kind="stable").reset_index(drop=True)
    labels_of = characteristics(data, analysed)
    out = []
    for name in het.by:
        rng = np.random.default_rng([study.inference.seed, *map(ord, name)])  # not on the order of `by`
        out.append(_one(study, spec, data, cohort, matched, analysed, name, labels_of[name], rng))
    return {"estimator": spec.primary, "cluster": spec.cluster, "alpha": spec.alpha,
            "permutations": het.permutations, "min_schools": study.disclosure.threshold,
            "method": ("each subgroup's partnership schools with the comparison schools matched to them, "
                       f"re-estimated by the primary estimator ({spec.primary}) with the study's window, "
                       f"weights and clustering ({spec.cluster}); intervals are the estimator's own"),
            "characteristics": out}


# ------------------------------------------------------------------------------ characteristics


def _active_on(m: pd.DataFrame, day) -> pd.DataFrame:
    """One partnership's memberships that had begun and not ended on ``day``."""
    return m[(m["joined"] <= day) & (m["left"].isna() | (m["left"] > day))]


def _bin(value: float, bins) -> tuple[str, str] | tuple[None, None]:
    if value is None or not np.isfinite(value):
        return None, None
    for k, (lo, hi, words) in enumerate(bins):
        if value >= lo and (hi is None or value < hi):
            return f"{k + 1}", words
    return None, None


def characteristics(data: StudyData, treated: pd.DataFrame) -> dict[str, list[tuple[str | None, str | None]]]:
    """Per characteristic, (key, words) of each treated school's subgroup (None: unknown), row-aligned."""
    schools = data.schools.set_index("urn")
    mem = data.memberships.copy()
    mem["joined"] = pd.to_datetime(mem["joined"])
    mem["left"] = pd.to_datetime(mem["left"])
    sponsor = data.partnerships.set_index("partnership_id")["sponsor_led"]
    by_partnership = {pid: g for pid, g in mem[mem["partnership_id"].isin(treated["partnership_id"])]
                      .groupby("partnership_id")}
    size, dist = [], []
    for row in treated.itertuples(index=False):
        day = pd.Timestamp(row.joined)
        active = _active_on(by_partnership.get(row.partnership_id, mem.iloc[:0]), day)
        members = set(active["urn"]) | {row.urn}
        size.append(_bin(float(len(members)), TRUST_SIZE_BINS))
        others = [u for u in sorted(members) if u != row.urn and u in schools.index]
        d = np.nan
        if others and row.urn in schools.index:
            here = schools.loc[row.urn, ["easting", "northing"]].to_numpy(dtype=float)
            there = schools.loc[others, ["easting", "northing"]].to_numpy(dtype=float)
            with np.errstate(invalid="ignore"):
                d = np.nanmin(np.hypot(*(there - here).T)) / 1000.0 if np.isfinite(there).all(axis=1).any() else np.nan
        dist.append(_bin(d, DISTANCE_BINS_KM))

    def cat(values, words=lambda v: str(v)):
        return [(None, None) if v is None or (isinstance(v, float) and np.isnan(v)) or pd.isna(v)
                else (str(v), words(v)) for v in values]

    sp = treated["partnership_id"].map(sponsor)
    return {
        "trust_size": size,
        "distance_to_partner": dist,
        "sponsor_led": cat([None if pd.isna(v) else bool(v) for v in sp],
                           lambda v: "sponsor-led" if v else "not sponsor-led"),
        "urban": cat(list(treated["urban_rural"]), lambda v: f"{v} schools"),
        "phase": cat(list(treated["urn"].map(schools["phase"])), lambda v: f"{v} schools"),
        "role": cat(list(treated["role"]), lambda v: f"{v} schools"),
        "partnership_type": cat(list(treated["partnership_type"]), lambda v: str(v).replace("_", " ")),
        "region": cat(list(treated["region"])),
    }


# ------------------------------------------------------------------------------ estimation


def subgroup_matched(matched: list[MatchedCohort], keep: set[int]) -> list[MatchedCohort]:
    """The matched cohorts restricted to the partnership schools in ``keep`` and the comparison
    schools matched to them, with the MatchIt weights recomputed by the matching's own rule."""
    out = []
    for m in matched:
        t = m.frame["treated"].to_numpy() == 1
        kept = m.frame["urn"].isin(keep).to_numpy()
        if m.result is None:
            w = m.weights.copy()
            w[t & ~kept] = 0.0
            out.append(replace(m, weights=w))
            continue
        mm = m.result.match_matrix.copy()
        mm[~kept[np.flatnonzero(m.result.treat == 1)]] = -1
        w = _weights_from_matrix(mm, m.result.treat)
        out.append(replace(m, result=replace(m.result, match_matrix=mm, weights=w), weights=w))
    return out


def fit_subgroup(study: Study, spec: EstimationSpec, data: StudyData, cohort: Cohort,
                 matched: list[MatchedCohort], keep: set[int]):
    """(EstimatorResult, panel) of the primary estimator on one subgroup."""
    panel = analysis_panel(study, data, cohort, subgroup_matched(matched, keep))
    if not (panel["cohort"] > 0).any():
        raise InputError("no partnership school of the subgroup has outcomes in the window")
    return registry.fit(spec.primary, panel, spec), panel


def wald_equal(est: np.ndarray, se: np.ndarray) -> float:
    """Wald statistic of equal effects with a diagonal covariance (the permutation supplies the rest)."""
    w = 1.0 / se**2
    mean = float(np.sum(w * est) / np.sum(w))
    return float(np.sum(w * (est - mean) ** 2))


def _estimates(study, spec, data, cohort, matched, urns, labels, keys):
    est, se = [], []
    for k in keys:
        res, _ = fit_subgroup(study, spec, data, cohort, matched, set(urns[labels == k]))
        ov = res.overall
        if ov is None or not np.isfinite(ov.se) or ov.se <= 0:
            raise InputError("no finite standard error")
        est.append(ov.estimate)
        se.append(ov.se)
    return np.array(est), np.array(se)


def _one(study, spec, data, cohort, matched, analysed, name, labels, rng) -> dict:
    threshold = study.disclosure.threshold
    keys = np.array([k if k is not None else "" for k, _ in labels], dtype=object)
    words = {k: w for k, w in labels if k is not None}
    urns = analysed["urn"].to_numpy()
    pids = analysed["partnership_id"].astype(str).to_numpy()
    known = keys != ""
    block = {"name": name, "label": HETEROGENEITY_CHARACTERISTICS[name],
             "n_unknown": int((~known).sum()), "subgroups": [], "test": None, "note": None}
    estimated: list[str] = []
    for k in sorted(words, key=lambda x: (not x.isdigit(), int(x) if x.isdigit() else 0, x)):  # bins in order
        in_k = keys == k
        row = {"key": k, "label": words[k], "n_schools": int(in_k.sum()),
               "n_partnerships": int(len(set(pids[in_k]))), "estimate": None, "se": None, "ci_low": None,
               "ci_high": None, "p": None, "n_comparison": None, "withheld": None}
        if in_k.sum() < threshold:
            row["withheld"] = f"fewer than {threshold} partnership schools: not estimated"
        else:
            try:
                res, panel = fit_subgroup(study, spec, data, cohort, matched, set(urns[in_k]))
                ov = res.overall
                if ov is None or not np.isfinite(ov.se):
                    raise InputError("the estimator gave no overall effect")
                row.update(estimate=float(ov.estimate), se=float(ov.se), ci_low=float(ov.ci_low),
                           ci_high=float(ov.ci_high), p=float(ov.p_value) if np.isfinite(ov.p_value) else None,
                           n_comparison=int(panel.loc[panel["cohort"] == 0, "urn"].nunique()))
                estimated.append(k)
            except InputError as err:
                row["withheld"] = f"could not be estimated: {err.render()}"
        block["subgroups"].append(row)
    if not words:
        block["note"] = "not known for any analysed partnership school, so there is nothing to compare"
        return block
    if len(words) < 2:
        block["note"] = ("every analysed partnership school with a known value is in one subgroup, so there "
                         "is nothing to compare")
        return block
    if len(estimated) < 2:
        block["note"] = "fewer than two subgroups could be estimated, so there is no test of a difference"
        return block
    block["test"] = _permutation_test(study, spec, data, cohort, matched, analysed, keys, estimated,
                                      block["subgroups"], rng)
    if block["test"] is None:
        block["note"] = ("fewer than two partnerships could be relabelled (the subgroups follow the partnerships "
                         "too closely), so there is no test of a difference")
    return block


def _permutation_test(study, spec, data, cohort, matched, analysed, keys, estimated, rows, rng) -> dict | None:
    by_key = {r["key"]: r for r in rows}
    est = np.array([by_key[k]["estimate"] for k in estimated])
    se = np.array([by_key[k]["se"] for k in estimated])
    observed = wald_equal(est, se)
    use = np.isin(keys, estimated)  # the schools of the estimated subgroups are relabelled among themselves
    urns = analysed["urn"].to_numpy()[use]
    pids = analysed["partnership_id"].astype(str).to_numpy()[use]
    lab = keys[use]
    one_label = pd.Series(lab).groupby(pids).nunique().max() == 1
    unit = "partnership" if one_label else "within_partnership"
    groups = pd.Series(np.arange(len(lab))).groupby(pids).indices  # partnership -> row positions
    order = sorted(groups)
    # partnerships a relabelling can change: all of them, or those whose schools carry different labels
    n_units = len(order) if unit == "partnership" else sum(len(set(lab[groups[p]])) > 1 for p in order)
    if n_units < 2:
        return None
    draws, failed = [], 0
    for _ in range(study.heterogeneity.permutations):
        new = lab.copy()
        if unit == "partnership":
            first = np.array([lab[groups[p][0]] for p in order], dtype=object)
            shuffled = rng.permutation(first)
            for p, v in zip(order, shuffled):
                new[groups[p]] = v
        else:
            for p in order:
                idx = groups[p]
                new[idx] = lab[idx][rng.permutation(len(idx))]
        try:
            e, s = _estimates(study, spec, data, cohort, matched, urns, new, estimated)
        except InputError:
            failed += 1
            continue
        draws.append(wald_equal(e, s))
    draws = np.array(draws)
    p = float((1 + np.sum(draws >= observed - 1e-12 * max(1.0, abs(observed)))) / (1 + len(draws)))
    return {"statistic": observed, "df": len(estimated) - 1, "p_value": p, "method": "permutation",
            "unit": unit, "n_units": int(n_units), "description": TEST_WORDS.format(how=HOW[unit]),
            "permutations": int(len(draws)),
            "failed": failed, "subgroups": list(estimated)}
