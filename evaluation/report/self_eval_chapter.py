"""The chapter for a governing body: one partnership's self-evaluation in plain words.

Reads ``results/self-evaluations/<name>/result.json`` (written by ``impact self-evaluate``)
and says what changed, compared with whom, how sure we are, the smallest effect the data
could have shown (MDES), and what the data cannot tell.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from evaluation.report.markdown import escape, num, pvalue

FIGURES = ("gaps.png", "schools.png")


def _months(m: int) -> str:
    return f"{abs(m)} month{'s' if abs(m) != 1 else ''}"


def summary(r: dict) -> str:
    e = r["estimates"]["synthetic_did"]
    es = r["effect_size"]
    ri = r["randomisation"]
    analysed = [s for s in r["schools"] if s["analysed"]]
    outcome = r["outcome"]["description"].rstrip(".")
    outcome = outcome[0].lower() + outcome[1:]
    unit = r["outcome"].get("unit") or "points"
    unit = "percentage points" if unit == "percent" else unit
    direction = "higher" if e["estimate"] > 0 else "lower"
    zero_in = e["ci_low"] <= 0 <= e["ci_high"]
    if zero_in:
        verdict = ("**We cannot tell yet.** The difference could be zero: a gap this size is common among "
                   "groups of similar schools that did not join anything.")
    elif ri["p_value"] < 0.05:
        verdict = (f"**Probably a real difference.** Only {ri['p_value']:.0%} of random groups of similar schools "
                   "showed a gap as large.")
    else:
        verdict = ("**Possibly a real difference, but not a sure one**: random groups of similar schools "
                   f"showed a gap as large {ri['p_value']:.0%} of the time.")
    return "\n".join([
        ":::{admonition} Summary for governors",
        ":class: important",
        "",
        f"**What changed.** Since the schools joined (first results after joining: {r['joined']}), "
        f"{outcome} at our {len(analysed)} schools has been {num(abs(e['estimate']))} {unit} {direction} on "
        f"average than at similar schools (95% confidence interval {num(e['ci_low'])} to {num(e['ci_high'])}). "
        + (f"No effect size or months' progress: {es['withheld']}." if es.get("g") is None else
           f"That is an effect size of {num(es['g'])}, "
           + (f"about {_months(es['months'])}' {'additional' if es['months'] >= 0 else 'less'} progress."
              if es["months"] else "less than one month's progress.")),
        "",
        f"**Compared with whom.** Each of our schools was compared with the {r['comparison']['family_size']} most "
        f"similar {r['phase']} schools in England (its *family of schools*), "
        f"{r['comparison']['schools']} comparison schools in all: {r['comparison']['rule']}.",
        "",
        f"**How sure are we.** {verdict}",
        "",
        f"**The smallest effect we could have seen.** With {len(analysed)} schools, these data could reliably show "
        + (f"an effect of {num(es['mdes_units'])} {unit} or more (80% power, 5% test). "
           if es.get("mdes") is None else
           f"an effect of {num(es['mdes'])} or more (about {_months(es['mdes_months'])}' progress; "
           f"80% power, 5% test). ")
        + "A smaller real effect would most likely go unnoticed: "
        "\"no clear difference\" is not the same as \"no effect\".",
        "",
        "**What the data cannot tell you.** This is not a trial: the comparison schools were chosen to look like "
        "ours before joining, but anything else that changed at our schools at the same time (a new head, a "
        "change of intake) is mixed into the difference. Results of small year groups move a lot from year to "
        "year, and one partnership is one case.",
        ":::", ""])


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
    est = ["| Method | Effect | SE | 95% CI | How the SE was computed |", "|---|---:|---:|---|---|"]
    labels = {"synthetic_did": "Synthetic difference-in-differences", "synthetic_control": "Synthetic control",
              "did": "Difference-in-differences"}
    for key, label in labels.items():
        e = result["estimates"][key]
        est.append(f"| {label} | {num(e['estimate'])} | {num(e['se'])} | {num(e['ci_low'])} to "
                   f"{num(e['ci_high'])} | {escape(e['variance'])} |")
    ri = result["randomisation"]
    notes = "".join(f"- {escape(n)}\n" for n in result.get("notes", []))
    text = "\n".join([
        f"(self-{name})=",
        f"# {escape(result.get('title') or name)}: how our schools compare", "",
        summary(result),
        "## Our schools and the comparison, year by year", "",
        f"```{{figure}} {name}/{name}-gaps.png\n:name: self-{name}-gaps\n:width: 90%\n\n"
        f"Average {result['outcome']['name']} at our schools and at the weighted comparison schools "
        f"(synthetic difference-in-differences weights); the dashed line marks joining.\n```", "",
        "## School by school", "",
        "Each school against its own family of similar schools. One school's result rests on one year group a "
        "year, so expect wide intervals.", "",
        f"```{{figure}} {name}/{name}-schools.png\n:name: self-{name}-schools\n:width: 90%\n\n"
        f"Each school's effect on {result['outcome']['name']} with its 95% confidence interval.\n```", "",
        *rows, "",
        "## The partnership's effect by three methods", "",
        *est, "",
        f"Randomisation inference: among {ri['n_perm']} random groups of the same number of comparison schools, "
        f"the share with a difference at least as large as ours (studentised) is p = {pvalue(ri['p_value'])}"
        f"{' (all possible groups counted: exact)' if ri['exact'] else ''}.", "",
        "## Notes", "",
        notes or "- None.\n",
        "## How to reproduce", "",
        f"`impact self-evaluate` with the same schools, outcome `{result['outcome']['name']}`, family size "
        f"{result['comparison']['family_size']}, seed {result['provenance']['seed']} (package "
        f"{result['provenance']['package_version']}).", "",
    ])
    (source / "self" / f"{name}.md").write_text(text, encoding="utf-8")
    return f"self/{name}"
