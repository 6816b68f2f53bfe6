"""Stage: pupil-level studies (``[outcome] level = "pupil"``).

A pupil-level study is the school-level design (the same cohort, matching, estimators,
diagnostics and verdict) on an outcome built from the pupils of each school-year:

* **the outcome** of a school-year is its pupils' mean value added (``value_added = true``, the
  default: a pupil's result minus the national mean of pupils with the same prior attainment that
  year, ``evaluation.data.pupil_cells``), or their mean result;
* **the sample** (``sample = "on_roll_before_joining"``, the default): pupils on the school's roll for
  at least ``window end + 1`` years before the year of their results (``first_year_on_roll <= year -
  window end - 1``), in every school and year alike, fixed when the data are loaded
  (``PupilCells.on_roll_years``: placebo dates and multiverse variants refit with other windows on
  the same pupils). In the post-joining years of the window (``e = 0 .. window end``) every pupil
  kept at a partnership school was then on its roll in an academic year before ``g`` (to the
  academic year: a school joining between April and August has ``g`` two academic years on, and a
  pupil arriving in the joining year after the joining date still counts), so a change of intake is
  not mistaken for an effect; and since the rule does not depend
  on the joining year, comparison schools and pre-joining years are held to the same rule (a rule
  "on roll before g" for partnership schools only would compare stayers with all pupils, and one
  tied to each comparison school's cohort would change a school's outcome with the cohort it is
  compared with). Partnership schools' years after the window are left out (their long-stayers
  arrived after joining); pupils whose first year on roll is unknown are left out and counted. In
  a secondary school (Year 7 to 11) pupils can be on roll at most 4 years before their KS4 results,
  so the window ends at 3 at most; in a primary school (Reception to Year 6) at 5, or at 3 with
  value added (the KS1 prior comes from Year 2, which must precede joining too);
* **the estimand** is that of the school-level studies: the average over partnership schools of the
  effect on their pupils' mean (each school counts once, with its matching weight), estimated on
  school-year cells. Callaway & Sant'Anna on school-year cells (the panel has no partnership
  school-year after the window, so it takes R ``did``'s unbalanced-panel route, clustered, with
  the same point estimates as the panel route wherever every unit of a comparison is present) is
  the "cells" route (R ``did`` with ``panel = FALSE`` on pupils would weight schools by their
  numbers of pupils instead). The pupil-weighted average is reported beside it
  (:func:`pupil_weighted_twfe`): TWFE on the pupils themselves;
* **groups** (``pupil_groups = ["disadvantaged"]``): the primary estimator on the cells of
  disadvantaged pupils, of the other pupils, and on the difference of the two means, all on the
  school-years that have pupils of both groups, each with the headline's interval rule
  (``stages.estimate.headline_of``). The estimators are linear in the outcome, so on a common
  sample the difference row is exactly the difference of the other two, with its own interval;
* **effect sizes** divide by the national pupil-level SD of the outcome (pooled within years over
  the years the cohorts' windows span), as the EEF's do.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd

from evaluation.data.pupil_cells import PRIOR_BAND, PupilCells
from evaluation.errors import InputError
from evaluation.data.schema import description_words, load_schema, sentence_case
from evaluation.estimators import registry
from evaluation.estimators.fixed_effects import feols
from evaluation.spec import EstimationSpec
from evaluation.stages.estimate import headline_of
from evaluation.study import Study

GROUPS = {"disadvantaged": "disadvantaged pupils", "other": "other pupils",
          "difference": "disadvantaged minus other pupils"}


def value_column(study: Study) -> tuple[str, str]:
    """(sum column, count column) of the cells for the study's outcome."""
    return ("sum_va", "n_va") if study.outcome.value_added else ("sum_y", "n")


def sample_outcome(study: Study, pc: PupilCells) -> pd.DataFrame:
    """urn, year, y: each school-year's mean over the pupils in the sample (what matching and the
    trends see; the rule does not depend on the joining year, so it is the panel's outcome too)."""
    cells = sample_cells(study, pc, pc.cells["urn"].unique())
    agg = cells.groupby(["urn", "year"], sort=True)[["total", "n"]].sum()
    agg = agg[agg["n"] > 0]
    return pd.DataFrame({"urn": agg.index.get_level_values(0), "year": agg.index.get_level_values(1),
                         "y": (agg["total"] / agg["n"]).to_numpy()})


def tenure_years(study: Study, pc: PupilCells | None = None) -> int:
    """Years on the school's roll a pupil needs to be in the on-roll sample: the study's window end
    plus one, so that in every post-joining year of the window the pupils kept were on roll before
    the school joined. Fixed when the data are loaded (``pc.on_roll_years``): a placebo date or a
    multiverse variant with a shorter window keeps the study's sample (the same outcome)."""
    if pc is not None and pc.on_roll_years is not None:
        return pc.on_roll_years
    return study.outcome.window[1] + 1


def sample_cells(study: Study, pc: PupilCells, urns) -> pd.DataFrame:
    """The pupils in the study's sample, by school-year and disadvantage.

    Returns urn, year, disadvantaged (1, 0, -1 unknown), n (pupils with a value), total (sum of
    their values), and the pupils left out by the on-roll rule (``excluded``) or for want of prior
    attainment (``no_prior``)."""
    s, n = value_column(study)
    c = pc.cells[pc.cells["urn"].isin(urns)]
    if study.outcome.sample == "on_roll_before_joining":
        fy = c["first_year_on_roll"].to_numpy()
        keep = (fy >= 0) & (fy <= c["year"].to_numpy() - tenure_years(study, pc))
    else:
        keep = np.ones(len(c), dtype=bool)
    c = pd.DataFrame({"urn": c["urn"].to_numpy(), "year": c["year"].to_numpy(),
                      "disadvantaged": c["disadvantaged"].to_numpy(),
                      "n": np.where(keep, c[n], 0), "total": np.where(keep, c[s], 0.0),
                      "excluded": np.where(keep, 0, c["n"]),
                      "no_prior": np.where(keep, c["n"] - c["n_va"], 0) if study.outcome.value_added else 0})
    return c.groupby(["urn", "year", "disadvantaged"], sort=True).sum().reset_index()


def cell_outcomes(cells: pd.DataFrame) -> pd.DataFrame:
    """urn, year and, per group, the mean value and the number of pupils: y (all), y_disadvantaged,
    y_other, y_difference (both groups present), n_pupils, n_disadvantaged, n_other."""
    wide = cells.pivot_table(index=["urn", "year"], columns="disadvantaged", values=["n", "total"],
                             aggfunc="sum", fill_value=0)
    n_all = wide["n"].sum(axis=1)
    t_all = wide["total"].sum(axis=1)
    n_d = wide["n"].get(1, pd.Series(0, index=wide.index))
    n_o = wide["n"].get(0, pd.Series(0, index=wide.index))
    t_d = wide["total"].get(1, pd.Series(0.0, index=wide.index))
    t_o = wide["total"].get(0, pd.Series(0.0, index=wide.index))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = pd.DataFrame({"y": t_all / n_all.where(n_all > 0),
                            "y_disadvantaged": t_d / n_d.where(n_d > 0),
                            "y_other": t_o / n_o.where(n_o > 0),
                            "n_pupils": n_all, "n_disadvantaged": n_d, "n_other": n_o})
    out["y_difference"] = out["y_disadvantaged"] - out["y_other"]
    return out.reset_index()


def pupil_panel_rows(study: Study, pc: PupilCells, urns, first: int, last: int) -> pd.DataFrame:
    """The analysis panel's rows for a pupil-level study: urn, year, y and the group columns, for the
    schools ``urns`` over ``first .. last``, school-years with at least one pupil in the sample."""
    cells = sample_cells(study, pc, urns)
    cells = cells[cells["year"].between(first, last)]
    out = cell_outcomes(cells)
    excluded = cells.groupby(["urn", "year"])[["excluded", "no_prior"]].sum().reset_index()
    out = out.merge(excluded, on=["urn", "year"], how="left")
    return out[out["n_pupils"] > 0].reset_index(drop=True)


def within_window(study: Study, panel: pd.DataFrame) -> pd.DataFrame:
    """A pupil-level panel without partnership schools' years after the window: there the pupils on
    roll long enough joined the school after it joined the partnership."""
    late = (panel["cohort"] > 0) & (panel["year"] > panel["cohort"] + study.outcome.window[1])
    return panel[~late].reset_index(drop=True)


def national_pupil_sd(pc: PupilCells, years: range) -> tuple[float | None, str | None]:
    """The national pupil-level SD of the outcome pooled within the given years (root mean of the
    yearly variances, weighted by pupils), with its source in words."""
    nat = pc.national[pc.national["year"].isin(list(years)) & pc.national["sd"].notna()]
    if nat.empty:
        return None, None
    var = float(np.average(nat["sd"] ** 2, weights=nat["n"] - 1))
    y0, y1 = int(nat["year"].min()), int(nat["year"].max())
    span = str(y0) if y0 == y1 else f"{y0}-{y1}"
    words = pupil_outcome_words(pc.outcome)
    return float(np.sqrt(var)), (f"national pupil-level SD of {words} ({np.sqrt(var):.3g}), "
                                 f"pooled within years over {span} from {int(nat['n'].sum()):,} pupil results "
                                 "in the pupils table")


def pupil_outcome_words(outcome: str) -> str:
    """A pupils-table outcome in words mid-sentence ("pupils' Attainment 8 score")."""
    desc = description_words(load_schema("pupils").column(outcome).description)
    return sentence_case(re.sub(r"^Pupil's ", "pupils' ", desc))


def value_added_words(study: Study) -> str:
    """The school-year outcome in words, first clause a name ('Value added in pupils' Attainment 8 score')."""
    desc = pupil_outcome_words(study.outcome.name)
    if not study.outcome.value_added:
        return f"Mean of {desc}: over the pupils in the sample"
    return (f"Value added in {desc}: each pupil's result minus the national mean that year of pupils with the same "
            f"prior attainment (in bands of {PRIOR_BAND:g} points), averaged over the pupils in the sample")


def sample_words(study: Study) -> str:
    if study.outcome.sample == "all":
        return "every pupil with a result in each school-year"
    k = tenure_years(study)
    return (f"pupils first on the school's roll at least {k} academic years before the year of their results, in "
            f"every school and year alike: in the {k} years from joining (the window) every pupil counted at a "
            "partnership school was on its roll in an academic year before its first year of results after joining, "
            "so a change of intake is not taken for an effect, and comparison schools' pupils are chosen by the same "
            "rule; later years are left out. Pupils must still be on roll when they sit the tests, so a change in "
            "who leaves after joining (moves, exclusions) can still change the sample; schools with no intake year "
            "of their own (junior, middle, upper and studio schools, and new schools) have no pupils in it")


def group_estimates(study: Study, spec: EstimationSpec, panel: pd.DataFrame, pupil_sd: float | None,
                    hedges_j: float | None, planted: dict | None) -> list[dict]:
    """The primary estimator on each group's cells (see the module docstring), on the school-years
    that have pupils of both groups, so the difference row is exactly the difference of the other two;
    each with the headline's interval (``headline_of``: the calibrated rule for this design)."""
    both = panel[panel["y_disadvantaged"].notna() & panel["y_other"].notna()].reset_index(drop=True)
    treated = both["cohort"] > 0
    out = []
    for key, words in GROUPS.items():
        sub = both.assign(y=both[f"y_{key}"])
        n_col = {"disadvantaged": ["n_disadvantaged"], "other": ["n_other"],
                 "difference": ["n_disadvantaged", "n_other"]}[key]
        row = {"group": key, "label": words, "n_schools": int(sub.loc[treated, "urn"].nunique()),
               "n_comparison": int(sub.loc[~treated, "urn"].nunique()),
               "n_pupils": int(sub.loc[treated, n_col].to_numpy().sum()),
               "n_pupils_comparison": int(sub.loc[~treated, n_col].to_numpy().sum()),
               "estimate": None, "se": None, "ci_low": None, "ci_high": None, "p": None, "g": None,
               "planted": None if planted is None else planted.get(key), "note": None}
        try:
            res = registry.fit(spec.primary, sub, spec)
            head = headline_of(spec, sub, res) if res.overall is not None else None
        except InputError as err:  # a group the design cannot support: say why
            row["note"] = f"not estimable: {err.render()}"
            out.append(row)
            continue
        if head is None or not np.isfinite(head["se"]):
            row["note"] = "not estimable on this group's school-years"
        else:
            row.update(estimate=float(head["estimate"]), se=float(head["se"]), ci_low=float(head["ci_low"]),
                       ci_high=float(head["ci_high"]), p=float(head["p"]), interval=head["method"])
            if pupil_sd:
                row["g"] = (hedges_j or 1.0) * float(head["estimate"]) / pupil_sd
        out.append(row)
    return out


def pupil_weighted_twfe(spec: EstimationSpec, panel: pd.DataFrame) -> dict:
    """TWFE of the pupils' values on being in a partnership after joining, school and year effects,
    each pupil weighted by its school's matching weight, clustered as the study's headline.

    Every regressor is constant within a school-year, so this equals the weighted regression on
    school-year cell means with weights (pupils x matching weight) exactly, coefficient and
    clustered SE; N in the small-sample factor is the number of pupils, as on the pupil rows."""
    d = panel[panel["n_pupils"] > 0]
    treat = ((d["cohort"] > 0) & (d["year"] >= d["cohort"])).astype(float)
    frame = pd.DataFrame({"y": d["y"].to_numpy(), "treat": treat.to_numpy(), "urn": d["urn"].to_numpy(),
                          "year": d["year"].to_numpy(), "w": (d["weight"] * d["n_pupils"]).to_numpy(),
                          "cluster": d[spec.cluster_column].to_numpy()})
    try:
        res = feols(frame, "y ~ treat | urn + year", weights="w", cluster="cluster")
    except InputError as err:  # e.g. one cluster: say why instead of stopping the study
        return {"estimate": None, "note": f"not estimable: {err.render()}"}
    if "treat" not in res.params.index:
        return {"estimate": None, "note": "not estimable: being in a partnership is collinear with the fixed effects"}
    n_pupils = int(d["n_pupils"].sum())
    # cell regression -> pupil rows: the same bread and cluster scores (within-cell deviations sum to zero
    # in every score); only N in (N-1)/(N-K) changes
    K = res.dof_K
    n_cells = res.n_obs
    G = res.variance.n_clusters
    factor = ((n_pupils - 1) / (n_pupils - K)) / ((n_cells - 1) / (n_cells - K))
    se = float(res.se()["treat"]) * np.sqrt(factor)
    from scipy import stats
    t = stats.t.ppf(1 - spec.alpha / 2, G - 1)
    est = float(res.params["treat"])
    return {"estimate": est, "se": se, "ci_low": est - t * se, "ci_high": est + t * se,
            "p": float(2 * stats.t.sf(abs(est / se), G - 1)), "n_pupils": n_pupils, "n_clusters": int(G),
            "variance": f"CR1 clustered by {spec.cluster}: G/(G-1) * (N-1)/(N-K) with N = {n_pupils:,} pupils, "
                        f"K = {K}; t with G-1 = {G - 1} df",
            "note": "each pupil weighted by the matching weight of its school, so large schools count more than in the "
                    "headline, which counts every partnership school once; two-way fixed effects assume the effect does "
                    "not change with time since joining"}


def planted_by_group(study: Study, pc: PupilCells, panel: pd.DataFrame, school_planted: pd.DataFrame
                     ) -> dict | None:
    """The planted effect on each group's mean (synthetic data), averaged as the "simple"
    aggregation averages: over the analysed partnership schools' post-joining school-years that have
    pupils of both groups (the school-years the groups are estimated on).

    school_planted: urn, year, e, effect (the studied membership's effect on the school, from
    ``describe.planted_cells`` without the pupil mix). The generator splits it between disadvantaged
    and other pupils by factors whose pupil-weighted mean is 1 (``pc.truth``)."""
    if pc.truth is None or school_planted is None or school_planted.empty:
        return None
    post = school_planted[school_planted["e"] >= 0].merge(
        panel[["urn", "year", "n_disadvantaged", "n_other"]], on=["urn", "year"])
    post = post[(post["n_disadvantaged"] > 0) & (post["n_other"] > 0)].merge(pc.truth, on=["urn", "year"], how="left")
    if post.empty:
        return None
    d = post["effect"] * post["factor_disadvantaged"].fillna(1.0)
    o = post["effect"] * post["factor_other"].fillna(1.0)
    return {"disadvantaged": float(d.mean()), "other": float(o.mean()), "difference": float((d - o).mean())}


def pupil_block(study: Study, spec: EstimationSpec, pc: PupilCells, panel: pd.DataFrame,
                pupil_sd: tuple[float | None, str | None], hedges_j: float | None, planted: dict | None) -> dict:
    """The result.json ``pupils`` block: what was measured on which pupils, and the group results."""
    treated = panel["cohort"] > 0
    sd, sd_source = pupil_sd
    block = {
        "level": "pupil", "key_stage": pc.key_stage, "outcome": study.outcome.name,
        "value_added": study.outcome.value_added, "outcome_words": value_added_words(study),
        "sample": study.outcome.sample, "sample_words": sample_words(study),
        "counts": {"pupils_treated": int(panel.loc[treated, "n_pupils"].sum()),
                   "pupils_comparison": int(panel.loc[~treated, "n_pupils"].sum()),
                   "pupils_left_out_by_the_on_roll_rule": int(panel["excluded"].sum()),
                   "pupils_without_prior_attainment": int(panel["no_prior"].sum())},
        "pupil_sd": sd, "pupil_sd_source": sd_source,
        "pupil_weighted_twfe": pupil_weighted_twfe(spec, panel),
        "groups": None,
    }
    if study.outcome.pupil_groups:
        block["groups"] = group_estimates(study, spec, panel, sd, hedges_j, planted)
    return block


def with_pupil_outcome(study: Study, data, pc: PupilCells):
    """The study's data with the school-year outcome made from the pupils in the sample (matching and
    the trends use it) and the pupil cells attached for the analysis panel."""
    pc = replace(pc, on_roll_years=tenure_years(study))
    y = sample_outcome(study, pc).rename(columns={"y": study.outcome.name})
    sy = data.school_years.drop(columns=[study.outcome.name], errors="ignore").merge(
        y, on=["urn", "year"], how="left")
    return replace(data, school_years=sy, pupils=pc)
