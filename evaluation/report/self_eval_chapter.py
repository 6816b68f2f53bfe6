"""The chapter for a governing body: one partnership's self-evaluation in plain words.

Reads ``results/self-evaluations/<name>/result.json`` (written by ``impact self-evaluate``)
and says what changed, compared with whom, how sure we are, the smallest effect the data
could have shown (MDES), and what the data cannot tell.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from evaluation.report.markdown import escape, months_progress, months_words, num, p_equals, plural, table

FIGURES = ("gaps.png", "schools.png")
METHODS = {"synthetic_did": "Synthetic difference-in-differences", "synthetic_control": "Synthetic control",
           "did": "Difference-in-differences"}
SYNTHETIC_NOTICE = ("**Data.** These numbers come from the synthetic national panel (generated data with a known "
                    "answer, used to test the methods); they are not findings about real schools.")


def is_synthetic(r: dict) -> bool:
    """Whether the self-evaluation ran on the synthetic panel (``provenance.synthetic``)."""
    return bool((r.get("provenance") or {}).get("synthetic"))


def _share(p: float) -> str:
    """A randomisation p-value as a share of groups: '43%', 'fewer than 1%'."""
    return "fewer than 1%" if p < 0.005 else f"{p:.0%}"


def answer(r: dict) -> str:
    """The answer in one sentence, plain text (the front page and the summary box use it)."""
    e = r["estimates"]["synthetic_did"]
    ri = r["randomisation"]
    if e["ci_low"] <= 0 <= e["ci_high"]:
        return ("We cannot tell yet. The difference could be zero: a gap this size is common among groups of "
                "similar schools that did not join anything.")
    if ri["p_value"] < 0.05:
        return (f"Probably a real difference. Only {_share(ri['p_value'])} of random groups of similar schools "
                "showed a gap as large.")
    return ("Possibly a real difference, but not a sure one: random groups of similar schools showed a gap as large "
            f"{_share(ri['p_value'])} of the time.")


def question(r: dict) -> str:
    return f"Since joining, has {_outcome_words(r, lower=True)} at our schools changed more than at similar schools?"


def summary(r: dict) -> str:
    e = r["estimates"]["synthetic_did"]
    es = r["effect_size"]
    analysed = [s for s in r["schools"] if s["analysed"]]
    outcome = _outcome_words(r, lower=True)
    unit = r["outcome"].get("unit") or "points"
    unit = "percentage points" if unit == "percent" else unit
    direction = "higher" if e["estimate"] > 0 else "lower"
    words = answer(r)
    cut = min((i for i in (words.find(". "), words.find(": ")) if i >= 0), default=len(words))
    verdict = f"**{escape(words[:cut + 1])}**{escape(words[cut + 1:])}"
    return "\n".join([
        ":::{admonition} Summary for governors",
        ":class: important",
        "",
        f"**What changed.** Since the schools joined (first results after joining: {r['joined']}), "
        f"{outcome} at our {plural(len(analysed), 'school')} has been {num(abs(e['estimate']))} {unit} {direction} on "
        f"average than at similar schools (95% confidence interval {num(e['ci_low'])} to {num(e['ci_high'])}). "
        + (f"No effect size or months' progress: {es['withheld']}." if es.get("g") is None else
           f"That is an effect size of {num(es['g'])}, "
           + months_progress(es["months"]) + "."),
        "",
        f"**Compared with whom.** Each of our schools was compared with the {r['comparison']['family_size']} most "
        f"similar {r['phase']} schools in England (its *family of schools*), "
        f"{r['comparison']['schools']} comparison schools in all: {r['comparison']['rule']}.",
        "",
        f"**How sure are we.** {verdict}",
        "",
        f"**The smallest effect we could have seen.** With {plural(len(analysed), 'school')}, these data could reliably show "
        + (f"an effect of {num(es['mdes_units'])} {unit} or more (80% power, 5% test). "
           if es.get("mdes") is None else
           f"an effect of {num(es['mdes'])} or more (about {months_words(es['mdes_months'])} progress; "
           f"80% power, 5% test). ")
        + "A smaller real effect would most likely go unnoticed: "
        "\"no clear difference\" is not the same as \"no effect\".",
        "",
        "**What the data cannot tell you.** This is not a trial: the comparison schools were chosen to look like "
        "ours before joining, but anything else that changed at our schools at the same time (a new head, a "
        "change of intake) is mixed into the difference. Results of small year groups move a lot from year to "
        "year, and one partnership is one case.",
        *(["", SYNTHETIC_NOTICE] if is_synthetic(r) else []),
        ":::", ""])


def _outcome_words(result: dict, lower: bool = False) -> str:
    """The outcome's description without its DfE field code: 'Percentage of pupils reaching ...'."""
    import re

    text = re.sub(r"\s*\([A-Z0-9_]+\)", "", result["outcome"]["description"]).rstrip(".")
    return text[:1].lower() + text[1:] if lower else text


def _estimates_table(result: dict) -> tuple[str, str]:
    """The three methods' estimates; how each SE was computed is said once below the table, with a
    letter per distinct method (not the same long sentence in every row)."""
    variances: list[str] = []
    rows = []
    for key, label in METHODS.items():
        e = result["estimates"][key]
        if e["variance"] not in variances:
            variances.append(e["variance"])
        mark = "abcdefgh"[variances.index(e["variance"])]
        rows.append([label, num(e["estimate"]), num(e["se"]) + f" ({mark})",
                     f"{num(e['ci_low'])} to {num(e['ci_high'])}"])
    est = table(["Method", "Effect", "SE", "95% CI"], rows, ["l", "r", "r", "r"])
    if len(variances) == 1:
        how = f"How the standard errors were computed (a), the same for all three methods: {escape(variances[0])}."
    else:
        how = "How the standard errors were computed: " + "; ".join(
            f"({'abcdefgh'[i]}) {escape(v)}" for i, v in enumerate(variances)) + "."
    return est, how


def _reproduce_section(result: dict) -> str:
    p = result["provenance"]
    w = result.get("window") or {}
    out = ["## The years compared", "",
           f"Results from {result['years'][0]} to {result['years'][1]} (academic years ending), the first results "
           f"after joining in {result['joined']}. " + escape(w.get("why", "")), "",
           "## How to reproduce", ""]
    if p.get("command"):
        out += ["On a store with the same data fingerprint"
                + (f" (`{p['data_fingerprint']}`, as `impact data info` prints it)" if p.get("data_fingerprint")
                   else "") + ", run:", "", "```bash", p["command"], "```", ""]
        if p.get("schools_file"):
            out += [f"with `{escape(result['name'])}_schools.csv` holding these schools and joining dates:", "",
                    "```text", "urn,joined", *[f"{s['urn']},{s['joined']}" for s in p["schools_file"]], "```", ""]
    else:
        out += [f"`impact self-evaluate` with the same schools, outcome `{result['outcome']['name']}`, family size "
                f"{result['comparison']['family_size']}, seed {p['seed']}.", ""]
    out += [f"Package version {escape(p['package_version'])}, seed {p['seed']}.", ""]
    return "\n".join(out)


def write_self_evaluation_chapter(result: dict, result_dir: Path, source: Path) -> str:
    """Write ``self/<name>.md`` into the book source; returns the toc entry."""
    name = result["name"]
    fig_dir = source / "self" / name
    fig_dir.mkdir(parents=True, exist_ok=True)
    for fig in FIGURES:
        shutil.copyfile(result_dir / "figures" / fig, fig_dir / f"{name}-{fig}")
    rows = ["| School | Comparison schools | Effect | 95% CI |", "|---|---:|---:|---|"]
    for b in result["by_school"]:
        rows.append(f"| {escape(b['name'])} | {b['family_size']} | {num(b['estimate'])} | "
                    f"{num(b['ci_low'])} to {num(b['ci_high'])} |")
    est, how = _estimates_table(result)
    ri = result["randomisation"]
    notes = "".join(f"- {escape(n)}\n" for n in result.get("notes", []))
    text = "\n".join([
        f"(self-{name})=",
        f"# {escape(result.get('title') or name)}: how our schools compare", "",
        summary(result),
        "## Our schools and the comparison, year by year", "",
        f"```{{figure}} {name}/{name}-gaps.png\n:name: self-{name}-gaps\n:width: 90%\n\n"
        f"{escape(_outcome_words(result))} at our schools and at the weighted comparison schools "
        f"(synthetic difference-in-differences weights); the dashed line marks joining.\n```", "",
        "## School by school", "",
        "Each school against its own family of similar schools. One school's result rests on one year group a "
        "year, so expect wide intervals.", "",
        f"```{{figure}} {name}/{name}-schools.png\n:name: self-{name}-schools\n:width: 90%\n\n"
        f"Each school's effect on {escape(_outcome_words(result, lower=True))} with its 95% confidence interval.\n```", "",
        *rows, "",
        "## The partnership's effect by three methods", "",
        est, how, "",
        f"Randomisation inference: among {ri['n_perm']} random groups of the same number of comparison schools, "
        f"the share with a difference at least as large as ours (studentised) is {p_equals(ri['p_value'])}"
        f"{' (all possible groups counted: exact)' if ri['exact'] else ''}.", "",
        *(["## Notes", "", notes] if notes else []),
        _reproduce_section(result),
    ])
    (source / "self" / f"{name}.md").write_text(text, encoding="utf-8")
    return f"self/{name}"
