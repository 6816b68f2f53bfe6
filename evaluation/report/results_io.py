"""Reading what the compute step wrote: ``results/<id>/result.json`` for studies and
``results/self-evaluations/<name>/result.json`` for self-evaluations, each checked against its
contract before the book formats it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from evaluation.errors import InputError, problem
from evaluation.result_schema import RESULT_SCHEMA_VERSION, SelfEvaluationResult, StudyResult

SELF_EVALUATION_FIGURES = ("effects.png", "schools.png", "history.png")  # and targets.png when there are targets


@dataclass(frozen=True)
class StudyResults:
    directory: Path
    result: dict


def result_files(root: Path):
    """(directory, path, parsed JSON or None, Problem or None) for each ``root/<name>/result.json``."""
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = sub / "result.json"
        if not path.exists():
            continue
        try:
            yield sub, path, json.loads(path.read_text(encoding="utf-8")), None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            yield sub, path, None, problem(f"not valid JSON ({err})", file=str(path))


def load_results(results_dir: str | Path) -> list[StudyResults]:
    """Every ``results/<id>/result.json``, checked against the contract, sorted by study id."""
    root = Path(results_dir)
    if not root.is_dir():
        raise InputError(problem("no results directory: run `impact run STUDY` (or `impact demo`) first",
                                 file=str(root)))
    found, problems = [], []
    for sub, path, data, bad in result_files(root):
        if bad is not None:
            problems.append(bad)
            continue
        bad_contract = contract_problems(StudyResult, data, path, "impact run STUDY")
        if bad_contract:
            problems.extend(bad_contract)
            continue
        if data["study"]["id"] != sub.name:
            problems.append(problem(f"study id {data['study']['id']!r} does not match its directory {sub.name!r}",
                                    file=str(path), column="study.id", value=data["study"]["id"]))
            continue
        missing = [f"figures/{f}" for f in ("trends.png", "event_study.png", "love_plot.png")
                   if not (sub / "figures" / f).exists()]
        if missing:
            problems.append(problem(f"missing {', '.join(missing)} (rerun `{data['provenance']['command']}`)",
                                    file=str(sub)))
            continue
        found.append(StudyResults(sub, data))
    if problems:
        raise InputError(problems, summary=f"cannot build the book from {root}:")
    if not found:
        raise InputError(problem("no results/<id>/result.json found: run `impact run STUDY` (or `impact demo`) "
                                 "first", file=str(root)))
    return found



def load_self_evaluations(results_dir: str | Path) -> list[tuple[Path, dict]]:
    """Every results/self-evaluations/<name>/result.json (none is fine)."""
    root = Path(results_dir) / "self-evaluations"
    if not root.is_dir():
        return []
    found = []
    for sub, path, data, bad in result_files(root):
        if bad is not None:
            raise InputError(bad)
        bad_contract = contract_problems(SelfEvaluationResult, data, path, "impact self-evaluate")
        if bad_contract:
            raise InputError(bad_contract, summary=f"cannot build the book from {root}:")
        for name in SELF_EVALUATION_FIGURES:
            if not (sub / "figures" / name).exists():
                raise InputError(problem(f"missing figures/{name}: rerun `impact self-evaluate`", file=str(sub)))
        found.append((sub, data))
    return found


def contract_problems(model, data: dict, path: Path, rerun: str) -> list:
    """Each way ``data`` breaks its result.json contract, as a problem naming the file and key;
    a file from an older schema version gets one problem saying how to upgrade it."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != RESULT_SCHEMA_VERSION:
        return [problem(f"result.json has schema version {version}, this version of the package reads "
                        f"{RESULT_SCHEMA_VERSION}: rerun `{rerun}` to upgrade it (migration notes: "
                        "evaluation/result_schema.py)", file=str(path), column="schema_version")]
    try:
        model.model_validate(data)
    except ValidationError as err:
        out = []
        for e in err.errors():
            where = ".".join(str(x) for x in e["loc"]) or "(top level)"
            kw = {"value": e["input"]} if e["type"] != "missing" and not isinstance(e["input"], (dict, list)) else {}
            out.append(problem(f"fails the result.json contract (schema version {RESULT_SCHEMA_VERSION}): "
                               f"{e['msg']}", file=str(path), column=where, **kw))
        return out
    return []


def previous_self_evaluation_history(results_dir: str | Path, name: str) -> tuple[list[dict], str | None]:
    """The history of an earlier run of the same self-evaluation (results/self-evaluations/<name>/),
    and a note when an earlier result exists but cannot give one (older schema, unreadable)."""
    path = Path(results_dir) / "self-evaluations" / name / "result.json"
    if not path.exists():
        return [], None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], f"{path}: the earlier result could not be read, so its history is not carried over"
    if contract_problems(SelfEvaluationResult, data, path, "impact self-evaluate"):
        return [], (f"{path}: the earlier result is from schema version {data.get('schema_version')} and has no "
                    "history to carry over; the history starts with this run")
    return list(data.get("history") or []), None
