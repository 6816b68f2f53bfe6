"""The chapter for a governing body: one partnership's self-evaluation in plain words.

Reads ``results/self-evaluations/<name>/result.json`` (written by ``impact self-evaluate``)
and says, answer first: what changed, whether the partnership is on track for its targets,
which schools are in the answer (and why any is not), compared with whom, how sure we are,
the smallest effect the data could have shown (MDES), how the evidence built up over the
years, and what the data cannot tell.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from evaluation.report.markdown import escape, listing, months_progress, months_words, num, p_equals, plural, table

FIGURES = ("effects.png", "schools.png", "history.png")
METHODS = {"synthetic_did": "Synthetic DiD", "synthetic_control": "Synthetic control", "did": "DiD"}
SYNTHETIC_NOTICE = ("**Data.** These numbers come from the synthetic national panel (generated data with a known "
                    "answer, used to test the methods); they are not findings about real schools.")
STATUS_WORDS = {"met": "Met", "on track": "On track", "off track": "Off track", "not assessed": "Not assessed"}


def is_synthetic(r: dict) -> bool:
    """Whether the self-evaluation ran on the synthetic panel (``provenance.synthetic``)."""
    return bool((r.get("provenance") or {}).get("synthetic"))


def _share(p: float) -> str:
    """A placebo p-value as a share of groups: '43%', 'fewer than 1%'."""
    return "fewer than 1%" if p < 0.005 else f"{p:.0%}"


def _verdict(lo: float, hi: float, p: float) -> str:
    if lo <= 0 <= hi:
        return ("We cannot tell yet. The difference could be zero: a gap this size is common among groups of similar "
                "schools that were in no partnership.")
    if p < 0.05:
        return (f"Probably a real difference. Only {_share(p)} of placebo groups of similar schools showed a gap as "
                "large.")
    return ("Possibly a real difference, but not a sure one: placebo groups of similar schools showed a gap as large "
            f"{_share(p)} of the time.")


def answer(r: dict) -> str:
    """The answer in one sentence or two, plain text (the front page and the summary box use it)."""
    h = r.get("headline")
    if h:
        return _verdict(h["ci_low"], h["ci_high"], h["p_value"])
    parts = []
    for p in r["phases"]:
        e = p["estimates"]["synthetic_did"]
        parts.append(f"{p['phase'].capitalize()} schools: {_verdict(e['ci_low'], e['ci_high'], e['p_value'])}")
    return " ".join(parts)


def _outcome_words(o: dict, lower: bool = False) -> str:
    """An outcome's description without its DfE field code: 'Percentage of pupils reaching ...'; in
    a sentence (``lower``) with its article: 'the percentage of pupils reaching ...'."""
    import re

    text = re.sub(r"\s*\([A-Z0-9_]+\)", "", o["description"]).rstrip(".")
    return "the " + text[:1].lower() + text[1:] if lower else text


def _unit(o: dict) -> str:
    unit = o.get("unit") or "points"
    return "percentage points" if unit == "percent" else unit


def question(r: dict) -> str:
    outcomes = r["outcomes"]
    if len(outcomes) == 1:
        o = next(iter(outcomes.values()))
        return f"Since joining, has {_outcome_words(o, lower=True)} at our schools changed more than at similar schools?"
    words = listing([f"{_outcome_words(o, lower=True)} ({phase} schools)" for phase, o in sorted(outcomes.items())])
    return f"Since joining, have results at our schools changed more than at similar schools: {words}?"


def _phase_sentence(r: dict, p: dict) -> str:
    o = r["outcomes"][p["phase"]]
    e = p["estimates"]["synthetic_did"]
    direction = "higher" if e["estimate"] > 0 else "lower"
    es = p.get("effect_size")
    size = (f"; effect size {num(es['g'])}, {months_progress(es['months'])}" if es else "")
    return (f"at our {plural(p['schools'], p['phase'] + ' school')}, {_outcome_words(o, lower=True)} has been "
            f"{num(abs(e['estimate']))} {_unit(o)} {direction} on average than at similar schools (95% confidence "
            f"interval {num(e['ci_low'], signed=True)} to {num(e['ci_high'], signed=True)}{size})")


def what_changed(r: dict) -> str:
    h = r.get("headline")
    text = "Since each school joined, " + "; ".join(_phase_sentence(r, p) for p in r["phases"]) + "."
    if h and h["scale"] == "effect size":
        text += (f" Across the phases, on one scale: an effect size of {num(h['g'])} (95% confidence interval "
                 f"{num(h['g_ci'][0], signed=True)} to {num(h['g_ci'][1], signed=True)}), "
                 f"{months_progress(h['months'])}.")
    elif h is None and r.get("headline_withheld"):
        text += f" There is no single figure for the partnership: {r['headline_withheld']}."
    if h and h["scale"] == "units" and h.get("g") is None:
        text += " No effect size or months' progress: no pupil-level standard deviation of the outcome is known."
    return text


def _smallest(r: dict) -> str:
    h = r.get("headline")
    n = sum(p["schools"] for p in r["phases"])
    if h and h.get("mdes") is not None:
        size = f"an effect size of {num(h['mdes'])} or more (about {months_words(abs(h['mdes_months']))} progress;"
    elif h:
        o = r["outcomes"][h["phase"]]
        size = f"an effect of {num(h['mdes_units'])} {_unit(o)} or more ("
    else:
        size = listing([f"{num(p['mdes_units'])} {_unit(r['outcomes'][p['phase']])} for {p['phase']} schools"
                        for p in r["phases"]]) + " ("
    return (f"With {plural(n, 'school')}, these data could reliably show {size} 80% power, 5% test). A smaller real "
            "effect would most likely go unnoticed: \"no clear difference\" is not the same as \"no effect\".")


def _targets_line(r: dict) -> str:
    ts = r.get("targets") or []
    if not ts:
        return ("**Are we on track?** No targets were set: add them to the partnership file (baseline year, target "
                "per outcome) to track them here.")
    parts = [f"{escape(_target_name(t))}: **{STATUS_WORDS[t['status']].lower()}**" for t in ts]
    return "**Are we on track?** " + _capital("; ".join(parts)) + " (details below)."


def _target_name(t: dict) -> str:
    """'the percentage of pupils ... to rise by 8.00 percentage points from 2012 by 2024'."""
    o = {"description": t["description"], "unit": t["unit"]}
    what, unit, v = _outcome_words(o, lower=True), _unit(o), t["target"]
    if t["kind"] == "level":
        return f"{what} to reach {num(v)} by {t['year']}"
    if t["kind"] == "change":
        return (f"{what} to {'rise' if v >= 0 else 'fall at most'} by {num(abs(v))} {unit} from {t['baseline_year']} "
                f"by {t['year']}")
    if v >= 0:
        return f"{what} to be {num(v)} {unit} or more above England's by {t['year']}"
    return f"{what} to be at most {num(abs(v))} {unit} below England's by {t['year']}"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def summary(r: dict) -> str:
    analysed = [s for s in r["schools"] if s["status"] == "analysed"]
    left_out = [s for s in r["schools"] if s["status"] == "excluded"]
    words = answer(r)
    cut = min((i for i in (words.find(". "), words.find(": ")) if i >= 0), default=len(words))
    verdict = f"**{escape(words[:cut + 1])}**{escape(words[cut + 1:])}"
    schools = (f"{plural(len(analysed), 'school')} of {len(r['schools'])} are in the answer"
               + (f"; {plural(len(left_out), 'school')} could not be analysed (reasons below)" if left_out else "")
               + ("; the supporting school is reported on its own" if r.get("supporting") else "") + ".")
    return "\n".join([
        ":::{admonition} Summary for governors",
        ":class: important",
        "",
        f"**What changed.** {escape(what_changed(r))} {escape(schools)}",
        "",
        _targets_line(r),
        "",
        f"**Compared with whom.** Each of our schools was compared with the {r['comparison']['family_size']} most "
        f"similar schools of its phase in England (its *family of schools*), {r['comparison']['schools']} comparison "
        f"schools in all: {escape(r['comparison']['rule'])}.",
        "",
        f"**How sure are we.** {verdict}",
        "",
        f"**The smallest effect we could have seen.** {escape(_smallest(r))}",
        "",
        "**What the data cannot tell you.** This is not a trial: the comparison schools were chosen to look like "
        "ours before joining, but anything else that changed at our schools at the same time (a new head, a "
        "change of intake) is mixed into the difference. Results of small year groups move a lot from year to "
        "year, and one partnership is one case: what its schools share (the same trust leadership, the same "
        "local events) is not in the interval.",
        *(["", SYNTHETIC_NOTICE] if is_synthetic(r) else []),
        ":::", ""])


def _targets_section(r: dict, name: str) -> list[str]:
    ts = r.get("targets") or []
    if not ts:
        return []
    rows = []
    for t in ts:
        if t["status"] == "not assessed":
            rows.append([escape(_capital(_target_name(t))), "\u2014", "\u2014", "\u2014", "\u2014", f"Not assessed: {escape(t['reason'])}"])
            continue
        signed = t["kind"] != "level"
        rows.append([escape(_capital(_target_name(t))), f"{num(t['baseline'], signed=signed)} ({t['baseline_year']})",
                     f"{num(t['latest'], signed=signed)} ({t['latest_year']})", num(t["change"], signed=True),
                     "\u2014" if t["predicted_change"] is None else num(t["predicted_change"], signed=True),
                     f"**{STATUS_WORDS[t['status']]}**: {escape(t['reason'])}"])
    out = ["## Are we on track for our targets?", "",
           table(["Target", "Baseline", "Latest", "Change", "Similar schools' change", "Status"], rows,
                 ["l", "r", "r", "r", "r", "l"]), "",
           f"How the status is decided: {escape(ts[0]['rule'])} \"Similar schools' change\" is the change the "
           "families of similar schools made over the same years: roughly what our schools might have done without "
           "the partnership.", ""]
    if any(t["series"] for t in ts):
        out += [f"```{{figure}} {name}/{name}-targets.png\n:name: self-{name}-targets\n:width: 80%\n\n"
                "Each target: our schools since the baseline (solid), the straight line from the baseline to the "
                "target (dashed) and what similar schools' change predicts (dotted).\n```", ""]
    return out


def _schools_section(r: dict) -> list[str]:
    rows = []
    for s in r["schools"]:
        state = {"analysed": "Yes", "supporting": "Reported on its own (supporting school)"}.get(
            s["status"], f"No: {s['reason']}")
        rows.append([escape(s["name"]), s["phase"], s["joined_on"], str(s["first_exposed_year"]), escape(state)])
    return ["## Which schools are in the answer", "",
            "Every school counts from its own first results after joining, on its phase's outcome; a school is left "
            "out only for the reason shown.", "",
            table(["School", "Phase", "Joined", "First results after joining", "In the answer?"], rows,
                  ["l", "l", "l", "r", "l"]), ""]


def _phases_section(r: dict, name: str) -> list[str]:
    rows = []
    for p in r["phases"]:
        o = r["outcomes"][p["phase"]]
        e = p["estimates"]["synthetic_did"]
        es = p.get("effect_size")
        rows.append([p["phase"].capitalize(), escape(_outcome_words(o)), str(p["schools"]),
                     f"{num(e['estimate'], signed=True)} ({num(e['ci_low'], signed=True)} to "
                     f"{num(e['ci_high'], signed=True)})", p_equals(e["p_value"]),
                     "\u2014" if not es else num(es["g"], signed=True)])
    cohort_rows = []
    for c in r["cohorts"]:
        est = c["estimates"]
        cohort_rows.append([c["phase"].capitalize(), str(c["joined"]), str(len(c["schools"])),
                            str(c["comparison_schools"]),
                            *[num(est[m]["estimate"], signed=True) if m in est else "\u2014" for m in METHODS],
                            f"{c['years'][0]}-{c['years'][-1]}"])
    h = r.get("headline")
    combined = ([f"Across the phases, on one scale (each phase's effect divided by its pupil-level standard "
                 f"deviation, weighted by its number of schools): effect size {num(h['g'], signed=True)} (95% CI "
                 f"{num(h['g_ci'][0], signed=True)} to {num(h['g_ci'][1], signed=True)}), placebo "
                 f"{p_equals(h['p_value'])}.", ""] if h and h["scale"] == "effect size" else
                [escape(r["headline_withheld"]) + ".", ""] if r.get("headline_withheld") else [])
    return ["## The effect by phase and joining year", "",
            "Schools of one phase whose first results after joining came in the same year form a *joining cohort*; "
            "each cohort is compared with its schools' families by synthetic difference-in-differences, and a "
            "phase's effect is the average over its cohorts weighted by their numbers of schools.", "",
            table(["Phase", "Outcome", "Schools", "Effect (95% CI)", "Placebo p", "Effect size"], rows,
                  ["l", "l", "r", "r", "r", "r"]), "", *combined,
            table(["Phase", "First results after joining", "Schools", "Comparison schools",
                   *METHODS.values(), "Years compared"], cohort_rows,
                  ["l", "r", "r", "r", "r", "r", "r", "l"]), "",
            "Synthetic control and plain DiD are shown beside synthetic DiD as a check: when they disagree "
            "strongly, the comparison is fragile.", "",
            f"```{{figure}} {name}/{name}-effects.png\n:name: self-{name}-effects\n:width: 95%\n\n"
            "The difference between our schools and their weighted comparison schools by years since joining "
            "(the years before joining should sit near zero); the dashed line marks joining.\n```", ""]


def _by_school_section(r: dict, name: str) -> list[str]:
    rows = [[escape(b["name"]), b["phase"], str(b["joined"]), str(b["family_size"]), num(b["estimate"], signed=True),
             f"{num(b['ci_low'], signed=True)} to {num(b['ci_high'], signed=True)}"] for b in r["by_school"]]
    return ["## School by school", "",
            "Each school against its own family of similar schools. One school's result rests on one year group a "
            "year, so expect wide intervals.", "",
            f"```{{figure}} {name}/{name}-schools.png\n:name: self-{name}-schools\n:width: 90%\n\n"
            "Each school's effect with its 95% confidence interval, in its phase's outcome.\n```", "",
            table(["School", "Phase", "First results after joining", "Comparison schools", "Effect", "95% CI"], rows,
                  ["l", "l", "r", "r", "r", "r"]), ""]


def _supporting_section(r: dict) -> list[str]:
    if not r.get("supporting"):
        return []
    out = ["## The supporting school", "",
           "Does supporting other schools help or harm the school that gives the support? The supporting school "
           "against its own family of similar schools, from when it began supporting; it is not in the "
           "partnership's average.", ""]
    for s in r["supporting"]:
        o = r["outcomes"][s["phase"]]
        if s.get("estimate") is None:
            out += [f"- {escape(s['name'])}: not analysed: {escape(s['reason'])}.", ""]
            continue
        direction = "higher" if s["estimate"] > 0 else "lower"
        out += [f"- **{escape(s['name'])}** ({s['phase']}): {_outcome_words(o, lower=True)} averaged "
                f"{num(s['before'])} in the years before and {num(s['after'])} after; against its family of "
                f"{s['family_size']} similar schools it was {num(abs(s['estimate']))} {_unit(o)} {direction} than "
                f"expected (95% CI {num(s['ci_low'], signed=True)} to {num(s['ci_high'], signed=True)}). "
                + ("We cannot tell whether supporting other schools changed its results: the interval includes zero."
                   if s["ci_low"] <= 0 <= s["ci_high"] else
                   f"Its results were {direction} than its family's predicted; the interval excludes zero.")
                + "", ""]
    return out


def _history_section(r: dict, name: str) -> list[str]:
    rows = []
    for h in r["history"]:
        if h["estimate"] is None:
            est = "one figure not available (phases shown separately)"
        else:
            est = (f"{num(h['estimate'], signed=True)} ({num(h['ci_low'], signed=True)} to "
                   f"{num(h['ci_high'], signed=True)})")
        rows.append([str(h["data_last_year"]), str(h["schools_analysed"]), est,
                     f"`{h['data_fingerprint']}`" if h.get("data_fingerprint") else "\u2014"])
    scale = "effect size" if (r.get("headline") or {}).get("scale") == "effect size" else "outcome units"
    more = ("" if len(rows) > 1 else " This is the first run: each time the evaluation is re-run after a new year "
            "of results, a row is added, so governors see the evidence build up rather than a new answer each year.")
    return ["## How the evidence has built up", "",
            f"The partnership's estimate ({scale}) each time this evaluation was run with a new year of "
            f"results.{more}", "",
            table(["Latest results", "Schools analysed", "Estimate (95% CI)", "Data fingerprint"], rows,
                  ["r", "r", "r", "l"]), "",
            f"```{{figure}} {name}/{name}-history.png\n:name: self-{name}-history\n:width: 70%\n\n"
            "The estimate and its 95% confidence interval as each year's results arrived.\n```", ""]


def _reproduce_section(result: dict) -> str:
    p = result["provenance"]
    w = result.get("window") or {}
    out = ["## The years compared", "",
           f"Results from {result['years'][0]} to {result['years'][1]} (academic years ending). "
           + escape(w.get("why", "")), "",
           "## How it was worked out", "",
           f"Estimator: {escape(result['method']['estimator'])}. Inference: {escape(result['method']['inference'])}. "
           f"Smallest detectable effect: {escape(result['method']['mdes_rule'])}.", "",
           "## How to reproduce", ""]
    out += ["On a store with the same data fingerprint"
            + (f" (`{p['data_fingerprint']}`, as `impact data info` prints it)" if p.get("data_fingerprint")
               else "") + ", run:", "", "```bash", p["command"], "```", ""]
    if p.get("schools_file"):
        cols = list(p["schools_file"][0])
        out += [f"with `{escape(result['name'])}_schools.csv` holding these schools and joining dates:", "",
                "```text", ",".join(cols), *[",".join(str(s[c]) for c in cols) for s in p["schools_file"]], "```",
                ""]
    out += [f"Package version {escape(p['package_version'])}, seed {p['seed']}.", ""]
    return "\n".join(out)


def write_self_evaluation_chapter(result: dict, result_dir: Path, source: Path) -> str:
    """Write ``self/<name>.md`` into the book source; returns the toc entry."""
    name = result["name"]
    fig_dir = source / "self" / name
    fig_dir.mkdir(parents=True, exist_ok=True)
    for fig in (*FIGURES, "targets.png"):
        if (result_dir / "figures" / fig).exists():
            shutil.copyfile(result_dir / "figures" / fig, fig_dir / f"{name}-{fig}")
    notes = "".join(f"- {escape(n)}\n" for n in result.get("notes", []))
    text = "\n".join([
        f"(self-{name})=",
        f"# {escape(result.get('title') or name)}: how our schools compare", "",
        summary(result),
        *_targets_section(result, name),
        *_schools_section(result),
        *_phases_section(result, name),
        *_by_school_section(result, name),
        *_supporting_section(result),
        *_history_section(result, name),
        *(["## Notes", "", notes] if notes else []),
        _reproduce_section(result),
    ])
    (source / "self" / f"{name}.md").write_text(text, encoding="utf-8")
    return f"self/{name}"
