"""Write a study run to ``results/<id>/``: result.json, tables (CSV) and figures (PNG).

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
from evaluation.pipeline import StudyRun
from evaluation.report import figures
from evaluation.result_schema import StudyResult

RESULT_FILE = "result.json"


def _tables(run: StudyRun) -> dict[str, pd.DataFrame]:
    r = run.result
    estimates = pd.DataFrame([{k: v for k, v in e.items() if k not in ("variance", "notes")}
                              | {"variance": e["variance"]["description"]} for e in r["estimates"].values()])
    event = pd.concat([pd.DataFrame(rows).assign(estimator=name) for name, rows in r["event_study"].items()],
                      ignore_index=True) if r["event_study"] else pd.DataFrame()
    matched_urns = set(run.panel["urn"])
    cohort = run.cohort.treated.assign(analysed=lambda d: d["urn"].isin(matched_urns))
    pairs = []
    for m in run.matched:
        if m.result is not None:
            p = m.result.pairs()[["treated_id", "control_id", "match", "distance"]]
            pairs.append(p.assign(cohort=m.g))
    return {
        "balance": pd.DataFrame(r["matching"]["balance"]),
        "estimates": estimates,
        "event_study": event,
        "cohort": cohort.astype({"joined": "string"}),
        "matched_pairs": pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame(),
        "trends": pd.DataFrame(r["trends"]),
        "schools": run.schools if run.schools is not None else pd.DataFrame(),
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


def write_results(run: StudyRun, results_root: str | Path) -> Path:
    """Validate result.json against the contract and write the whole directory atomically."""
    StudyResult.model_validate(run.result)

    def fill(tmp: Path) -> None:
        (tmp / RESULT_FILE).write_text(dumps(run.result), encoding="utf-8")
        tables = tmp / "tables"
        tables.mkdir()
        for name, frame in _tables(run).items():
            frame.to_csv(tables / f"{name}.csv", index=False, lineterminator="\n")
        figs = tmp / "figures"
        figs.mkdir()
        figures.trends_plot(run.result, figs / "trends.png")
        figures.event_study_plot(run.result, figs / "event_study.png")
        figures.love_plot(run.result, figs / "love_plot.png")

    return atomic_directory(results_root, run.result["study"]["id"], fill)


def write_self_evaluation(result: dict, results_root: str | Path) -> Path:
    """``results/self-evaluations/<name>/``: result.json and its two figures, atomically."""

    def fill(tmp: Path) -> None:
        (tmp / RESULT_FILE).write_text(dumps(result), encoding="utf-8")
        (tmp / "figures").mkdir()
        figures.self_evaluation_gap_plot(result, tmp / "figures" / "gaps.png")
        figures.self_evaluation_school_plot(result, tmp / "figures" / "schools.png")

    return atomic_directory(Path(results_root) / "self-evaluations", result["name"], fill)
