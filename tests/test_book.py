"""The published book: chapters from results, a strict offline Jupyter Book build, the
contract check on result.json (exit 2), and (slow) a headless-Chromium render from file://
that checks what a reader sees and that no request leaves the machine.

The default run builds the book once (one test); everything else here either writes the
book source without the Sphinx build or is marked slow."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evaluation.effects import effect_size
from evaluation.report.markdown import num

ROOT = Path(__file__).parent.parent
STUDIES = ROOT / "studies"
BOOK_STUDIES = ("federation_primary_ks2", "mat_converter_secondary_ks4")

#: A loaded resource: src/href/srcset/data attribute, CSS url() or @import, pointing at http(s).
LOADED = re.compile(r"""(?:\b(?:src|href|srcset|data)\s*=\s*["']?|url\(\s*["']?|@import\s+["'])\s*(?:https?:)?//""",
                    re.IGNORECASE)
SMART_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
ANCHOR = re.compile(r"""<a\b[^>]*>""", re.IGNORECASE | re.DOTALL)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def results_dir(small_store, tmp_path_factory) -> Path:
    """results/<id>/ for two example studies on the small synthetic panel."""
    from evaluation.data.panels import load_study_data
    from evaluation.pipeline import run_study
    from evaluation.publish.writers import write_results
    from evaluation.study import load_study

    from evaluation.cli.self_eval_cmd import load_all
    from evaluation.partnership_file import TargetEntry
    from evaluation.publish.writers import write_self_evaluation
    from evaluation.self_evaluation import (SelfEvaluationSpec, example_partnership, schools_of_partnership,
                                            self_evaluate)

    root = tmp_path_factory.mktemp("book_results")
    for sid in BOOK_STUDIES:
        study = load_study(STUDIES / f"{sid}.toml")
        write_results(run_study(study, load_study_data(small_store, study)), root)
    # one partnership's self-evaluation, so the front page and the wording checks see that kind too
    everything = load_all(small_store)
    pid = example_partnership(everything)
    targets = (TargetEntry(outcome="ks2_rwm_expected_pct", kind="change", value=5.0, year=2026),
               TargetEntry(outcome="ks4_attainment8", kind="gap_to_national", value=-1.0, year=2026))
    write_self_evaluation(self_evaluate(SelfEvaluationSpec(name=pid.lower(), title=pid, n_perm=99,
                                                           schools=schools_of_partnership(everything, pid),
                                                           baseline_year=2012, targets=targets),
                                        everything), root)
    return root


@pytest.fixture(scope="module")
def built_book(results_dir, tmp_path_factory) -> tuple[Path, str]:
    """The book built once by `impact book build` (in-process): (html dir, printed index path)."""
    import contextlib
    import io

    from evaluation.cli import main

    out = tmp_path_factory.mktemp("book")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["book", "build", "--results", str(results_dir), "--out", str(out)])
    assert code == 0, stderr.getvalue()
    return out / "_build" / "html", stdout.getvalue()


def _results(results_dir: Path) -> dict[str, dict]:
    return {sid: json.loads((results_dir / sid / "result.json").read_text()) for sid in BOOK_STUDIES}


def loaded_external(html_dir: Path) -> list[tuple[str, str]]:
    """Every http(s) address a page, stylesheet or script would load (``<a href>`` links excepted)."""
    hits = []
    for path in sorted(html_dir.rglob("*")):
        if path.suffix not in (".html", ".css", ".js") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".html":
            text = ANCHOR.sub("<a>", text)  # links a reader may follow are not loads
        for m in LOADED.finditer(text):
            hits.append((str(path.relative_to(html_dir)), text[m.start():m.end() + 60]))
    return hits


# ----------------------------------------------------------------------------- the one build


def test_book_builds_offline_with_every_chapter(results_dir, built_book):
    html, out = built_book
    index = Path(out.strip().splitlines()[-1])
    assert index == html / "index.html" and index.exists()
    for sid in BOOK_STUDIES:
        page = (html / "studies" / f"{sid}.html").read_text(encoding="utf-8")
        assert 'class="summary-box admonition' in page
        r = _results(results_dir)[sid]
        summary = page[page.index('class="summary-box'):page.index('id="who-was-in-the-study"')]
        # the stored rating (a published result may withhold inputs of the rule, such as the attrition;
        # test_book_only_formats checks the stored blocks against the rules)
        assert summary.count('class="lock-on"') == r["effects"]["padlocks"]
        assert summary.count('class="lock-off"') == 5 - r["effects"]["padlocks"]
        for fig in ("event_study", "trends", "love_plot", "map"):
            assert re.search(rf'<img[^>]+src="[^"]*{sid}-{fig}\.png"', page), fig
            assert (html / "_images" / f"{sid}-{fig}.png").stat().st_size > 1000
    synthesis = (html / "synthesis.html").read_text(encoding="utf-8")
    assert "forest_plot.png" in synthesis and "Random-effects meta-analysis" in synthesis
    methods = (html / "methods.html").read_text(encoding="utf-8")
    assert "Callaway" in methods and "CR1" in methods and "mathjax/MathJax.js" in methods
    assert (html / "mathjax" / "MathJax.js").exists()
    dictionary = (html / "data_dictionary.html").read_text(encoding="utf-8")
    assert "ks2_rwm_expected_pct" in dictionary and "easting" in dictionary
    # Nothing the book loads comes from another machine (links in text are allowed).
    assert loaded_external(html) == []
    from evaluation.report.book import external_resources

    assert external_resources(html) == []


# ----------------------------------------------------------------------------- source only (fast)


def test_summary_box_numbers_come_from_effects(results_dir, tmp_path):
    """The box prints g and its CI to 2 dp and the months from evaluation.effects."""
    from evaluation.report.chapter import write_chapter

    for sid, r in _results(results_dir).items():
        text = write_chapter(r, results_dir / sid, tmp_path).path.read_text(encoding="utf-8")
        box = text[text.index(":::{admonition} Summary"):text.index("## Who was in the study")]
        m = re.search(r"Effect size (\S+) \(95% confidence interval (\S+) to (\S+)\), "
                      r"(?:about \*\*(\d+) month|\*\*less than one month)", box)
        assert m, box
        g, lo, hi = (float(x.replace("\u2212", "-")) for x in m.groups()[:3])
        es = effect_size(r)
        # printed to 2 dp (more when 2 would round a non-zero value to 0): within half a unit,
        # and never with a sign the unrounded number does not have
        for printed, exact in ((g, es.g), (lo, es.ci_low), (hi, es.ci_high)):
            assert abs(printed - exact) <= 0.005 + 1e-12
            assert (printed > 0) == (exact > 0) and (printed < 0) == (exact < 0)
        assert (int(m.group(4)) if m.group(4) else 0) == abs(es.months)
        sec = r["effects"]
        assert f"{sec['padlocks']} out of 5 padlocks" in box
        lost = box[box.index("Padlocks lost"):box.index("**Who was compared.**")]
        reasons = sec["padlock_reasons"]
        assert sum(1 for line in lost.splitlines() if line.startswith("  - ")) == max(len(reasons), 1)
        # the answer follows the checks: no "Yes"/"No" beside a failed check
        answer = box[box.index("**The answer.**"):box.index("**How much.**")]
        if "**fails**" in box:
            assert "We cannot tell" in answer, answer
        assert "0 months" not in answer
        c = r["counts"]
        assert f"{c['treated_analysed']:,} partnership schools in {c['partnerships']:,} partnerships" in box


def test_same_results_give_the_same_source(results_dir, tmp_path):
    from evaluation.report.book import load_results, write_source

    studies = load_results(results_dir)
    a, b = write_source(studies, tmp_path / "a"), write_source(studies, tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and "_mathjax" not in p.parts)
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and "_mathjax" not in p.parts)
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    toc = (a / "_toc.yml").read_text()
    assert all(f"studies/{sid}" in toc for sid in BOOK_STUDIES)


def test_map_is_drawn_from_schools_table_when_present(results_dir, tmp_path):
    import pandas as pd

    from evaluation.report.chapter import write_chapter

    sid = BOOK_STUDIES[0]
    r = _results(results_dir)[sid]
    copy = tmp_path / "results" / sid
    shutil.copytree(results_dir / sid, copy)
    (copy / "tables" / "schools.csv").unlink(missing_ok=True)
    text = write_chapter(r, copy, tmp_path / "no_map").path.read_text()
    assert "No map" in text and not (tmp_path / "no_map" / "studies" / sid / f"{sid}-map.png").exists()
    cohort = pd.read_csv(copy / "tables" / "cohort.csv")
    pd.DataFrame({"urn": cohort["urn"], "group": "partnership", "easting": 400000.0 + cohort.index,
                  "northing": 300000.0 + cohort.index}).to_csv(copy / "tables" / "schools.csv", index=False)
    text = write_chapter(r, copy, tmp_path / "map").path.read_text()
    assert "No map" not in text and f"{sid}/{sid}-map.png" in text
    assert (tmp_path / "map" / "studies" / sid / f"{sid}-map.png").stat().st_size > 1000


def test_result_failing_the_contract_is_exit_2_naming_the_file(results_dir, tmp_path, run_cli):
    bad = tmp_path / "results"
    shutil.copytree(results_dir, bad)
    path = bad / BOOK_STUDIES[1] / "result.json"
    r = json.loads(path.read_text())
    del r["counts"]
    r["estimates"]["twfe"]["estimate"] = "large"
    path.write_text(json.dumps(r))
    code, out, err = run_cli("book", "build", "--results", bad, "--out", tmp_path / "out")
    assert code == 2
    assert str(path) in err and "'counts'" in err and "estimates.twfe.estimate" in err
    assert not (tmp_path / "out" / "_build" / "html").exists()


def test_no_results_is_exit_2(tmp_path, run_cli):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("book", "build", "--results", tmp_path / "empty", "--out", tmp_path / "out")
    assert code == 2 and "no results" in err
    code, _, err = run_cli("book", "build", "--results", tmp_path / "missing", "--out", tmp_path / "out")
    assert code == 2 and str(tmp_path / "missing") in err


def test_invalid_json_is_exit_2(results_dir, tmp_path, run_cli):
    bad = tmp_path / "results"
    shutil.copytree(results_dir, bad)
    (bad / BOOK_STUDIES[0] / "result.json").write_text("{not json")
    code, _, err = run_cli("book", "build", "--results", bad, "--out", tmp_path / "out")
    assert code == 2 and str(bad / BOOK_STUDIES[0] / "result.json") in err and "not valid JSON" in err


def test_demo_without_study_definitions_is_exit_2(tmp_path, run_cli):
    (tmp_path / "studies").mkdir()
    code, _, err = run_cli("demo", "--studies", tmp_path / "studies", "--store", tmp_path / "s.duckdb",
                           "--results", tmp_path / "results", "--out", tmp_path / "out")
    assert code == 2 and str(tmp_path / "studies") in err
    assert not (tmp_path / "s.duckdb").exists()


def test_synthesis_with_one_study_does_not_pool(results_dir, tmp_path):
    from evaluation.report.synthesis_chapter import write_synthesis

    r = _results(results_dir)[BOOK_STUDIES[0]]
    text = write_synthesis([r], tmp_path).read_text()
    assert "nothing to pool" in text and not (tmp_path / "synthesis" / "forest_plot.png").exists()


def test_scanner_finds_loaded_resources_but_not_links(tmp_path):
    from evaluation.report.book import external_resources

    (tmp_path / "a.html").write_text('<a href="https://doi.org/10.1/x">doi</a>'
                                     '<script src="https://cdn.example/x.js"></script>'
                                     '<link rel="stylesheet" href="//cdn.example/y.css">'
                                     '<div style="background: url(https://cdn.example/z.png)"></div>')
    (tmp_path / "b.css").write_text('@import "https://fonts.example/f.css"; .x { src: url("https://f.example/a.woff2") }')
    (tmp_path / "c.js").write_text('s.src = "https://cdn.example/late.js"; // see https://licence.example')
    found = sorted(u for _, u in external_resources(tmp_path))
    assert found == sorted(["https://cdn.example/x.js", "//cdn.example/y.css", "https://cdn.example/z.png",
                            "https://fonts.example/f.css", "https://f.example/a.woff2",
                            "https://cdn.example/late.js"])
    assert len(loaded_external(tmp_path)) == 6  # the test's own, independent scan


@pytest.mark.slow
def test_a_broken_reference_fails_the_strict_build_with_the_log(results_dir, tmp_path, run_cli, monkeypatch):
    import evaluation.report.book as book  # the name the builder calls (imported at its module's top)

    def broken(results, source):
        path = source / "synthesis.md"
        path.write_text("(synthesis)=\n# Synthesis\n\nSee {ref}`a chapter that does not exist <no-such-label>`.\n")
        return path

    monkeypatch.setattr(book, "write_synthesis", broken)
    code, out, err = run_cli("book", "build", "--results", results_dir, "--out", tmp_path / "out")
    assert code == 1 and out == ""
    assert "the Jupyter Book build failed" in err and "no-such-label" in err
    assert (tmp_path / "out" / "_build" / "build.log").exists()


# ----------------------------------------------------------------------------- slow: a real browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _browse(url: str, workdir: Path, *extra: str) -> tuple[str, list[dict]]:
    """Open a page in headless Chromium with every host name unresolvable; return the DOM
    after scripts ran and the URL requests the network log recorded."""
    exe = _chromium()
    netlog = workdir / f"netlog-{len(list(workdir.glob('netlog-*')))}.json"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={workdir / 'profile'}",
           "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={netlog}", "--virtual-time-budget=10000",
           *extra, url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = json.loads(netlog.read_text())
    types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    requests = [e["params"] for e in log["events"]
                if types.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in e.get("params", {})]
    return proc.stdout, requests


def _page_requests(requests: list[dict]) -> list[str]:
    """http(s) requests a page made (the browser's own update/sign-in probes have no origin)."""
    return [r["url"] for r in requests
            if re.match(r"https?://", r["url"]) and r.get("initiator") != "not an origin"]


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (Debian: apt-get install -y chromium); "
                                               "the browser test needs it and installs nothing itself")
def test_book_renders_in_headless_chromium_without_network(built_book, results_dir, tmp_path):
    import html as html_lib

    html = built_book[0]
    # The front page answers first: every study's stored answer, its effect and its padlocks.
    dom, requests = _browse((html / "index.html").as_uri(), tmp_path, "--dump-dom")
    assert _page_requests(requests) == []
    text = html_lib.unescape(re.sub(r"<[^>]+>", " ", dom))
    text = re.sub(r"\s+", " ", text).translate(SMART_QUOTES)  # Sphinx typesets quotes
    for sid, r in _results(results_dir).items():
        assert re.sub(r"\s+", " ", r["summary"]["answer"]) in text, sid
        es = r["effects"]
        if es["g"] is not None:
            assert f"g = {num(es['g'])} (95% CI {num(es['g_ci'][0])} to {num(es['g_ci'][1])})" in text, sid
        else:
            assert f"{num(r['headline']['estimate'])} " in text, sid
        assert f'aria-label="{es["padlocks"]} out of 5 padlocks"' in dom, sid
        assert f"studies/{sid}.html" in dom
    assert "How to read it" in text and "self-evaluation" in text

    # Positive control: the network log does see a request a page makes.
    (html / "_canary.html").write_text('<img src="https://canary.invalid/pixel.png">')
    _, requests = _browse((html / "_canary.html").as_uri(), tmp_path)
    assert any("canary.invalid" in u for u in _page_requests(requests))

    sid = BOOK_STUDIES[0]
    chapter = html / "studies" / f"{sid}.html"
    dom, requests = _browse(chapter.as_uri(), tmp_path, "--dump-dom")
    assert _page_requests(requests) == []
    assert 'class="summary-box admonition' in dom and "How sure are we" in dom
    imgs = re.findall(r'<img[^>]+src="([^"]+)"', dom)
    event = [s for s in imgs if "event_study" in s]
    assert event and (chapter.parent / event[0]).resolve().exists()
    assert 'class="MathJax' in dom  # the effect-size formula was typeset by the local MathJax

    dom, requests = _browse((html / "synthesis.html").as_uri(), tmp_path, "--dump-dom")
    assert _page_requests(requests) == []
    forest = [s for s in re.findall(r'<img[^>]+src="([^"]+)"', dom) if "forest_plot" in s]
    assert forest and (html / forest[0]).resolve().exists()
    assert 'class="MathJax' in dom

    shots = html.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    for name, page in ((sid, chapter), ("synthesis", html / "synthesis.html")):
        png = shots / f"{name}.png"
        _, requests = _browse(page.as_uri(), tmp_path, f"--screenshot={png}", "--window-size=1280,2600",
                              "--hide-scrollbars")
        assert _page_requests(requests) == []
        assert png.stat().st_size > 50_000
        print(f"screenshot: {png}")


def test_chapter_warns_when_matched_sets_chain_partnerships():
    from evaluation.report.chapter import _chaining_words

    rows = [{"clustering": "partnership", "n_clusters": 700, "n_treated_clusters": 553},
            {"clustering": "matched_set", "n_clusters": 31, "n_treated_clusters": 31}]
    assert "chain the 553 partnerships into only 31 clusters" in _chaining_words({"rows": rows})
    rows[1]["n_clusters"] = 600  # sets nest partnerships without chaining them: no caution
    assert _chaining_words({"rows": rows}) == ""


# ----------------------------------------------------------------------------- the front page and the wording


def test_one_data_fingerprint_for_the_store_every_study_and_self_evaluation(results_dir, small_store):
    from evaluation.report.book import load_self_evaluations

    fingerprint = small_store.fingerprint()
    assert len(fingerprint) == 64
    for sid, r in _results(results_dir).items():
        assert r["provenance"]["data_fingerprint"] == fingerprint, sid
    for _, r in load_self_evaluations(results_dir):
        assert r["provenance"]["data_fingerprint"] == fingerprint
        assert r["provenance"]["synthetic"] is True and r["provenance"]["command"].startswith("impact self-evaluate")


def test_index_html_is_the_front_page_not_a_redirect(built_book, results_dir):
    html = built_book[0]
    page = (html / "index.html").read_text(encoding="utf-8")
    assert 'http-equiv="refresh"' not in page and len(page) > 5000
    assert "The answers" in page and "How to read it" in page
    for sid in BOOK_STUDIES:
        assert f"studies/{sid}.html" in page
    assert not (html / "intro.html").exists()


def test_front_page_source_lists_every_study_and_self_evaluation(results_dir, tmp_path):
    from evaluation.report.book import load_results, load_self_evaluations, write_source
    from evaluation.report.markdown import escape

    selfs = load_self_evaluations(results_dir)
    assert selfs
    source = write_source(load_results(results_dir), tmp_path / "src", self_evaluations=selfs)
    index = (source / "index.md").read_text(encoding="utf-8")
    toc = (source / "_toc.yml").read_text(encoding="utf-8")
    assert "root: index" in toc and not (source / "intro.md").exists()
    answers = index[index.index("## The answers"):index.index("## How to read it")]
    for sid, r in _results(results_dir).items():
        assert f"<study-{sid}>" in answers
        assert escape(r["summary"]["answer"]).replace("|", "\\|") in answers
        assert f'{r["effects"]["padlocks"]} out of 5 padlocks' in answers
    for _, r in selfs:
        assert f"<self-{r['name']}>" in answers and "(self-evaluation)" in answers
    assert "not findings about real schools" in answers  # synthetic panel


@pytest.mark.parametrize("n, word, expected", [(0, "school", "0 schools"), (1, "school", "1 school"),
                                               (2, "school", "2 schools"), (-1, "school", "-1 school"),
                                               (1200, "school", "1,200 schools"), (1, "study", "1 study")])
def test_plural(n, word, expected):
    from evaluation.report.markdown import plural

    assert plural(n, word, "studies" if word == "study" else None) == expected


def test_grammar_helpers_at_zero_one_two_and_negatives():
    from evaluation.report import markdown as md

    assert md.months_progress(0) == "less than one month's progress"
    assert md.months_progress(1) == "about 1 month's additional progress"
    assert md.months_progress(2) == "about 2 months' additional progress"
    assert md.months_progress(-1) == "about 1 month's less progress"
    assert md.months_progress(-3) == "about 3 months' less progress"
    assert [md.months_signed(m) for m in (-2, -1, 0, 1, 2)] == [
        "2 months less", "1 month less", "no difference", "1 month more", "2 months more"]
    assert md.months_range(-1, 2) == "from 1 month less to 2 months more"
    assert md.months_range(2, 10) == "2 to 10 months more" and md.months_range(0, 1) == "0 to 1 month more"
    assert md.months_range(-3, -1) == "1 to 3 months less" and md.months_range(1, 1) == "1 month more"
    assert md.months_range(0, 0) == "no difference"
    assert md.months(1) == "1 month" and md.months(0) == "0 months" and md.months(-4) == "4 months"
    assert md.article("umbrella trust") == "an umbrella trust"
    assert md.article("informal cluster") == "an informal cluster"
    assert md.article("multi-academy trust") == "a multi-academy trust"
    assert md.article("hard federation") == "a hard federation"
    assert md.article("university") == "a university"
    assert md.year_span(2016, 2016) == "in 2016" and md.year_span(2016, 2018) == "between 2016 and 2018"
    assert md.listing([]) == "" and md.listing(["a"]) == "a" and md.listing(["a", "b", "c"], "or") == "a, b or c"
    assert md.type_words("multi_academy_trust") == "multi-academy trust"
    assert md.type_words("federation_hard") == "hard federation"
    assert md.types_listing(["federation_hard", "federation_soft"], articles=True) == "a hard or soft federation"
    assert md.types_listing(["multi_academy_trust", "federation_hard", "federation_soft"], articles=True) == \
        "a multi-academy trust or a hard or soft federation"
    assert md.types_listing(["umbrella_trust"], articles=True) == "an umbrella trust"
    assert md.types_listing(["federation_hard", "federation_soft"], "and") == "hard and soft federation"
    assert md.p_equals(0.0) == "p < 0.001" and md.p_equals(0.0004) == "p < 0.001"
    assert md.p_equals(0.042) == "p = 0.042" and md.p_equals(None) == "p not available"


#: Wording a committee clerk should never meet in the book.
BAD_WORDING = {
    "p = 0.000": re.compile(r"\bp\s*=\s*0\.000\b"),
    "a bare 0.000": re.compile(r"(?<![\d.])[\u2212-]?0\.000(?![\d])"),
    "None.": re.compile(r"\bNone\."),
    "month'": re.compile(r"\b1 months\b|\bmonth'(?!s)|\b(?:0|[2-9]|\d\d+) month's"),
    "a + vowel": re.compile(r"\b[Aa] (?:umbrella|informal|inadequate|outstanding|\\?[aeio]\w)"),
    "between Y and Y": re.compile(r"between (\d{4}) and \1\b"),
    "raw type names": re.compile(r"multi academy|federation hard|federation soft|multi_academy_trust"),
    "SD = x.000": re.compile(r"SD = \d+\.000\b"),
    "I^2": re.compile(r"I\^2"),
    "negative months": re.compile(r"\(\s*[\u2212-]\d+ months?\)"),
    "our 1 schools": re.compile(r"\b1 (?:schools|partnerships|padlocks|studies|clusters)\b"),
    "a hard federation or soft federation": re.compile(r"\b(\w+) (federation|trust) (?:or|and) (?:an? )?\w+ \2\b"),
    "DfE field code": re.compile(r"\([A-Z][A-Z0-9]*_[A-Z0-9_]+\)"),
}
#: ... and never in an answer, a caveat or the front page (the chapters' technical sections may say them).
JARGON = re.compile(r"\bMbar\b|\bM̄|\be = -?\d|\bp [=<]|Bonferroni|\b[a-z0-9]+_[a-z0-9_]+\b|\([A-Z][A-Z0-9_]{3,}\)")


def test_answers_and_caveats_are_plain_words(results_dir, tmp_path):
    from evaluation.report.book import front_page, load_results, load_self_evaluations

    results = [s.result for s in load_results(results_dir)]
    texts = [r["summary"][k] for r in results for k in ("answer", "caveat")]
    page = front_page(results, [r for _, r in load_self_evaluations(results_dir)], "# Title\n\nIntro.\n")
    answers = page[page.index("| The answer |"):]
    texts.append(re.sub(r"\{ref\}`[^`]*`", "", answers))  # chapter links name the study's id
    assert [m.group(0) for t in texts for m in JARGON.finditer(t)] == []


def test_book_source_has_no_bad_wording(results_dir, tmp_path):
    from evaluation.report.book import load_results, load_self_evaluations, write_source

    source = write_source(load_results(results_dir), tmp_path / "src",
                          self_evaluations=load_self_evaluations(results_dir))
    hits = []
    for path in sorted(source.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"```bash.*?```", "", text, flags=re.S)  # commands are code
        for what, pattern in BAD_WORDING.items():
            hits += [(path.name, what, text[max(m.start() - 40, 0):m.end() + 40]) for m in pattern.finditer(text)]
    assert hits == []


def _figure_texts(monkeypatch, draw) -> list[str]:
    """Every label, title, tick label and legend entry of the figures ``draw`` makes."""
    import evaluation.report.figures as figures

    texts: list[str] = []

    def capture(fig, path):
        for ax in fig.axes:
            texts.extend([ax.get_xlabel(), ax.get_ylabel(), ax.get_title()])
            texts.extend(t.get_text() for t in ax.get_yticklabels() + ax.get_xticklabels())
            legend = ax.get_legend()
            if legend is not None:
                texts.extend(t.get_text() for t in legend.get_texts())
        figures.plt.close(fig)
        return path

    monkeypatch.setattr(figures, "_save", capture)
    draw()
    return [t for t in texts if t]


def test_figures_label_axes_with_words_not_column_names(results_dir, tmp_path, monkeypatch):
    import evaluation.report.figures as figures
    from evaluation.data.schema import load_schema
    from evaluation.report.book import load_self_evaluations

    raw = set(load_schema("school_years").column_names) | {"pre_y1", "pre_y2", "pre_trend", "ofsted_last"}
    texts = []
    for sid, r in _results(results_dir).items():
        raw |= {b["covariate"] for b in r["matching"]["balance"]}
        texts += _figure_texts(monkeypatch, lambda: (figures.trends_plot(r, tmp_path / "t.png"),
                                                     figures.event_study_plot(r, tmp_path / "e.png"),
                                                     figures.love_plot(r, tmp_path / "l.png")))
    for _, r in load_self_evaluations(results_dir):
        texts += _figure_texts(monkeypatch, lambda: (figures.self_evaluation_effect_plot(r, tmp_path / "g.png"),
                                                     figures.self_evaluation_school_plot(r, tmp_path / "s.png"),
                                                     figures.self_evaluation_targets_plot(r, tmp_path / "t.png"),
                                                     figures.self_evaluation_history_plot(r, tmp_path / "h.png")))
    assert texts and any("Attainment 8" in t for t in texts) and any("expected standard" in t for t in texts)
    raw = {name for name in raw if "_" in name}  # 'year', 'pupils' are words as well as names
    found = [(t, name) for t in texts for name in raw if re.search(rf"\b{re.escape(name)}\b", t)]
    assert found == []
    assert not [t for t in texts if re.search(r"\b[a-z0-9]+_[a-z0-9_]+\b", t)]


def test_map_legend_sits_below_the_points(results_dir, tmp_path, monkeypatch):
    import pandas as pd

    import evaluation.report.figures as figures
    from evaluation.report.chapter import write_chapter

    sid = BOOK_STUDIES[0]
    copy = tmp_path / "results" / sid
    shutil.copytree(results_dir / sid, copy)
    cohort = pd.read_csv(copy / "tables" / "cohort.csv")
    pd.DataFrame({"urn": cohort["urn"], "group": "partnership", "easting": 400000.0 + cohort.index,
                  "northing": 300000.0 + cohort.index}).to_csv(copy / "tables" / "schools.csv", index=False)
    seen = []

    def capture(fig, path):
        fig.canvas.draw()
        ax = fig.axes[0]
        seen.append((ax.get_legend().get_window_extent(), ax.get_window_extent()))
        figures.plt.close(fig)
        return path

    monkeypatch.setattr(figures, "_save", capture)
    write_chapter(_results(results_dir)[sid], copy, tmp_path / "src")
    legend, axes = seen[0]
    assert legend.y1 <= axes.y0  # entirely below the plotting area


# ----------------------------------------------------------------------------- the demo book as a reader sees it

_HIDDEN = re.compile(r"<(script|style|pre)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)  # commands are code
_TAGS = re.compile(r"<[^>]+>")


def visible_text(html: str) -> str:
    """The text a reader sees on a page: no tags, scripts, styles or code blocks (commands)."""
    import html as html_lib

    main = re.search(r'<main\b.*?</main\s*>', html, re.IGNORECASE | re.DOTALL)  # the page, not the sidebar
    text = _TAGS.sub(" ", _HIDDEN.sub(" ", main.group(0) if main else html))
    return re.sub(r"\s+", " ", html_lib.unescape(text)).translate(SMART_QUOTES)


def raw_names() -> re.Pattern:
    """Column names of the data (those with an underscore: 'year' is also a word) and the DfE field
    codes the schema descriptions name ('PTRWM_EXP', 'ATT8SCR')."""
    from evaluation.data.schema import load_schema

    names = {c for t in ("schools", "school_years") for c in load_schema(t).column_names if "_" in c}
    codes = {m for c in load_schema("school_years").columns for m in re.findall(r"\(([A-Z][A-Z0-9_]+)\)",
                                                                                c.description)}
    return re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, names | codes), key=len, reverse=True)) + r")\b")


def test_visible_text_leaves_out_code_and_markup():
    page = ('<html><nav>ks4_attainment8</nav><main><p>Effect on <b>Attainment&nbsp;8</b></p>'
            '<pre>impact run studies/x.toml --outcome ks4_attainment8</pre><script>var p = "None.";</script>'
            '</main></html>')
    assert visible_text(page) == " Effect on Attainment 8 "
    assert raw_names().search("the PTRWM_EXP column") and raw_names().search("y-axis: ks4_attainment8")
    assert not raw_names().search("results/mat_converter_secondary_ks4/") and not raw_names().search("year 2019")


@pytest.mark.slow
def test_demo_book_reads_in_words(tmp_path):
    """`impact demo` as a reader meets it (every example study, its multiverse and a self-evaluation, on a
    smaller synthetic panel): no page shows the phrases of ``BAD_WORDING`` or a raw column name or DfE
    field code outside code blocks."""
    import contextlib
    import io

    from evaluation.cli import main

    out, err = io.StringIO(), io.StringIO()
    # partnerships/example_trust.toml names a partnership of the full 20,000-school panel: on the smaller
    # panel the demo self-evaluates its own example partnership instead
    (tmp_path / "partnerships").mkdir()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["demo", "--schools", "4000", "--studies", str(STUDIES), "--store", str(tmp_path / "s.duckdb"),
                     "--results", str(tmp_path / "results"), "--out", str(tmp_path / "book"),
                     "--partnerships", str(tmp_path / "partnerships")])
    assert code == 0, err.getvalue()[-3000:]
    html = tmp_path / "book" / "_build" / "html"
    pages = [p for p in sorted(html.rglob("*.html"))
             if not {"_static", "_sources"} & set(p.relative_to(html).parts) and p.name not in ("genindex.html",
                                                                                                 "search.html")]
    chapters = {p.stem for p in pages}
    # a study the smaller panel cannot support is left out, and the demo says so
    said = out.getvalue() + err.getvalue()
    left_out = {p.stem for p in STUDIES.glob("*.toml")
                if re.search(rf"not (?:run on|published from) this panel \(4,000 schools\): {p.stem}: ", said)}
    assert left_out <= {"mat_rebrokered_secondary_ks4"}, left_out
    assert {p.stem for p in STUDIES.glob("*.toml")} - left_out <= chapters and "index" in chapters
    assert any(p.parent.name == "self" for p in pages)  # the self-evaluation's chapter
    raw = raw_names()
    hits = []
    for page in pages:
        text = visible_text(page.read_text(encoding="utf-8"))
        if page.name == "data_dictionary.html":  # the one page that names the columns, on purpose
            text = ""
        for what, pattern in {**BAD_WORDING, "raw column name": raw}.items():
            hits += [(str(page.relative_to(html)), what, text[max(m.start() - 60, 0):m.end() + 60])
                     for m in pattern.finditer(text)]
    assert hits == [], "\n".join(map(str, hits))


def test_trends_figure_when_disclosure_control_withholds_every_year(tmp_path):
    """A study whose every trend row is withheld (a small panel: every year draws on a withheld cohort)
    still gets its figure and a sentence instead of an internal error."""
    from evaluation.report.chapter import _trends_section
    from evaluation.report.figures import trends_plot

    result = {"trends": [], "study": {"id": "x"}, "outcome": {"name": "ks4_attainment8", "window": [-4, 3]}}
    assert trends_plot(result, tmp_path / "t.png").stat().st_size > 0
    assert "No year can be shown" in _trends_section(result, "x")
