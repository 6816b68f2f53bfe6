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
- ``role``: lead or member school; ``partnership_type``; ``region``;
- ``founding``: a founding school (joined within 31 days of the partnership's first member) or one
  that joined later;
- ``attribute:NAME``: a school attribute the user imported (``school_attributes``: e.g. coastal),
  its distinct values the subgroups; a school without a value is in none.

A subgroup of fewer partnership schools than the study's disclosure threshold is not estimated
(its effect could not be published) and is left out of the test.

The test of difference. The subgroup estimates are not independent: subgroups share comparison
schools (a comparison school matched to schools of two subgroups is in both fits) and, for a
characteristic that varies within partnerships, partnerships. So their covariance is not zero
and a chi-square Wald test with a diagonal covariance would be wrong. The statistic is the Wald
statistic of equality with the subgroups' own standard errors,
``W = sum_k (b_k - b_bar)^2 / se_k^2`` (``b_bar`` the precision-weighted mean), and its null
distribution comes from a permutation of the subgroup labels in which the schools of one
partnership that share a label move together: when the characteristic is constant within every
partnership (sponsor-led, kind of partnership, often region) whole partnerships' labels are
permuted among partnerships; when it varies within partnerships (trust size and distance on the
joining date, which change as a trust takes on schools; urban/rural) the units are
partnership-by-subgroup blocks (a partnership's small-trust joiners are one block, its
large-trust joiners another), whose labels are permuted among the blocks. A partnership's
schools of one subgroup stay together, so the within-partnership correlation is in the reference
distribution; a partnership split across subgroups can land in one subgroup under relabelling,
which errs on the conservative side. (Permuting labels only among the schools of each
partnership, the earlier rule, keeps each partnership's mix in every relabelling and so cannot
see a difference that lies between partnerships: on the synthetic panel it missed a planted
trust-size difference, W = 9.2 on 2 degrees of freedom, p = 0.61.) Every relabelling
re-estimates every subgroup with the same comparison schools, so the shared schools' covariance
is in the reference distribution. The p-value is
``(1 + #{W* >= W}) / (1 + B)`` over the ``B`` relabellings that could be estimated; the seed is
the study's. ``n_units`` counts the units relabelled (partnerships or partnership-by-subgroup
blocks); with fewer than two there is no test. With few units the reference distribution is coarse and the test has little power: a p-value above
alpha then says little.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from evaluation.data.partnership_attributes import DISTANCE_BINS_KM, TRUST_SIZE_BINS, bin_index, partner_context
from evaluation.errors import InputError
from evaluation.estimators import registry
from evaluation.matching import _weights_from_matrix
from evaluation.spec import EstimationSpec
from evaluation.stages.cohort import Cohort, StudyData
from evaluation.stages.describe import planted_overall
from evaluation.stages.match import MatchedCohort
from evaluation.stages.panel import analysis_panel
from evaluation.study import HETEROGENEITY_CHARACTERISTICS, Study, attribute_name

FOUNDING_DAYS = 31  # joined within this many days of the partnership's first member: a founding school


def characteristic_label(name: str) -> str:
    """Words for a characteristic (built-in, or a user's school attribute)."""
    attr = attribute_name(name)
    return HETEROGENEITY_CHARACTERISTICS[name] if attr is None else f"{attr.replace('_', ' ')} (a school attribute)"


TEST_WORDS = ("permutation test of equal subgroup effects: the Wald statistic with the subgroups' own "
              "standard errors, referred to its distribution over random relabellings with partnerships as "
              "the units ({how}); every relabelling re-estimates every subgroup with the same comparison "
              "schools, so the covariance from shared comparison schools and partnerships is accounted for")
HOW = {"partnership": "whole partnerships' labels permuted among partnerships",
       "block": "the labels of partnership-by-subgroup blocks (a partnership's schools in one subgroup move "
                "together) permuted among the blocks"}


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


def _bin(value: float, bins) -> tuple[str, str] | tuple[None, None]:
    k = bin_index(value, bins)
    return (None, None) if k is None else (f"{k + 1}", bins[k][2])


def characteristics(data: StudyData, treated: pd.DataFrame) -> dict[str, list[tuple[str | None, str | None]]]:
    """Per characteristic, (key, words) of each treated school's subgroup (None: unknown), row-aligned.
    Trust size and distance to the nearest partner school on the joining date are
    ``evaluation.data.partnership_attributes.partner_context`` (the generator plants by the same)."""
    schools = data.schools.set_index("urn")
    mem = data.memberships
    mem = mem[mem["partnership_id"].isin(treated["partnership_id"])]
    sizes, dists = partner_context(mem, treated[["urn", "partnership_id", "joined"]], schools)
    size = [_bin(v, TRUST_SIZE_BINS) for v in sizes]
    dist = [_bin(v, DISTANCE_BINS_KM) for v in dists]
    sponsor = data.partnerships.set_index("partnership_id")["sponsor_led"]

    def cat(values, words=lambda v: str(v)):
        return [(None, None) if v is None or (isinstance(v, float) and np.isnan(v)) or pd.isna(v)
                else (str(v), words(v)) for v in values]

    sp = treated["partnership_id"].map(sponsor)
    first_join = pd.to_datetime(data.memberships.groupby("partnership_id")["joined"].min())
    days = (pd.to_datetime(treated["joined"]) - treated["partnership_id"].map(first_join)).dt.days
    founding = [None if pd.isna(d) else bool(d <= FOUNDING_DAYS) for d in days]
    out = {
        "trust_size": size,
        "distance_to_partner": dist,
        "sponsor_led": cat([None if pd.isna(v) else bool(v) for v in sp],
                           lambda v: "sponsor-led" if v else "not sponsor-led"),
        "urban": cat(list(treated["urban_rural"]), lambda v: f"{v} schools"),
        "phase": cat(list(treated["urn"].map(schools["phase"])), lambda v: f"{v} schools"),
        "role": cat(list(treated["role"]), lambda v: f"{v} schools"),
        "partnership_type": cat(list(treated["partnership_type"]), lambda v: str(v).replace("_", " ")),
        "region": cat(list(treated["region"])),
        "founding": cat(founding, lambda v: "founding schools" if v else "schools that joined later"),
    }
    attrs = data.school_attributes
    if attrs is not None:
        for attr, grp in attrs.groupby("attribute"):
            value = grp.set_index("urn")["value"]
            out[f"attribute:{attr}"] = cat([value.get(u) for u in treated["urn"]], lambda v: f"{attr}: {v}")
    return out


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
    block = {"name": name, "label": characteristic_label(name),
             "n_unknown": int((~known).sum()), "subgroups": [], "test": None, "note": None}
    estimated: list[str] = []
    for k in sorted(words, key=lambda x: (not x.isdigit(), int(x) if x.isdigit() else 0, x)):  # bins in order
        in_k = keys == k
        row = {"key": k, "label": words[k], "n_schools": int(in_k.sum()),
               "n_partnerships": int(len(set(pids[in_k]))), "estimate": None, "se": None, "ci_low": None,
               "ci_high": None, "p": None, "n_comparison": None, "withheld": None}
        if data.truth is not None:
            row["planted"] = None
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
                if data.truth is not None:
                    row["planted"] = planted_overall(study, data, cohort, panel)
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
    unit = "partnership" if one_label else "block"
    block_of = pids if one_label else np.array([f"{p}\x00{k}" for p, k in zip(pids, lab)], dtype=object)
    groups = pd.Series(np.arange(len(lab))).groupby(block_of).indices  # unit -> row positions
    order = sorted(groups)
    n_units = len(order)
    if n_units < 2:
        return None
    first = np.array([lab[groups[p][0]] for p in order], dtype=object)
    draws, failed = [], 0
    for _ in range(study.heterogeneity.permutations):
        new = lab.copy()
        for p, v in zip(order, rng.permutation(first)):
            new[groups[p]] = v
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
