"""Build the published Jupyter Book from ``results/<id>/``.

``build_book(results_dir, out_dir)`` writes the book source into ``out_dir/_build/source``
(generated, never committed): the committed static parts from ``book/`` at the top of the
repository (``_config.yml``, intro, methods text, ``_static/book.css``, the ``offline``
Sphinx extension), MathJax 2.7 from the ``jupyter-server-mathjax`` package (so math renders
with no network), one chapter per study, the synthesis chapter, the methods chapter with
the variance conventions of these results, and the data dictionary. It then runs the
Jupyter Book 1.x build, strict (``-W -n --keep-going``: any warning or broken reference
fails), into ``out_dir/_build/html``, and scans the output: the build fails if any page,
stylesheet or script would load a resource from outside the book (only ``<a href>``
links may point elsewhere). The same results give the same source, byte for byte.

Compute and publish are separate: the book reads result.json through the contract in
``evaluation.result_schema`` and never re-estimates.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from evaluation.errors import InputError, problem
from evaluation.result_schema import StudyResult

REPO_BOOK = Path(__file__).resolve().parents[2] / "book"
STATIC_ITEMS = ("_config.yml", "intro.md", "methods.md", "_static", "_ext")
LOG_TAIL_LINES = 40


class BookBuildError(RuntimeError):
    """The Jupyter Book build failed (a warning in strict mode, or a remote resource left in the output)."""


@dataclass(frozen=True)
class StudyResults:
    directory: Path
    result: dict


# ---------------------------------------------------------------------------- reading results


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
        try:
            StudyResult.model_validate(data)
        except ValidationError as err:
            for e in err.errors():
                where = ".".join(str(x) for x in e["loc"]) or "(top level)"
                kw = {"value": e["input"]} if e["type"] != "missing" and not isinstance(e["input"], (dict, list)) \
                    else {}
                problems.append(problem(f"fails the result.json contract (schema version 1): {e['msg']}",
                                        file=str(path), column=where, **kw))
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


# ---------------------------------------------------------------------------- the source


def mathjax_dir() -> Path:
    """MathJax 2.7's static files, as shipped by jupyter-server-mathjax."""
    import jupyter_server_mathjax

    path = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (path / "MathJax.js").exists():
        raise BookBuildError(f"MathJax.js not found in {path}: reinstall jupyter-server-mathjax")
    return path


def _toc(chapters: list[str], self_chapters: list[str] = ()) -> str:
    lines = ["# Generated by evaluation/report/book.py from the results: do not edit.",
             "format: jb-book", "root: intro", "parts:",
             "  - caption: Studies", "    chapters:"]
    lines += [f"      - file: studies/{c}" for c in chapters]
    if self_chapters:
        lines += ["  - caption: Partnerships evaluating themselves", "    chapters:"]
        lines += [f"      - file: {c}" for c in self_chapters]
    lines += ["  - caption: Across studies", "    chapters:", "      - file: synthesis",
              "  - caption: Methods and data", "    chapters:", "      - file: methods",
              "      - file: data_dictionary", ""]
    return "\n".join(lines)


def write_source(studies: list[StudyResults], source: str | Path, static: Path = REPO_BOOK,
                 self_evaluations: list[tuple[Path, dict]] = ()) -> Path:
    """Write the complete Jupyter Book source for these results into ``source`` (replaced)."""
    from evaluation.report.self_eval_chapter import write_self_evaluation_chapter

    from evaluation.report.chapter import write_chapter
    from evaluation.report.dictionary import data_dictionary, variance_conventions
    from evaluation.report.synthesis_chapter import write_synthesis

    source = Path(source)
    missing = [item for item in STATIC_ITEMS if not (static / item).exists()]
    if missing:
        raise BookBuildError(f"the book's static files are missing from {static}: {', '.join(missing)}")
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    for item in STATIC_ITEMS:
        src = static / item
        if src.is_dir():
            shutil.copytree(src, source / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(src, source / item)
    # Not under _static: Jupyter Book would add every .js there to every page.
    shutil.copytree(mathjax_dir(), source / "_mathjax" / "mathjax")
    results = [s.result for s in studies]
    chapters = [write_chapter(s.result, s.directory, source).study_id for s in studies]
    write_synthesis(results, source)
    methods = (static / "methods.md").read_text(encoding="utf-8").rstrip("\n")
    (source / "methods.md").write_text(methods + "\n\n" + verdict_rules() + "\n\n" + variance_conventions(results),
                                       encoding="utf-8")
    (source / "data_dictionary.md").write_text(data_dictionary(), encoding="utf-8")
    self_chapters = [write_self_evaluation_chapter(r, d, source) for d, r in self_evaluations]
    (source / "_toc.yml").write_text(_toc(chapters, self_chapters), encoding="utf-8")
    return source


def verdict_rules() -> str:
    """The rule that turns a study's numbers into its answer (``effects.VERDICT_RULES``), as a table."""
    from evaluation.effects import VERDICT_RULES
    from evaluation.report.markdown import escape, table

    return "\n".join(["## How a chapter answers its question", "",
                      "The answer in every summary box comes from the unrounded 95% confidence interval of the "
                      "primary estimate and the checks of the design, first matching row first:", "",
                      table(["When", "The answer"], [[escape(c), escape(a)] for c, a in VERDICT_RULES])])


# ---------------------------------------------------------------------------- external resources

_TAG = re.compile(r"<(?P<tag>[a-zA-Z][a-zA-Z0-9-]*)\b(?P<attrs>[^>]*)>", re.DOTALL)
_ATTR = re.compile(r"""\b(?P<name>src|href|srcset|data|poster|action|xlink:href)\s*=\s*(?P<q>["']?)(?P<url>[^"'\s>]+)""",
                   re.IGNORECASE)
_CSS_URL = re.compile(r"""(?:url\(\s*["']?|@import\s+["'])(?P<url>(?:https?:)?//[^"')\s]+)""", re.IGNORECASE)
_REMOTE = re.compile(r"^(?:https?:)?//", re.IGNORECASE)
_JS_LOAD = re.compile(r"""(?:\.src\s*=|\bsrc\s*:|importScripts\(|import\(|fetch\(|\.load\()\s*["'`](?P<url>(?:https?:)?//[^"'`]+)""",
                      re.IGNORECASE)


def external_resources(html_dir: str | Path) -> list[tuple[str, str]]:
    """(file, url) of every resource the built book would load from another machine.

    HTML: any src/href/srcset/data attribute that is remote, except ``<a href>`` (a link a
    reader may follow, not a load); inline ``style`` and ``<style>`` url()/@import. CSS:
    url() and @import. JS: remote addresses assigned as a script source, fetched or imported.
    """
    root = Path(html_dir)
    found: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".html", ".css", ".js") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = str(path.relative_to(root))
        if path.suffix == ".html":
            for m in _TAG.finditer(text):
                if m.group("tag").lower() == "a":
                    continue
                for a in _ATTR.finditer(m.group("attrs")):
                    urls = [u.strip().split(" ")[0] for u in a.group("url").split(",")] \
                        if a.group("name").lower() == "srcset" else [a.group("url")]
                    found += [(rel, u) for u in urls if _REMOTE.match(u)]
            found += [(rel, m.group("url")) for m in _CSS_URL.finditer(text)]
            found += [(rel, m.group("url")) for m in _JS_LOAD.finditer(text)]
        elif path.suffix == ".css":
            found += [(rel, m.group("url")) for m in _CSS_URL.finditer(text)]
        else:
            found += [(rel, m.group("url")) for m in _JS_LOAD.finditer(text)]
    return found


# ---------------------------------------------------------------------------- build


def jupyter_book_command() -> list[str]:
    exe = Path(sys.executable).parent / "jupyter-book"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    raise BookBuildError("jupyter-book is not installed: `pip install -e .` installs it (jupyter-book<2)")


def build_book(results_dir: str | Path, out_dir: str | Path, source_dir: str | Path | None = None,
               say=lambda m: None) -> Path:
    """Generate the source from ``results_dir`` and build the HTML book; return its index.html.

    The HTML goes to ``out_dir/_build/html``; the source to ``source_dir`` (default
    ``out_dir/_build/source``). Raises InputError for bad results (exit 2) and
    BookBuildError when the strict build fails (with the end of the build log).
    """
    studies = load_results(results_dir)
    out = Path(out_dir).resolve()
    source = Path(source_dir).resolve() if source_dir is not None else out / "_build" / "source"
    say(f"writing the book source for {len(studies)} studies to {source}")
    from evaluation.report.self_eval_chapter import load_self_evaluations

    write_source(studies, source, self_evaluations=load_self_evaluations(results_dir))
    for stale in (out / "_build" / "html", out / "_build" / ".doctrees", out / "_build" / "jupyter_execute"):
        shutil.rmtree(stale, ignore_errors=True)
    cmd = jupyter_book_command() + ["build", str(source), "--path-output", str(out), "-W", "-n", "--keep-going"]
    say("building: " + " ".join(cmd))
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(source))
    log = proc.stdout + proc.stderr
    (out / "_build").mkdir(parents=True, exist_ok=True)
    (out / "_build" / "build.log").write_text(log, encoding="utf-8")
    index = out / "_build" / "html" / "index.html"
    if proc.returncode != 0 or not index.exists():
        tail = "\n".join(log.rstrip().splitlines()[-LOG_TAIL_LINES:])
        raise BookBuildError(f"the Jupyter Book build failed (exit {proc.returncode}; strict mode: any warning "
                             f"or broken reference fails). Full log: {out / '_build' / 'build.log'}\n"
                             f"--- last lines of the log ---\n{tail}")
    remote = external_resources(index.parent)
    if remote:
        listed = "\n".join(f"  {f}: {u}" for f, u in remote[:20])
        raise BookBuildError(f"the built book would load {len(remote)} resource(s) from the network "
                             f"(it must open offline):\n{listed}")
    say(f"built in {time.perf_counter() - t0:.1f} s")
    return index
