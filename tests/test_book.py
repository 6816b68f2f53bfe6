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

ROOT = Path(__file__).parent.parent
STUDIES = ROOT / "studies"
BOOK_STUDIES = ("federation_primary_ks2", "mat_converter_secondary_ks4")

#: A loaded resource: src/href/srcset/data attribute, CSS url() or @import, pointing at http(s).
LOADED = re.compile(r"""(?:\b(?:src|href|srcset|data)\s*=\s*["']?|url\(\s*["']?|@import\s+["'])\s*(?:https?:)?//""",
                    re.IGNORECASE)
ANCHOR = re.compile(r"""<a\b[^>]*>""", re.IGNORECASE | re.DOTALL)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def results_dir(small_store, tmp_path_factory) -> Path:
    """results/<id>/ for two example studies on the small synthetic panel."""
    from evaluation.data.panels import load_study_data
    from evaluation.pipeline import run_study
    from evaluation.publish.writers import write_results
    from evaluation.study import load_study

    root = tmp_path_factory.mktemp("book_results")
    for sid in BOOK_STUDIES:
        study = load_study(STUDIES / f"{sid}.toml")
        write_results(run_study(study, load_study_data(small_store, study)), root)
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
def test_book_renders_in_headless_chromium_without_network(built_book, tmp_path):
    html = built_book[0]
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
