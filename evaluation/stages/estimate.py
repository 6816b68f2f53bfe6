"""Stage: every estimator the specification lists (through the registry), the headline interval
and the primary estimate under each clustering; and their result.json entries."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from evaluation.errors import InputError
from evaluation.estimators import registry
from evaluation.estimators.results import EstimatorResult
from evaluation.inference.headline import headline_interval
from evaluation.numbers import json_value
from evaluation.spec import CLUSTER_COLUMNS, CLUSTER_WORDS, EstimationSpec

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
        n_clusters = int(panel[column].nunique())
        if kind != spec.cluster and (n_clusters < 2 or not np.isfinite(ov.se)):
            # e.g. matched sets chaining every school into one cluster: no cluster-robust SE exists
            out.setdefault("not_estimable", []).append({
                "clustering": kind, "n_clusters": n_clusters,
                "reason": (f"all {int(panel['urn'].nunique()):,} schools fall in {n_clusters} cluster(s), so no "
                           "standard error clustered this way exists")})
            continue
        if not np.isclose(ov.estimate, primary.overall.estimate, rtol=1e-9, atol=1e-12):
            raise RuntimeError(f"the {kind}-clustered refit changed the point estimate "
                               f"({ov.estimate!r} vs {primary.overall.estimate!r})")
        out["rows"].append({"clustering": kind, "description": CLUSTER_WORDS[kind],
                            "estimate": float(ov.estimate), "se": float(ov.se), "ci_low": float(ov.ci_low),
                            "ci_high": float(ov.ci_high), "p": json_value(ov.p_value),
                            "n_clusters": int(panel[column].nunique()),
                            "n_treated_clusters": int(panel.loc[treated, column].nunique()),
                            "variance": res.variance.to_dict()})
    return out


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
