"""The book formats result.json and computes nothing: every number and word of the summary box
comes from the stored blocks (effects, verdict, summary, headline)."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[1] / "evaluation" / "report"
COMPUTE = ("evaluation.estimators", "evaluation.inference", "evaluation.diagnostics", "evaluation.stages",
           "evaluation.pipeline", "evaluation.matching", "evaluation.runner", "evaluation.multiverse")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


@pytest.mark.parametrize("path", sorted(REPORT.glob("*.py")), ids=lambda p: p.name)
def test_report_modules_import_no_estimation_code(path):
    for module, names in _imports(path):
        if module == "evaluation.estimators.names":
            continue  # the estimators' names and titles: constants
        assert not module.startswith(COMPUTE), f"{path.name} imports {module}"
        if module == "evaluation.effects":  # the verdict rules table (a constant) for the methods chapter
            assert set(names) <= {"VERDICT_RULES"}, f"{path.name} imports {names} from evaluation.effects"


@pytest.fixture(scope="module")
def result(small_store):
    from evaluation.data.panels import load_study_data
    from evaluation.pipeline import run_study
    from evaluation.study import load_study

    study = load_study(Path(__file__).resolve().parents[1] / "studies" / "mat_converter_secondary_ks4.toml")
    return run_study(study, load_study_data(small_store, study)).result


def test_summary_box_shows_the_stored_blocks(result):
    from evaluation.report.chapter import summary_box

    r = copy.deepcopy(result)
    r["summary"]["answer"] = "STORED ANSWER"
    r["effects"].update(g=0.4321, g_ci=[0.1111, 0.7531], months=6, months_ci=[2, 10], withheld=None,
                        padlocks=2, padlock_reasons=["STORED REASON"])
    r["verdict"]["checks"][0]["detail"] = "STORED CHECK"
    box = summary_box(r)
    for text in ("STORED ANSWER", "0.43", "0.11 to 0.75", "6 months", "2 to 10", "STORED REASON", "STORED CHECK"):
        assert text in box, text


def test_stored_blocks_agree_with_the_rules_that_made_them(result):
    """The blocks the book reads are what effects.py's rules give for the same numbers."""
    from evaluation.effects import effect_size, plain_summary, security_rating, verdict

    es, sec = effect_size(result), security_rating(result)
    assert result["effects"]["g"] == es.g and result["effects"]["padlocks"] == sec.padlocks
    assert result["verdict"] == verdict(result).to_dict()
    assert result["summary"] == plain_summary(result)
