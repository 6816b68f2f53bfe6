"""Stage: the matched analysis panel (school-years with weights and every clustering's labels)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.spec import CLUSTER_COLUMNS
from evaluation.stages.cohort import Cohort, StudyData, studied_memberships
from evaluation.stages.match import MatchedCohort
from evaluation.stages.pupils import pupil_panel_rows, within_window
from evaluation.study import Study

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
    if data.pupils is not None:  # a pupil-level study: the pupils in the sample, by school-year
        rows = pupil_panel_rows(study, data.pupils, units["urn"], first, last)
    else:
        sy = data.school_years
        rows = sy.loc[sy["urn"].isin(units["urn"]) & sy["year"].between(first, last),
                      ["urn", "year", study.outcome.name]].rename(columns={study.outcome.name: "y"})
        rows = rows[rows["y"].notna()]
    if study.cohort.exposure == "in_partnership":
        rows = _every_year(rows, units["urn"], first, last)
    panel = rows.merge(units, on="urn", how="left")
    panel = panel.astype({"urn": "int64", "year": "int64", "y": "float64"})
    if study.cohort.exposure == "in_partnership":
        panel["treatment"] = in_partnership(study, data, cohort, panel)
    if data.pupils is not None:
        panel = within_window(study, panel)
    return panel.sort_values(["urn", "year"], kind="stable").reset_index(drop=True)


def _every_year(rows: pd.DataFrame, urns: pd.Series, first: int, last: int) -> pd.DataFrame:
    """A row for every school and year (outcome missing where none is published): an estimator for a
    treatment that switches needs the treatment in every year."""
    grid = pd.MultiIndex.from_product([sorted(urns.astype("int64")), range(first, last + 1)], names=["urn", "year"])
    return rows.set_index(["urn", "year"]).reindex(grid).reset_index()


def in_partnership(study: Study, data: StudyData, cohort: Cohort, panel: pd.DataFrame) -> np.ndarray:
    """1 while a partnership school is a member of a partnership of the studied types (each membership
    from its first exposed year to its last: ``calendar``), else 0; comparison schools 0. The spells
    move with the school's cohort: a placebo cohort ``k`` years early shifts them ``k`` years early."""
    m = studied_memberships(study, data)
    m = m[m["urn"].isin(cohort.treated["urn"])]
    real_g = m.groupby("urn")["g"].min()
    shift = cohort.treated.set_index("urn")["g"] - real_g.reindex(cohort.treated["urn"]).to_numpy()
    spells = m[["urn", "g", "last"]].assign(g=m["g"] + m["urn"].map(shift), last=m["last"] + m["urn"].map(shift))
    on = np.zeros(len(panel), dtype=np.int8)
    treated = panel["cohort"].to_numpy() > 0
    years = panel["year"].to_numpy()
    urn = panel["urn"].to_numpy()
    for u, g, last in spells.itertuples(index=False):
        hit = treated & (urn == u) & (years >= g) & (years <= last)
        on[hit] = 1
    return on


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
