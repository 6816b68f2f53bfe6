"""impact self-evaluate: one partnership against families of similar schools."""

from __future__ import annotations

import json

import pytest

from evaluation.data.synthetic import EFFECTS


def partnership_of_size(store, ptype: str, size: int, first_year: int = 2014) -> str:
    m = store.read_table("memberships")
    p = store.read_table("partnerships")
    m = m.merge(p[["partnership_id", "type"]], on="partnership_id")
    m = m[m["type"] == ptype]
    grp = m.groupby("partnership_id").agg(n=("urn", "size"), first=("joined", "min"), last=("joined", "max"))
    ok = grp[(grp["n"] == size) & (grp["first"] == grp["last"]) & (grp["first"].dt.year >= first_year)
             & (grp["first"].dt.year <= 2018)]
    return str(ok.index[0])


def test_self_evaluation_of_a_federation(tmp_path, run_cli, small_store):
    pid = partnership_of_size(small_store, "federation_hard", 3)
    code, out, err = run_cli("self-evaluate", "--partnership", pid, "--store", small_store.path,
                             "--results", tmp_path, "--permutations", 199)
    assert code == 0, err
    target = tmp_path / "self-evaluations" / pid.lower()
    r = json.loads((target / "result.json").read_text())
    assert r["kind"] == "self_evaluation" and len(r["schools"]) == 3
    assert set(r["estimates"]) == {"synthetic_did", "synthetic_control", "did"}
    analysed = sum(s["analysed"] for s in r["schools"])
    assert len(r["by_school"]) == analysed and all(b["family_size"] >= 5 for b in r["by_school"])
    assert 0 < r["randomisation"]["p_value"] <= 1
    e = r["estimates"]["synthetic_did"]
    assert e["ci_low"] < e["estimate"] < e["ci_high"]
    # MDES = (z_.975 + z_.8) * SE / SD, in effect-size units
    assert r["effect_size"]["mdes"] == pytest.approx(2.8015852 * e["se"] / r["effect_size"]["sd"], rel=1e-6)
    assert (target / "figures" / "gaps.png").exists() and (target / "figures" / "schools.png").exists()
    assert "smallest effect we could have detected" in out


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    """A panel where hard federations raise latent quality by 3 SD at once (KS2 RWM up to +36 points)."""
    from evaluation.data.national import write_panel
    from evaluation.data.store import Store
    from evaluation.data.synthetic import generate
    from evaluation.data.validate import read_raw, validate

    effects = dict(EFFECTS)
    effects[("federation_hard", "")] = (3.0, 1)
    panel = generate(seed=31, n_schools=4000, effects=effects)
    root = tmp_path_factory.mktemp("planted")
    paths = write_panel(panel, root)
    refs, tables = {}, []
    for name in ("schools", "partnerships", "memberships", "school_years"):
        vt = validate(name, read_raw(paths[name]), refs if name not in ("schools", "partnerships") else None)
        if name in ("schools", "partnerships"):
            refs[name] = vt.data
        tables.append(vt)
    store = Store(root / "impact.duckdb")
    store.write_tables(tables, extra={"truth_effects": panel.truth_effects.assign(
        sponsor_led=panel.truth_effects["sponsor_led"].astype(object))})
    return store


def test_a_large_planted_effect_is_found(tmp_path, run_cli, planted_store):
    pid = partnership_of_size(planted_store, "federation_hard", 3)
    code, out, err = run_cli("self-evaluate", "--partnership", pid, "--store", planted_store.path,
                             "--results", tmp_path, "--json", "--permutations", 199)
    assert code == 0, err
    r = json.loads(out)
    truth = planted_store.read_extra("truth_effects")
    urns = [s["urn"] for s in r["schools"] if s["analysed"]]
    t = truth[truth["urn"].isin(urns) & truth["year"].between(r["joined"], r["years"][1])]
    years = r["years"][1] - r["joined"] + 1
    planted = t.groupby("urn")["effect_ks2_rwm_expected_pct"].sum().sum() / (len(urns) * years)
    e = r["estimates"]["synthetic_did"]
    assert e["ci_low"] <= planted <= e["ci_high"]
    # with the planted effect above 4 SEs a 5% test has power of about 98%: it must be found
    assert planted > 4 * e["se"], (planted, e["se"])
    assert e["ci_low"] > 0 and r["randomisation"]["p_value"] < 0.05
    assert r["effect_size"]["mdes"] * r["effect_size"]["sd"] < planted


def write(tmp_path, text, name="schools.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,row,column,words", [
    ("urn,date\n100001,2015-09-01\n", 1, "joined", "required column 'joined' is missing"),
    ("urn,joined\nabc,2015-09-01\n", 2, "urn", "expected a six-digit URN"),
    ("urn,joined\n100001,31/02/2015\n", 2, "joined", "expected a join date"),
    ("urn,joined\n100001,2015-09-01\n100001,2015-09-01\n", 3, "urn", "listed twice"),
])
def test_bad_schools_files(tmp_path, run_cli, small_store, text, row, column, words):
    code, _, err = run_cli("self-evaluate", "--schools", write(tmp_path, text), "--store", small_store.path,
                           "--results", tmp_path / "r")
    assert code == 2 and "Traceback" not in err
    assert f"schools.csv, row {row}, column {column!r}" in err and words in err
    assert not (tmp_path / "r").exists()


def test_unknown_partnership_and_schools(tmp_path, run_cli, small_store):
    code, _, err = run_cli("self-evaluate", "--partnership", "P9999999", "--store", small_store.path)
    assert code == 2 and "no partnership 'P9999999'" in err
    code, _, err = run_cli("self-evaluate", "--schools", write(tmp_path, "urn,joined\n999999,2015-09-01\n"),
                           "--store", small_store.path)
    assert code == 2 and "not in the store's schools table" in err


def test_mixed_phases_are_refused(tmp_path, run_cli, small_store):
    s = small_store.read_table("schools")
    urns = [int(s.loc[s.phase == "primary", "urn"].iloc[0]), int(s.loc[s.phase == "secondary", "urn"].iloc[0])]
    text = "urn,joined\n" + "".join(f"{u},2015-09-01\n" for u in urns)
    code, _, err = run_cli("self-evaluate", "--schools", write(tmp_path, text), "--store", small_store.path)
    assert code == 2 and "mix phases" in err


def test_chapter_for_governors_states_mdes_and_family_in_words(tmp_path, run_cli, small_store):
    from evaluation.cli.self_eval_cmd import load_all
    from evaluation.report.markdown import escape
    from evaluation.report.results_io import load_self_evaluations
    from evaluation.report.self_eval_chapter import write_self_evaluation_chapter
    from evaluation.self_evaluation import example_partnership

    data = load_all(small_store)
    pid = example_partnership(data, size=5)
    n = data.memberships.loc[data.memberships["partnership_id"] == pid, "urn"].nunique()
    code, _, err = run_cli("self-evaluate", "--partnership", pid, "--store", small_store.path,
                           "--results", tmp_path / "results", "--permutations", 199)
    assert code == 0, err
    [(directory, result)] = load_self_evaluations(tmp_path / "results")
    entry = write_self_evaluation_chapter(result, directory, tmp_path / "source")
    text = (tmp_path / "source" / f"{entry}.md").read_text()
    analysed = sum(s["analysed"] for s in result["schools"])
    assert n == 5 and analysed <= 5
    mdes = result["effect_size"]["mdes"]
    assert f"these data could reliably show an effect of {mdes:.2f} or more" in text.replace("\u2212", "-")
    assert f"compared with the 50 most similar {result['phase']} schools" in text
    assert f"{result['comparison']['schools']} comparison schools in all" in text
    assert "What the data cannot tell you" in text
    # synthetic data says so; the exact command; why the years end where they do; each SE method said once
    assert result["provenance"]["synthetic"] is True and "not findings about real schools" in text
    command = result["provenance"]["command"]
    assert command == (f"impact self-evaluate --partnership {pid} --name {pid.lower()} --outcome "
                       f"{result['outcome']['name']} --permutations 199 --seed 20240901")
    assert f"```bash\n{command}\n```" in text
    assert "## The years compared" in text and result["window"]["why"] in text
    variance = result["estimates"]["synthetic_did"]["variance"]
    assert text.count(escape(variance)) == 1 and "None." not in text and "p = 0.000" not in text


def test_real_data_without_a_pupil_sd_gives_no_months(tmp_path, small_store):
    """On data with no pupil-level SD (no synthetic truth) the self-evaluation gives no effect size
    or months (the between-school SD would inflate them) and says why; the MDES is in the outcome's units."""
    import dataclasses

    from evaluation.cli.self_eval_cmd import load_all
    from evaluation.report.self_eval_chapter import summary
    from evaluation.self_evaluation import SelfEvaluationSpec, schools_of_partnership, self_evaluate

    data = load_all(small_store)
    real = dataclasses.replace(data, truth=None)
    pid = partnership_of_size(small_store, "federation_hard", 3)
    spec = SelfEvaluationSpec(name="real", schools=schools_of_partnership(real, pid), n_perm=99)
    r = self_evaluate(spec, real)
    es = r["effect_size"]
    assert es["g"] is None and es["months"] is None and es["mdes"] is None
    assert "no pupil-level SD" in es["withheld"]
    assert es["mdes_units"] == pytest.approx(2.8015852 * r["estimates"]["synthetic_did"]["se"], rel=1e-6)
    text = summary(r)
    assert "No effect size or months' progress" in text and "month" not in text.split("No effect size")[0]
    assert r["provenance"]["synthetic"] is False and "synthetic national panel" not in text
    # the schools were given as a partnership: the command names it
    assert r["provenance"]["command"].startswith(f"impact self-evaluate --partnership {pid} --name real ")
