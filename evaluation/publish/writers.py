"""The writers of ``results/``: a study run to ``results/<id>/`` (result.json, tables (CSV),
figures (PNG)), a self-evaluation to ``results/self-evaluations/<name>/`` and a multiverse to
``results/<id>.multiverse/``, each after disclosure control (``evaluation.publish.disclosure``).

Everything is written into a temporary sibling directory first and swapped into
place at the end, so a failed or interrupted run never leaves a half-written or
mixed results directory (the previous results stay until the new ones are complete).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pandas as pd

from evaluation.cli.output import dumps
from evaluation.multiverse import MultiverseResult
from evaluation.pipeline import StudyRun
from evaluation.publish.disclosure import (DisclosurePolicy, Published, control_multiverse, control_self_evaluation,
                                          control_study)
from evaluation.report import figures
from evaluation.report.specification_curve import FIGURE_FILE, JSON_FILE, multiverse_dir, specification_curve_plot
from evaluation.result_schema import StudyResult

RESULT_FILE = "result.json"


def _school_frames(run: StudyRun) -> dict[str, pd.DataFrame]:
    """The per-school frames written beside result.json: partnership schools found (with ``analysed``;
    disclosure control keeps the analysed ones of published cohorts for tables/cohort.csv), matched
    pairs, the map."""
    matched_urns = set(run.panel["urn"])
    cohort = run.cohort.treated.assign(analysed=lambda d: d["urn"].isin(matched_urns))
    pairs = []
    for m in run.matched:
        if m.result is not None:
            p = m.result.pairs()[["treated_id", "control_id", "match", "distance"]]
            pairs.append(p.assign(cohort=m.g))
    return {
        "cohort": cohort.astype({"joined": "string"}),
        "matched_pairs": pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame(),
        "schools": run.schools if run.schools is not None else pd.DataFrame(),
    }


def _links(run: StudyRun) -> pd.DataFrame:
    """urn, g, treated: every analysed school with the cohort(s) it was matched in."""
    parts = [m.frame.loc[m.weights > 0, ["urn", "treated"]].assign(g=m.g) for m in run.matched]
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["urn", "treated", "g"]))


def _coverage(run: StudyRun) -> pd.DataFrame:
    """g, e, urn: the partnership schools' outcome rows in the analysis panel, by year since joining."""
    treated = run.panel[run.panel["cohort"] > 0]
    return pd.DataFrame({"g": treated["cohort"].to_numpy(), "e": (treated["year"] - treated["cohort"]).to_numpy(),
                         "urn": treated["urn"].to_numpy()})


def publish(run: StudyRun, policy: DisclosurePolicy | None = None) -> Published:
    """The run as it may be published: disclosure control (``evaluation.publish.disclosure``) applied to
    result.json and the per-school frames."""
    return control_study(run.result, policy, frames=_school_frames(run), links=_links(run), coverage=_coverage(run))


def _tables(result: dict, frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    r = result
    estimates = pd.DataFrame([{k: v for k, v in e.items() if k not in ("variance", "notes")}
                              | {"variance": e["variance"]["description"]} for e in r["estimates"].values()])
    event = pd.concat([pd.DataFrame(rows).assign(estimator=name) for name, rows in r["event_study"].items()],
                      ignore_index=True) if r["event_study"] else pd.DataFrame()
    return {
        "balance": pd.DataFrame(r["matching"]["balance"]),
        "estimates": estimates,
        "event_study": event,
        "cohort": frames["cohort"],
        "matched_pairs": frames["matched_pairs"],
        "trends": pd.DataFrame(r["trends"]),
        "schools": frames["schools"],
    }


def atomic_directory(root: str | Path, name: str, fill: Callable[[Path], None]) -> Path:
    """Create ``root/name`` by filling a temporary sibling and swapping it into place: the
    old directory stays until the new one is complete; on failure nothing changes."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    tmp = root / f".{name}.tmp-{os.getpid()}"
    old = root / f".{name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target


def write_results(run: StudyRun, results_root: str | Path, policy: DisclosurePolicy | None = None) -> Path:
    """Validate result.json against the contract, apply disclosure control (the study's
    ``[disclosure]`` threshold unless ``policy`` is given) and write the whole directory
    atomically: nothing uncontrolled reaches ``results/<id>/``."""
    StudyResult.model_validate(run.result)
    published = publish(run, policy)
    result = published.result
    StudyResult.model_validate(result)

    def fill(tmp: Path) -> None:
        (tmp / RESULT_FILE).write_text(dumps(result), encoding="utf-8")
        tables = tmp / "tables"
        tables.mkdir()
        for name, frame in _tables(result, published.frames).items():
            frame.to_csv(tables / f"{name}.csv", index=False, lineterminator="\n")
        figs = tmp / "figures"
        figs.mkdir()
        figures.trends_plot(result, figs / "trends.png")
        figures.event_study_plot(result, figs / "event_study.png")
        figures.love_plot(result, figs / "love_plot.png")
        if result.get("heterogeneity"):
            figures.subgroup_forest_plot(result, figs / "heterogeneity.png")

    return atomic_directory(results_root, result["study"]["id"], fill)


def write_self_evaluation(result: dict, results_root: str | Path) -> Path:
    """``results/self-evaluations/<name>/``: result.json and its figures (effects, schools, history and,
    when targets were assessed, targets), atomically, with the
    ``disclosure`` block of ``evaluation.publish.disclosure`` (named schools by design: nothing
    suppressed, small comparison families flagged)."""
    result = control_self_evaluation(result)

    def fill(tmp: Path) -> None:
        (tmp / RESULT_FILE).write_text(dumps(result), encoding="utf-8")
        (tmp / "figures").mkdir()
        figures.self_evaluation_effect_plot(result, tmp / "figures" / "effects.png")
        figures.self_evaluation_school_plot(result, tmp / "figures" / "schools.png")
        figures.self_evaluation_history_plot(result, tmp / "figures" / "history.png")
        if any(t["series"] for t in result["targets"]):
            figures.self_evaluation_targets_plot(result, tmp / "figures" / "targets.png")

    return atomic_directory(Path(results_root) / "self-evaluations", result["name"], fill)


def write_multiverse(mv: MultiverseResult, results_root: str | Path, policy: DisclosurePolicy | None = None
                     ) -> tuple[Path, dict]:
    """Write ``results/<id>.multiverse/`` (multiverse.json and the figure) atomically, after
    disclosure control; return the directory and the published content."""
    record, published = control_multiverse(mv, policy)
    content = {**published.to_dict(), "disclosure": record}
    def fill(tmp: Path) -> None:
        (tmp / JSON_FILE).write_text(dumps(content), encoding="utf-8")
        specification_curve_plot(content, tmp / FIGURE_FILE)

    target = multiverse_dir(results_root, mv.study_id)
    atomic_directory(target.parent, target.name, fill)
    return target, content
