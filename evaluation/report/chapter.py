"""One book chapter per study: MyST markdown written from results/<id>/ (never re-estimated).

The chapter follows the EEF report convention: a summary box for a committee reader
first (question, answer, effect size with its 95% CI, months' progress, padlocks with
the reason for every lost padlock, numbers of schools and partnerships, the main
caveat), then the material a referee checks: cohort and comparison schools (with a map
when the results carry coordinates), balance, trends, event study and pre-trend tests,
estimates across estimators with their variance conventions, robustness and
diagnostics, provenance and the command that reproduces the numbers.

Effect sizes, months' progress, padlocks and the plain-English sentences come from
``evaluation.effects``; this module only lays them out.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evaluation.data.schema import description_words, sentence_case
from evaluation.report.figures import column_label
from evaluation.report.specification_curve import specification_curve_section
from evaluation.report.markdown import (count, escape, estimator_name, months_range, months_words, num,
                                        ordered_estimators, p_equals, padlocks_html, pct, pvalue, table,
                                        types_listing, year_span)

FIGURES = ("trends.png", "event_study.png", "love_plot.png")
HETEROGENEITY_FIGURE = "heterogeneity.png"  # written only for a study with [heterogeneity]
MAP_TABLE = "schools.csv"
MAP_COLUMNS = ("urn", "group", "easting", "northing")
SUPPRESSED = "suppressed"  # a cell disclosure control left out (evaluation.publish.disclosure), never 0 or blank
WITHHELD = "not shown (disclosure control)"  # a number of the sample flow, withheld as a block (ditto)
LOST_REASONS = {
    "too_few_pre_years": "too few years of results before joining to match on",
    "missing_covariates": "a matching characteristic was missing (often a suppressed result)",
    "no_match_within_caliper": "no comparison school similar enough (outside the caliper)",
    "no_outcome_in_window": "no published result in the study window",
}
METHOD_WORDS = {
    "nearest": "nearest-neighbour matching on the propensity score (logistic regression)",
    "mahalanobis": "nearest-neighbour matching on the Mahalanobis distance",
    "family": "a DfE-style 'family of schools' (the most similar schools on the covariates)",
    "none": "no matching (every school in the comparison pool is used)",
}


@dataclass(frozen=True)
class Chapter:
    study_id: str
    title: str
    path: Path  # the markdown file, inside the book source
    padlocks: int


def outcome_name(result: dict) -> str:
    """The outcome in words mid-sentence ('average Attainment 8 score per pupil'), never its column name."""
    return sentence_case(description_words(result["outcome"].get("description") or result["outcome"]["name"]))


def characteristics(names) -> str:
    """Matching characteristics in words ('outcome 1 year before joining, percentage of pupils eligible ...')."""
    return ", ".join(sentence_case(column_label(str(n))) for n in names)


def unit_words(result: dict) -> str:
    unit = result["outcome"].get("unit") or "points"
    return "percentage points" if unit == "percent" else unit


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def is_synthetic(result: dict) -> bool:
    return result.get("synthetic_truth") is not None


# ---------------------------------------------------------------------------- summary box


def _how_much(result: dict) -> str:
    es = result["effects"]
    primary = result["headline"]
    units = (f"{num(primary['estimate'])} {escape(unit_words(result))} "
             f"(95% CI {num(primary['ci_low'])} to {num(primary['ci_high'])})")
    if es["g"] is None:
        return (f"**How much.** In the outcome's own units: {units}. No effect size or months' progress: "
                f"{escape(es['withheld'])}")
    lo_m, hi_m = es["months_ci"]
    months = (f"about **{months_words(es['months'])} {'additional' if es['months'] >= 0 else 'less'} progress**"
              if es["months"] else "**less than one month's progress**")
    return (f"**How much.** Effect size {num(es['g'])} (95% confidence interval {num(es['g_ci'][0])} to "
            f"{num(es['g_ci'][1])}), "
            f"{months} (95% range {months_range(lo_m, hi_m)}). "
            f"In the outcome's own units: {units}.")


def _checks_lines(result: dict) -> list[str]:
    words = {True: "**fails**", False: "passes", None: "not available"}
    return [f"  - {escape(c['title'])}: {words[c['failed']]} ({escape(c['detail'])})"
            for c in result["verdict"]["checks"]]


def summary_box(result: dict) -> str:
    sec = result["effects"]
    words = result["summary"]
    c = result["counts"]
    reasons = "\n".join(f"  - {escape(r)}" for r in sec["padlock_reasons"]) or "  - none: the study keeps every padlock"
    lines = [
        ":::{admonition} Summary",
        ":class: summary-box",
        "",
        f"**The question.** {escape(words['question'])}",
        "",
        f"**The answer.** {escape(words['answer'])}",
        "",
        _how_much(result),
        "",
        "**Checks of the design** (the answer is \"we cannot tell\" when one fails; see the methods chapter):",
        "",
        *_checks_lines(result),
        "",
        f"**How sure are we.** {padlocks_html(sec['padlocks'])}",
        "",
        "Padlocks lost, one reason each:",
        "",
        reasons,
        "",
        f"**Who was compared.** {count(c['treated_analysed'])} partnership schools in "
        f"{count(c['partnerships'])} partnerships, against {count(c['comparison_matched'])} similar schools "
        f"that did not join.",
        "",
        f"**Main caveat.** {escape(words['caveat'])}",
    ]
    if is_synthetic(result):
        lines += ["", "**Data.** These numbers come from the synthetic national panel (generated data with a "
                      "known answer, used to test the methods); they are not findings about real schools."]
    lines += [":::", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- sections


#: What counts as treated, by ``[cohort] exposure`` (``evaluation.stages.cohort``).
EXPOSURE_WORDS = {
    "ever_joined": ("**What counts as joining.** A school counts as treated from its first year of results after "
                    "joining, whatever happened after (if it later left or moved, that is part of the effect of "
                    "having joined: an intention-to-treat comparison)."),
    "moved": ("**What counts as treated.** The event studied is a move: a school leaving one partnership and "
              "joining another of the same kind within a month (re-brokerage). Schools that moved are compared "
              "with schools that stayed in one partnership, without moving or leaving, through the years "
              "compared; both had been in their partnership for at least {settled} year(s) before those years, "
              "so the comparison is of moving against staying, not of joining. What is estimated is the effect "
              "of having moved, from the first year of results in the new partnership."),
    "in_partnership": ("**What counts as treated.** A school counts as treated only while it is a member: the "
                       "treatment switches on in its first year of results after joining and off in its first "
                       "year after leaving (and on again if it re-joins). Only de Chaisemartin & "
                       "D'Haultfoeuille's estimator allows for a treatment that ends; it compares each school whose "
                       "membership changes with schools whose membership has not changed yet, and its headline is "
                       "the average effect per year of membership."),
}


def _cohort_section(result: dict, tables: Path, fig_dir: Path, rel: str) -> str:
    d = result["study"]["definition"]
    cohort, comp = d["cohort"], d["comparison"]
    c = result["counts"]
    m = result["matching"]
    types = types_listing(cohort["partnership_types"], "or", articles=True)
    g0, g1 = cohort["joined_between"]
    out = ["## Who was in the study", ""]
    exposure = cohort.get("exposure", "ever_joined")
    which = (f"{escape(cohort['phase'])} schools that "
             + (f"moved from {escape(types)} to another, with first results in the new one "
                if exposure == "moved" else f"joined {escape(types)} with first results after joining ")
             + year_span(g0, g1)
             + (" (sponsor-led trusts only)" if cohort.get("sponsor_led") is True else
                " (converter academies, not sponsor-led)" if cohort.get("sponsor_led") is False else "")
             + (" (lead schools only: the schools that support the others, such as a teaching school or a "
                "trust's founding school)" if cohort.get("role") == "lead" else
                " (member schools only, not the lead schools)" if cohort.get("role") == "member" else ""))
    if flow_withheld(result):
        out.append(f"The study looked for {which}. {count(c['treated_analysed'])} of them are in the analysis. "
                   f"How many were found, and how many were lost at each step, is {WITHHELD}:")
        out.append("")
        out += [f"- {escape(LOST_REASONS.get(key, key.replace('_', ' ')))}: {WITHHELD}"
                for key in sorted(c["treated_lost"])]
    else:
        out.append(f"The study found {count(c['treated_found'])} {which}. {count(c['treated_analysed'])} of them are "
                   f"in the analysis; {count(c['treated_found'] - c['treated_analysed'])} ({pct(c['attrition'])}) "
                   "were lost" + (":" if c["treated_found"] > c["treated_analysed"] else "."))
        out.append("")
        out += [f"- {escape(LOST_REASONS.get(key, key.replace('_', ' ')))}: {count(n)}"
                for key, n in sorted(c["treated_lost"].items()) if n]
    out += ["", EXPOSURE_WORDS[exposure].format(settled=cohort.get("settled_years", 0))]
    out += ["", "**How comparison schools were chosen.** "
            + " ".join(escape(r[0].upper() + r[1:]) + "." for r in m["comparison_pool_rule"])
            + f" The pool held {count(c['comparison_pool'])} schools. Each joining year's schools were matched "
              f"to pool schools on their own years before joining, by {escape(METHOD_WORDS.get(m['method'], m['method']))}"
            + (f", up to {m['ratio']} comparison schools per partnership school" if m["method"] in
               ("nearest", "mahalanobis") else "")
            + (f", within a caliper of {m['caliper']} standard deviations of the distance" if m.get("caliper")
               else "")
            + (", with replacement" if m.get("replace") else ", without replacement")
            + f", exactly on {escape(', '.join(m['exact']))}. Matching characteristics: "
            + escape(characteristics(m["covariates"])) + ".", ""]
    if comp.get("exclude_types"):
        excluded = types_listing(comp["exclude_types"], "or", articles=True)
        out += [f"Schools that ever joined {escape(excluded)} "
                "were kept out of the comparison pool.", ""]
    rows = [[g["g"], _flow_count(g["treated"]), _flow_count(g["treated_matched"]), count(g["comparison_matched"])]
            for g in c["cohorts"]] + [[int(s["key"]), SUPPRESSED, SUPPRESSED, SUPPRESSED]
                                      for s in _suppressed(result, "counts.cohorts")]
    rows.sort(key=lambda row: row[0])
    out.append(table(["First year of results after joining", "Partnership schools", "Matched",
                      "Comparison schools matched"], rows, ["l", "r", "r", "r"]))
    out.append(_map(result, tables, fig_dir, rel))
    return "\n".join(out)


def _map(result: dict, tables: Path, fig_dir: Path, rel: str) -> str:
    """A map of the schools from tables/schools.csv (urn, group, easting, northing), if present."""
    sid = result["study"]["id"]
    src = tables / MAP_TABLE
    try:
        frame = pd.read_csv(src) if src.exists() else None
    except pd.errors.EmptyDataError:
        frame = None
    hidden = _suppressed(result, "counts.cohorts")
    if hidden and (frame is None or frame.empty) and not result["counts"]["cohorts"]:
        return ":::{note}\nNo map: every cohort's schools are suppressed (see *What is not shown*).\n:::\n"
    if frame is None or frame.empty or not set(MAP_COLUMNS) <= set(frame.columns):
        return (":::{note}\nNo map: the results do not include the schools' locations "
                f"(`tables/{MAP_TABLE}` with columns {', '.join(MAP_COLUMNS)}).\n:::\n")
    from evaluation.report.figures import COLOURS, _save, plt

    frame = frame.dropna(subset=["easting", "northing"]).sort_values(["group", "urn"], kind="stable")
    fig, ax = plt.subplots(figsize=(5.2, 6.2))
    for group, size, label in (("comparison", 6, "Matched comparison schools"),
                               ("partnership", 10, "Partnership schools")):
        d = frame[frame["group"] == group]
        ax.scatter(d["easting"] / 1000, d["northing"] / 1000, s=size, color=COLOURS[group], alpha=0.7,
                   label=f"{label} ({len(d):,})", linewidths=0)
    ax.set_aspect("equal")
    ax.set_xlabel("Easting (km, British National Grid)")
    ax.set_ylabel("Northing (km)")
    ax.set_title("Where the schools are")
    # below the map, never over the points
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2)
    ax.grid(alpha=0.3)
    _save(fig, fig_dir / f"{sid}-map.png")
    return _figure(f"{rel}/{sid}-map.png", f"{sid}-map",
                   "Partnership schools and their matched comparison schools (British National Grid)."
                   + (f" Schools of the {_cohort_words([int(h['key']) for h in hidden])} (suppressed) are not "
                      "shown." if hidden else ""),
                   width="65%")


def flow_withheld(result: dict) -> bool:
    """Whether disclosure control withheld the sample flow as a block (schools found, lost, attrition)."""
    return result["counts"].get("treated_found") is None


def _flow_count(n) -> str:
    return WITHHELD if n is None else count(n)


def _figure(path: str, name: str, caption: str, alt: str | None = None, width: str = "100%") -> str:
    return (f"```{{figure}} {path}\n:name: {name}\n:alt: {alt or caption}\n:width: {width}\n\n"
            f"{caption}\n```\n")


def _suppressed(result: dict, table: str) -> list[dict]:
    """The items of one table that disclosure control left out (result.json ``disclosure``)."""
    return [s for s in (result.get("disclosure") or {}).get("suppressed", []) if s["table"] == table]


def _cohort_words(gs: list[int]) -> str:
    gs = sorted(gs)
    if len(gs) == 1:
        return f"{gs[0]} cohort"
    return ", ".join(map(str, gs[:-1])) + f" and {gs[-1]} cohorts"


def _disclosure_section(result: dict) -> str:
    """What is not shown and why (the ``disclosure`` block written by evaluation.publish.disclosure)."""
    d = result.get("disclosure")
    if not d:
        return ""
    t, unit = d["threshold"], d.get("unit", "schools")
    out = ["## What is not shown (disclosure control)", "",
           f"Counts and statistics from fewer than {t} {escape(unit)} are not published"
           + (": the ONS Secure Research Service output rule, which also suppresses further counts where a small "
              "one could otherwise be worked out from a total." if not d.get("lowered") else
              f". **The study lowers the threshold to {t} {escape(unit)}, below the ONS Secure Research Service "
              f"default of {d['default_threshold']}**, because: {escape(d.get('reason') or '')}"), ""]
    cohorts = _suppressed(result, "counts.cohorts")
    first = [int(s["key"]) for s in cohorts if s["rule"] == "primary"]
    then = [int(s["key"]) for s in cohorts if s["rule"] != "primary"]
    if first:
        text = f"The {_cohort_words(first)} (fewer than {t} {escape(unit)})"
        if then:
            text += (f" and, so that {'it' if len(first) == 1 else 'they'} cannot be worked out from the totals, "
                     f"the {_cohort_words(then)}")
        many = len(first) + len(then) > 1
        out += [text + f": {'their' if many else 'its'} counts, schools, matched pairs and map points are not "
                "shown, nor any statistic from " + ("them alone" if many else "it alone")
                + ". The totals and the overall estimate include them.", ""]
    others = [s for s in (d.get("suppressed") or []) if s["table"] not in ("counts.cohorts", "counts.flow", "power")]
    flow = _suppressed(result, "counts.flow")
    if flow:
        out += [f"The numbers of partnership schools found and lost at each step (the sample flow: found, lost by "
                "reason, the share lost, the partnership schools entering matching and matched in each cohort, and "
                "the planned power's numbers of schools with the ingredients they could be worked out from) are not "
                f"shown: {escape(flow[0]['reason'])}. The partnership schools analysed "
                f"({count(result['counts']['treated_analysed'])}) are shown; the minimum detectable effect size is "
                "given to 2 decimals.", ""]
    if others:
        out += ["Also not shown:", ""]
        for s in others:
            what = s["what"]
            if s["table"].startswith("event_study.") and isinstance(s["key"], list):
                what = (f"the {estimator_name(s['table'].removeprefix('event_study.'))} effects by year since "
                        "joining at e = " + ", ".join(map(str, s["key"])))
            what = what[0].upper() + what[1:]
            out.append(f"- {escape(what)}: {escape(s['reason'])}.")
        out.append("")
    if not cohorts and not others and not flow:
        out += ["Nothing in this study needed suppressing.", ""]
    kept = d.get("not_suppressed") or []
    if kept:
        out += ["Left in, knowingly:", ""]
        out += [f"- {escape(k['reason'][0].upper() + k['reason'][1:])}." for k in kept]
        out.append("")
    return "\n".join(out)


def _balance_section(result: dict, rel: str) -> str:
    sid = result["study"]["id"]
    bal = result["diagnostics"].get("balance") or {}
    rows = [[escape(column_label(b["covariate"])), num(b["mean_treated"]), num(b["mean_comparison_before"]),
             num(b["mean_comparison_after"]), num(b["smd_before"]), num(b["smd_after"]),
             num(b["variance_ratio_after"])] for b in result["matching"]["balance"]]
    above = bal.get("covariates_above_threshold") or []
    verdict = (f"After matching, every characteristic is within the usual threshold of "
               f"{bal.get('threshold', 0.1)} standard deviations (largest {num(bal.get('max_abs_smd_after'))})."
               if not above else
               f"After matching, {len(above)} characteristic(s) still differ by more than "
               f"{bal.get('threshold', 0.1)} standard deviations: {escape(characteristics(above))}.")
    return "\n".join([
        "## Were the groups alike before joining?", "",
        "Standardised mean differences (SMD: the difference in means divided by the partnership schools' "
        "standard deviation, as MatchIt reports it) before and after matching, and the variance ratio after "
        "matching. " + verdict, "",
        table(["Characteristic", "Partnership mean", "Pool mean", "Matched comparison mean", "SMD before",
               "SMD after", "Variance ratio after"], rows, ["l", "r", "r", "r", "r", "r", "r"]),
        _figure(f"{rel}/{sid}-love_plot.png", f"{sid}-love",
                "Love plot: absolute standardised mean differences before (open) and after (filled) matching; "
                "the dashed line is 0.1."),
    ])


def _trends_section(result: dict, rel: str) -> str:
    sid = result["study"]["id"]
    return "\n".join([
        "## Outcome trends", "",
        f"Mean {escape(outcome_name(result))} of partnership schools and their "
        "matched comparison schools by year relative to joining (comparison schools aligned on the joining "
        "year of the partnership schools they were matched to, weighted by the matching weights).", "",
        _figure(f"{rel}/{sid}-trends.png", f"{sid}-trends", "Outcome trends, partnership vs matched comparison schools."),
        *([] if result["trends"] else
          ["", "No year can be shown: each rests on fewer schools than the disclosure threshold, or on some but "
               "not all of the cohorts withheld (see the disclosure section).", ""]),
    ])


def _pretrend_rows(result: dict) -> list[list]:
    rows = []
    for name, t in sorted((result["diagnostics"].get("pretrend") or {}).items()):
        if not t:
            continue
        df = ", ".join("\u221e" if d is None else str(d) for d in t["df"])
        label = {"F": "F", "t": "t", "chi2": "Wald \u03c7\u00b2"}[t["distribution"]]
        stat = f"{label} = {num(t['statistic'])} ({df} df)"
        reading = "fails: groups diverged before joining" if t["p_value"] < 0.05 \
            else "passes (no evidence of different paths before joining)"
        if t.get("not_for_verdict"):
            reading = "not used for the answer: " + t["not_for_verdict"]
        elif t.get("for_verdict"):
            reading += "; this is the test the answer uses"
        rows.append([estimator_name(name), t["test"], stat, pvalue(t["p_value"]), reading])
    return rows


def _event_section(result: dict, rel: str) -> str:
    sid = result["study"]["id"]
    out = ["## Effect by year since joining (event study)", "",
           "Each point is the estimated difference between partnership and comparison schools in a year "
           "relative to joining, against the year before joining (-1), with its 95% confidence interval. "
           "Before joining (negative years) the points should sit around zero: if they do not, the two groups "
           "were already on different paths and the estimate after joining is in doubt.", "",
           _figure(f"{rel}/{sid}-event_study.png", f"{sid}-event-study",
                   "Event study: effect by year since joining, with 95% confidence intervals"
                   + (" and the planted (synthetic) effect." if is_synthetic(result) else ".")),
           "**Pre-trend tests** (joint tests that the effects before joining are all zero):", ""]
    rows = _pretrend_rows(result)
    out.append(table(["Estimator", "Test", "Statistic", "p-value", "Reading"], rows, ["l", "l", "r", "r", "l"])
               if rows else "No pre-trend test was computed for this study.\n")
    return "\n".join(out)


def _estimates_section(result: dict) -> str:
    ests = result["estimates"]
    primary = result["primary_estimator"]
    rows, conventions = [], []
    for name in ordered_estimators(ests):
        e = ests[name]
        label = estimator_name(name) + (" (primary)" if name == primary else "")
        if e["estimate"] is None:
            rows.append([label, "event-time only", "\u2014", "\u2014", "\u2014", count(e["n_units"]),
                         count(e["n_clusters"])])
        else:
            rows.append([label, num(e["estimate"], 3), f"{num(e['ci_low'], 3)} to {num(e['ci_high'], 3)}",
                         num(e["se"], 3), pvalue(e["p"]), count(e["n_units"]), count(e["n_clusters"])])
        v = e["variance"]
        conventions.append(f"- **{estimator_name(name)}**: {escape(v['kind'])}; small-sample correction: "
                           f"{escape(v['small_sample'])}; inference: "
                           + (f"t with {v['df']} df" if v.get("df") else "normal approximation") + ".")
        for note in e.get("notes") or []:
            conventions.append(f"  - note: {escape(note)}")
    return "\n".join([
        "## Estimates across estimators", "",
        f"The average effect on {escape(outcome_name(result))} ({escape(unit_words(result))}) after joining, "
        "by each estimator. Two-way fixed effects can be biased when schools join at different times and effects "
        "grow with time (Goodman-Bacon 2021); the other estimators are built to avoid that bias. The headline "
        f"uses the primary estimator, {estimator_name(primary)}.", "",
        table(["Estimator", "Estimate", "95% CI", "SE", "p", "Schools", "Clusters"], rows,
              ["l", "r", "r", "r", "r", "r", "r"]),
        *_headline_lines(result),
        "**Variance convention of each estimator** (as the code names it):", "",
        "\n".join(conventions), "",
        *_clustering_lines(result),
    ])


def _headline_lines(result: dict) -> list[str]:
    """Which interval the headline reports, and why (the calibration table)."""
    h = result.get("headline")
    if not h:
        return []
    return ["**The headline's interval.** The summary reports the primary estimate "
            f"{num(h['estimate'], 3)} with the 95% interval {num(h['ci_low'], 3)} to {num(h['ci_high'], 3)} "
            f"(SE {num(h['se'], 3)}, {p_equals(h['p'])}): {escape(h['description'])}. Why this interval: "
            f"{escape(h['reason'])}" + (f" Caution: {escape(h['flag'])}" if h.get("flag") else ""), ""]


def _chaining_words(cl: dict) -> str:
    """A caution when matched sets chain partnerships together into fewer clusters than there are
    partnerships: few, large, mixed clusters the calibration table does not cover."""
    rows = {r["clustering"]: r for r in cl["rows"]}
    ms, part = rows.get("matched_set"), rows.get("partnership")
    if not ms or not part or ms["n_clusters"] >= part["n_treated_clusters"]:
        return ""
    return (f" Here the matched sets chain the {part['n_treated_clusters']} partnerships into only {ms['n_clusters']} "
            "clusters (comparison schools matched in several cohorts link their sets), large clusters mixing "
            "partnership and comparison schools that the calibration table (benchmarks/coverage_table.md) does not "
            "cover: the matched-set row is shown for completeness, not relied on.")


def _clustering_lines(result: dict) -> list[str]:
    """The primary estimate under each clustering: which is the headline, and why."""
    cl = result.get("clustering") or {}
    if not cl.get("rows"):
        return []
    rows = [[escape(r["clustering"].replace("_", " ")) + (" (headline)" if r["clustering"] == cl["headline"] else ""),
             num(r["se"], 3), f"{num(r['ci_low'], 3)} to {num(r['ci_high'], 3)}", count(r["n_clusters"]),
             count(r["n_treated_clusters"])] for r in cl["rows"]]
    head = next(r for r in cl["rows"] if r["clustering"] == cl["headline"])
    return ["### Which schools share a cluster", "",
            f"The primary estimate ({num(head['estimate'], 3)}) with its standard error under each clustering; the "
            "point estimate is the same in every row (same weights, same sample). The headline clusters "
            f"{escape(head['description'])}. Partnership clustering is the default because the schools of one "
            "partnership join together and share its leadership, staff and shocks, so their results are not "
            "independent. Matched-set clustering (Abadie & Spiess 2022) also allows for the dependence that "
            "matching creates between a partnership school and its comparison schools; a comparison school "
            "matched to schools of several cohorts or partnerships joins all their sets into one cluster. "
            "Where the two differ much, the larger is the safer reading."
            + _chaining_words(cl), "",
            table(["Clustering", "SE", "95% CI", "Clusters", "Clusters with partnership schools"], rows,
                  ["l", "r", "r", "r", "r"])] + [
        "", *(f"Clustering {escape(r['clustering'].replace('_', ' '))}: not estimable here ({escape(r['reason'])})."
              for r in cl.get("not_estimable", []))]


def _small_cluster_block(small: dict | None) -> list[str]:
    """With fewer than 30 clusters, the wild cluster bootstrap replaces conventional inference."""
    if not small:
        return []
    out = ["### Few clusters: wild cluster bootstrap", "",
           f"Only {small.get('n_treated_clusters', small['n_clusters'])} partnerships (treated clusters) among "
           f"{small['n_clusters']} clusters in all (the threshold is {small['threshold']}), so conventional "
           "cluster-robust standard errors are too optimistic. These p-values and confidence "
           "intervals come from the restricted wild cluster bootstrap (Roodman et al. 2019) instead:", "",
           "| Estimate | Effect | p (bootstrap) | 95% CI (bootstrap) |", "|---|---:|---:|---|"]
    twfe = small.get("twfe")
    if twfe:
        e = twfe["estimate"]
        out.append(f"| Two-way fixed effects | {num(e['estimate'])} | {pvalue(e['p'])} | {num(e['ci_low'])} to "
                   f"{num(e['ci_high'])} |")
    cs = small.get("callaway_santanna")
    if cs:
        out.append(f"| Callaway & Sant'Anna ATT | {num(cs['estimate'])} | {pvalue(cs['p'])} | {num(cs['ci_low'])} to "
                   f"{num(cs['ci_high'])} |")
    return out + [""]


def _robustness_section(result: dict) -> str:
    diag = result["diagnostics"]
    c = result["counts"]
    sec = es = result["effects"]
    out = ["## Robustness and diagnostics", ""]
    out += _small_cluster_block(diag.get("small_cluster_inference"))
    out += ["### Goodman-Bacon decomposition", ""]
    bacon = diag.get("bacon")
    if bacon and bacon.get("by_type"):
        rows = [[escape(b["type"]), num(b["weight"], 3), num(b["avg_estimate"], 3)] for b in bacon["by_type"]]
        out += [f"The static two-way fixed-effects estimate ({num(bacon['twfe'], 3)}) is a weighted average of "
                f"simple two-group comparisons ({escape(bacon.get('note', ''))}). Weight on comparisons that use "
                "already-joined schools as controls ('later vs earlier treated') signals possible bias when "
                "effects change over time.", "",
                table(["Comparison", "Weight", "Average estimate"], rows, ["l", "r", "r"])]
    else:
        out += [escape((bacon or {}).get("note", "Not computed for this study.")), ""]
    out += ["### Pre-trend tests", ""]
    rows = _pretrend_rows(result)
    failed = [r for r in rows if r[4].startswith("fails")]
    out += [(f"{len(failed)} of {len(rows)} pre-trend tests fail at the 5% level (see the event study above)."
             if failed else ("The pre-trend test does not fail" if len(rows) == 1 else
                             f"None of the {len(rows)} pre-trend tests fails")
             + " at the 5% level (see the event study above). A passed test is not proof of parallel trends: "
               "it may lack power."), ""]
    out += _placebo_lines(diag.get("placebo_dates"), result)
    out += _honest_did_lines(diag.get("honest_did"), result)
    bal = diag.get("balance") or {}
    out += ["### Balance", "",
            f"Largest absolute standardised mean difference after matching: {num(bal.get('max_abs_smd_after'))} "
            f"(threshold {bal.get('threshold', 0.1)}).", ""]
    lost = (f"How many of the partnership schools found are not in the analysis is {WITHHELD}; see *What is not "
            "shown*." if flow_withheld(result) else
            f"{pct(c['attrition'], 1)} of the partnership schools found ({count(c['treated_found'] - c['treated_analysed'])}"
            f" of {count(c['treated_found'])}) are not in the analysis.")
    out += ["### Attrition and power", "",
            f"{lost} The minimum detectable effect size is "
            f"{num(sec['mdes'])} ({escape(sec['mdes_source'])}). The analysis uses {count(c['school_years'])} "
            f"school-years in {count(c['clusters'])} clusters.", ""]
    out += ["### Effect size", "",
            (f"Hedges' $g = J \\cdot \\hat\\tau / SD$ with $SD = {es['sd']:.4g}$: {escape(es['sd_source'])}."
             if es["g"] is not None else escape(es["withheld"][0].upper() + es["withheld"][1:])), ""]
    truth = result.get("synthetic_truth")
    if truth:
        primary = result["headline"]
        inside = primary["ci_low"] <= truth["overall"] <= primary["ci_high"]
        out += ["### Synthetic truth (synthetic data only)", "",
                ":::{admonition} The planted effect: known only because the data are synthetic",
                ":class: synthetic-truth", "",
                f"{escape(truth['note'][0].upper() + truth['note'][1:])}. Planted average effect after joining: "
                f"{num(truth['overall'], 3)} {escape(unit_words(result))}; the primary estimate is "
                f"{num(primary['estimate'], 3)} (95% CI {num(primary['ci_low'], 3)} to {num(primary['ci_high'], 3)}), "
                f"so the interval {'covers' if inside else 'does not cover'} the planted effect."
                + ("" if inside else " The estimate is biased here, and the padlocks cannot show it: the rating "
                                     "uses only what a study on real data could see."), ":::", ""]
    return "\n".join(out)


def _placebo_lines(placebo: dict | None, result: dict) -> list[str]:
    """Placebo joining dates: the estimator rerun as if schools joined k years early."""
    if not placebo or not placebo.get("placebos"):
        return []
    placebo_g = {row["k"]: row["g"] for row in result["effects"]["placebo_g"]}
    rows = [[f"{p['k']} year{'s' if p['k'] != 1 else ''} early", num(p["estimate"], 3),
             num(placebo_g.get(p["k"]), 3) if placebo_g.get(p["k"]) is not None else "\u2014",
             f"{num(p['ci_low'], 3)} to {num(p['ci_high'], 3)}", pvalue(p.get("p")),
             count(p.get("treated_schools")),
             "includes zero (as it should)" if p["includes_zero"] else "excludes zero: an effect before joining"]
            for p in placebo["placebos"]]
    verdict = ("Every placebo interval includes zero." if placebo.get("all_include_zero") else
               "At least one placebo interval excludes zero: the schools were already changing before they "
               "joined, so part of the estimated effect may not be the partnership's.")
    return ["### Placebo joining dates", "",
            f"The {escape(estimator_name(placebo.get('estimator', result['primary_estimator'])))} estimate rerun "
            "on years before joining only, pretending the schools joined earlier than they did. With no effect "
            "before joining, these should be near zero. " + verdict, "",
            "The estimates are in the outcome's units and, beside them, in the headline's effect-size units. "
            "The placebo check fails when the smallest p-value is below 0.05 divided by the number of dates "
            "(Bonferroni), so that the family of dates errs at most 5% of the time.", "",
            table(["Placebo date", "Estimate", "Effect size", "95% CI", "p", "Schools", "Reading"], rows,
                  ["l", "r", "r", "r", "r", "r", "l"])]


def _m_value(x, digits: int = 3) -> str:
    """A violation size: exactly no violation prints as 0 (not 0.000)."""
    return "0" if x == 0 else num(x, digits)


def _honest_did_lines(h: dict | None, result: dict) -> list[str]:
    """HonestDiD (Rambachan & Roth 2023): how far parallel trends may fail before the effect could be zero."""
    if not h or not (h.get("relative_magnitudes") or h.get("smoothness")):
        return []
    unit = escape(unit_words(result))
    out = ["### Sensitivity to a failure of parallel trends (HonestDiD)", "",
           (f"Run on {escape(h['note'])}. " if h.get("note") else "")
           + f"{escape(h.get('method', 'Rambachan & Roth (2023)'))}: robust 95% confidence sets for the effect in the "
           "first year of results after joining ($e = 0$) when the trend difference after joining may be larger than anything seen "
           f"before. Original interval: {num(h['original']['lb'], 3)} to {num(h['original']['ub'], 3)} {unit}.", ""]
    if h.get("relative_magnitudes"):
        rows = [[num(r["Mbar"], 1), f"{num(r['lb'], 3)} to {num(r['ub'], 3)}",
                 "no" if r["lb"] <= 0 <= r["ub"] else "yes"] for r in h["relative_magnitudes"]]
        out += ["Relative magnitudes: the violation after joining is at most $\\bar M$ times the largest "
                "change between consecutive years before joining.", "",
                table(["$\\bar M$", "Robust 95% CI", "Excludes zero"], rows, ["r", "r", "l"])]
    if h.get("smoothness"):
        rows = [[_m_value(r["M"]), f"{num(r['lb'], 3)} to {num(r['ub'], 3)}",
                 "no" if r["lb"] <= 0 <= r["ub"] else "yes"] for r in h["smoothness"]]
        out += ["Smoothness: the trend difference may bend by at most $M$ per year.", "",
                table(["$M$", "Robust 95% CI (FLCI)", "Excludes zero"], rows, ["r", "r", "l"])]
    first_zero = []
    for key, label, digits in (("relative_magnitudes", "Mbar", 1), ("smoothness", "M", 3)):
        hit = next((r for r in h.get(key) or [] if r["lb"] <= 0 <= r["ub"]), None)
        if hit is not None:
            symbol = "$\\bar M$" if label == "Mbar" else "$M$"
            first_zero.append(f"{symbol} = {_m_value(hit[label], digits)}")
    out += [("The robust interval first includes zero at " + " and at ".join(first_zero)
             + ": a violation of parallel trends that large could account for the whole effect.")
            if first_zero else "The robust interval excludes zero at every violation size examined.", ""]
    return out


FEW_RELABELLED = 10  # partnerships a relabelling can change, below which a non-rejection is flagged as weak
TEST_UNITS = {"partnership": "whole partnerships' subgroups shuffled among partnerships",
              "block": "each partnership's schools of one subgroup shuffled together, as a block"}


#: Added to a claimed subgroup difference when the study's own checks point to bias.
BIASED_DIFFERENCE = (" The study's checks point to bias, so each subgroup's effect is in doubt: the difference "
                     "stands only if the bias is the same in every subgroup.")


def subgroup_sentence(ch: dict, alpha: float, n_tests: int, units: str, biased: bool = False) -> str:
    """One sentence a committee can read about one characteristic. It claims a difference only when
    the permutation test rejects equal effects at the study's alpha, and then says that several
    characteristics tested make a chance difference likely; otherwise it says the study cannot tell."""
    label = escape(_lower_first(ch["label"]))
    test = ch.get("test")
    if test is None:
        return f"This study cannot compare schools by {label}: {escape(_lower_first(ch.get('note') or 'no test'))}."
    shown = [s for s in ch["subgroups"] if s["estimate"] is not None and s["key"] in test["subgroups"]]
    if test["p_value"] >= alpha:
        text = (f"The data do not show that the effect differs by {label} ({p_equals(test['p_value'])}): "
                "the subgroup estimates differ by no more than chance would give, so no subgroup should be "
                "singled out as doing better or worse; this is not proof that the effect is the same.")
        n = test.get("n_units")
        if n is not None and n < FEW_RELABELLED:
            text += (f" Only {count(n)} partnerships could be relabelled, so the test could miss even a large "
                     "difference.")
        return text
    hi = max(shown, key=lambda s: s["estimate"])
    lo = min(shown, key=lambda s: s["estimate"])
    text = (f"The effect differs by {label} ({p_equals(test['p_value'])}): it was {num(hi['estimate'])} "
            f"{escape(units)} for {escape(hi['label'])} and {num(lo['estimate'])} for {escape(lo['label'])}.")
    text += BIASED_DIFFERENCE if biased else ""
    if n_tests > 1:
        text += (f" With {n_tests} characteristics tested, one such difference could arise by chance: treat it "
                 "as a lead to follow up, not a finding on its own.")
    return text


def _heterogeneity_section(result: dict, result_dir: Path, fig_dir: Path, rel: str) -> str:
    """Effects by subgroup (result.json ``heterogeneity``), when the study asked for them."""
    het = result.get("heterogeneity")
    if not het:
        return ""
    sid = result["study"]["id"]
    level = round(100 * (1 - het["alpha"]))
    units = unit_words(result)
    n_tests = sum(1 for ch in het["characteristics"] if ch.get("test"))
    out = ["## Effects by subgroup: for whom does it work?", "",
           f"The primary estimator ({estimator_name(het['estimator'])}) estimated again on the partnership "
           "schools of each subgroup, each with the comparison schools matched to it, with the study's window, "
           "weights and clustering. The intervals are the estimator's own "
           f"{level}% intervals ({escape(units)}), not the headline's calibrated one. Subgroups share comparison "
           "schools (and sometimes partnerships), so their estimates are not independent: whether they differ "
           "is tested by permutation, with partnerships as the units (the subgroup labels shuffled at random, "
           "a partnership's schools of one subgroup moving together, and every subgroup estimated again, many "
           "times). "
           f"A subgroup of fewer than {het['min_schools']} partnership schools is not estimated.", ""]
    figure = result_dir / "figures" / HETEROGENEITY_FIGURE
    if figure.exists():
        shutil.copyfile(figure, fig_dir / f"{sid}-{HETEROGENEITY_FIGURE}")
        out += [_figure(f"{rel}/{sid}-{HETEROGENEITY_FIGURE}", f"{sid}-heterogeneity",
                        f"Effects by subgroup with {level}% confidence intervals; the dotted line is the effect "
                        "on all partnership schools."), ""]
    for ch in het["characteristics"]:
        label = ch["label"][:1].upper() + ch["label"][1:]
        out += [f"### By {escape(_lower_first(label))}", ""]
        rows = []
        planted = any("planted" in s for s in ch["subgroups"])
        for s in ch["subgroups"]:
            if s["estimate"] is None:
                rows.append([escape(s["label"][:1].upper() + s["label"][1:]), count(s["n_schools"]),
                             count(s["n_partnerships"]), escape(s["withheld"] or "not estimated"), "\u2014", "\u2014"])
            else:
                rows.append([escape(s["label"][:1].upper() + s["label"][1:]), count(s["n_schools"]), count(s["n_partnerships"]),
                             num(s["estimate"], 2), f"{num(s['ci_low'], 2)} to {num(s['ci_high'], 2)}",
                             pvalue(s["p"])])
            if planted:
                rows[-1].append("\u2014" if s.get("planted") is None else num(s["planted"], 2))
        if rows:
            heads = ["Subgroup", "Partnership schools", "Partnerships", "Effect", f"{level}% CI", "p"]
            if planted:
                heads.append("Planted effect (synthetic data)")
            out += [table(heads, rows, ["l"] + ["r"] * (len(heads) - 1)), ""]
        if ch.get("n_unknown"):
            out += [f"Not in any subgroup (not known): {count(ch['n_unknown'])} partnership schools.", ""]
        elif ch.get("n_unknown") is None:
            out += ["Not in any subgroup (not known): suppressed (disclosure control).", ""]
        t = ch.get("test")
        if t is not None:
            out += [f"**Test that the effects are equal**: Wald statistic {num(t['statistic'])} "
                    f"({t['df']} df), permutation {p_equals(t['p_value'])} over {count(t['permutations'])} "
                    f"relabellings ({TEST_UNITS[t['unit']]}; {count(t['n_units'])} "
                    + ("partnerships" if t["unit"] == "partnership" else "blocks") + " relabelled"
                    + (f"; {count(t['failed'])} could not be estimated" if t.get("failed") else "") + ").", ""]
        biased = (result.get("verdict") or {}).get("answer") == "cannot_tell_bias"
        out += [f"**In words.** {subgroup_sentence(ch, het['alpha'], n_tests, units, biased)}", ""]
    return "\n".join(out)


BIASED_GROUPS = (" The study's checks point to bias, so each group's effect is in doubt: the difference stands "
                 "only if the bias is the same for both groups.")
PUPIL_COUNT_WORDS = {
    "pupils_treated": "Pupil results at partnership schools (the school-years analysed)",
    "pupils_comparison": "Pupil results at comparison schools",
    "pupils_left_out_by_the_on_roll_rule": "Pupil results left out by the on-roll rule (or first year on roll not known)",
    "pupils_without_prior_attainment": "Pupil results without prior attainment (no value added)",
}


def difference_sentence(diff: dict | None, alpha: float, units: str) -> str:
    """Whether disadvantaged pupils gained more than the others, in words that follow the interval."""
    if diff is None or diff.get("estimate") is None:
        why = (diff or {}).get("note") or "not shown (disclosure control)"
        return f"This study cannot compare disadvantaged and other pupils: {escape(_lower_first(why))}."
    level = round(100 * (1 - alpha))
    ci = f"{num(diff['ci_low'])} to {num(diff['ci_high'])}"
    if diff["p"] is not None and diff["p"] < alpha:
        more = "more" if diff["estimate"] > 0 else "less"
        return (f"Disadvantaged pupils gained {more} than the other pupils: by {num(abs(diff['estimate']))} "
                f"{escape(units)} ({level}% CI {ci}, {p_equals(diff['p'])}).")
    return (f"The data do not show that disadvantaged pupils gained more or less than the others (difference "
            f"{num(diff['estimate'])} {escape(units)}, {level}% CI {ci}, {p_equals(diff['p'])}); this is not proof "
            "that they gained the same.")


def _pupils_section(result: dict) -> str:
    """A pupil-level study's pupils (result.json ``pupils``): what was measured on whom, the pupil-weighted
    estimate beside the headline, and the results for disadvantaged pupils."""
    pb = result.get("pupils")
    if not pb:
        return ""
    units = unit_words(result)
    alpha = result["study"]["definition"]["inference"]["alpha"]
    level = round(100 * (1 - alpha))
    out = ["## Pupils: who was measured", "",
           f"This is a pupil-level study of {escape(pb['key_stage'])} results. Each school-year's outcome is "
           f"{escape(_lower_first(result['outcome']['description']))}. The pupils counted are "
           f"{escape(pb['sample_words'])}.", ""]
    rows = [[escape(words), "suppressed" if pb["counts"].get(k) is None else count(pb["counts"][k])]
            for k, words in PUPIL_COUNT_WORDS.items() if k in pb["counts"]]
    out += [table(["Pupils", "Number"], rows, ["l", "r"]), ""]
    if pb.get("pupil_sd_source"):
        out += [f"Effect sizes divide by the {escape(pb['pupil_sd_source'])}.", ""]
    tw = pb.get("pupil_weighted_twfe")
    if tw and tw.get("estimate") is not None:
        out += [f"**Weighted by pupils** (two-way fixed effects on the pupils, each weighted by its school's "
                f"matching weight): {num(tw['estimate'])} {escape(units)} ({level}% CI {num(tw['ci_low'])} to "
                f"{num(tw['ci_high'])}): {escape(_lower_first(tw['note']))}.", ""]
    groups = pb.get("groups")
    if groups:
        planted = any(g.get("planted") is not None for g in groups)
        rows = []
        for g in groups:
            row = [escape(g["label"][:1].upper() + g["label"][1:]), count(g["n_schools"]), count(g["n_pupils"])]
            if g["estimate"] is None:
                row += [escape(g.get("note") or "not shown"), "\u2014", "\u2014", "\u2014"]
            else:
                row += [num(g["estimate"]), f"{num(g['ci_low'])} to {num(g['ci_high'])}", pvalue(g["p"]),
                        "\u2014" if g["g"] is None else num(g["g"])]
            if planted:
                row.append("\u2014" if g.get("planted") is None else num(g["planted"]))
            rows.append(row)
        diff = next((g for g in groups if g["group"] == "difference"), None)
        biased = (result.get("verdict") or {}).get("answer") == "cannot_tell_bias"
        heads = ["Pupils", "Partnership schools", "Pupil results", "Effect", f"{level}% CI", "p", "Effect size"]
        if planted:
            heads.append("Planted effect (synthetic data)")
        out += ["### Disadvantaged pupils", "",
                f"The primary estimator ({estimator_name(result['primary_estimator'])}) on the school-year means of "
                "each group of pupils, and on the difference of the two means in the school-years that have both "
                "groups (its interval is the difference's own, from the same schools).", "",
                table(heads, rows, ["l"] + ["r"] * (len(heads) - 1)), "",
                f"**In words.** {difference_sentence(diff, alpha, units)}"
                + (BIASED_GROUPS if biased and diff and diff.get("p") is not None and diff["p"] < alpha else ""), ""]
    return "\n".join(out)


def _provenance_section(result: dict) -> str:
    p = result["provenance"]
    return "\n".join([
        "## Data provenance and how to reproduce", "",
        table(["Item", "Value"], [
            ["Study definition", f"`studies/{result['study']['id']}.toml`"],
            ["Spec hash (SHA-256 of the definition)", f"`{p['spec_hash']}`"],
            ["Data fingerprint (SHA-256 of the tables read)", f"`{p['data_fingerprint']}`"],
            ["Package version", f"`{p['package_version']}`"],
            ["Seed", f"`{p['seed']}`"],
            ["Outcome years in the data", f"{result['outcome']['data_years'][0]}\u2013"
                                          f"{result['outcome']['data_years'][-1]}"],
            ["Result contract", f"schema version {result['schema_version']}"],
        ]),
        "To reproduce the numbers in this chapter, on a store with the same data fingerprint:", "",
        "```bash", p["command"], "```", "",
        "The same inputs, definition and seed give a byte-identical `result.json`.", "",
    ])


# ---------------------------------------------------------------------------- chapter


def write_chapter(result: dict, result_dir: Path, source: Path) -> Chapter:
    """Write ``studies/<id>.md`` (and copy its figures) into the book source directory."""
    sid = result["study"]["id"]
    fig_dir = source / "studies" / sid
    fig_dir.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:  # named per study so the built book's _images never collide
        shutil.copyfile(result_dir / "figures" / name, fig_dir / f"{sid}-{name}")
    rel = sid
    text = "\n".join([
        f"(study-{sid})=",
        f"# {escape(result['study']['title'])}", "",
        summary_box(result),
        _cohort_section(result, result_dir / "tables", fig_dir, rel),
        _disclosure_section(result),
        _balance_section(result, rel),
        _trends_section(result, rel),
        _event_section(result, rel),
        _estimates_section(result),
        _robustness_section(result),
        _pupils_section(result),
        _heterogeneity_section(result, result_dir, fig_dir, rel),
        specification_curve_section(result, result_dir, fig_dir, rel),  # results/<id>.multiverse/, if any
        _provenance_section(result),
    ])
    path = source / "studies" / f"{sid}.md"
    path.write_text(text, encoding="utf-8")
    return Chapter(sid, result["study"]["title"], path, result["effects"]["padlocks"])
