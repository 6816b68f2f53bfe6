"""The multiverse, published: ``results/<id>.multiverse/`` (multiverse.json and the specification
curve figure) and the chapter section that shows it.

The multiverse lives beside the study's results, not inside them: ``impact run`` replaces
``results/<id>/`` as a whole (``publish.writers.write_results`` swaps in a fresh directory), so
a multiverse written inside would vanish at the next run. Study ids cannot contain a dot, so
``<id>.multiverse`` never collides with a study, and the book's result scan skips it (no
result.json). The chapter shows the section only when the multiverse was computed from the same
study definition and data as the chapter's result.json (spec hash and data fingerprint);
otherwise it says the multiverse is out of date.

Disclosure control (``evaluation.publish.disclosure.control_multiverse``, applied by the writer
``evaluation.publish.writers.write_multiverse``) follows the study's ``[disclosure]`` policy
(``evaluation.publish.disclosure.DisclosurePolicy``): a specification whose partnership or
comparison schools are fewer than the threshold publishes no numbers (nor its failure text), and
counts of schools below the threshold quoted in the reasons a specification could not be
estimated are replaced by "fewer than N". When the study's sample flow is withheld, every
specification's numbers of schools are null with ``schools_at_least`` (the threshold); nothing
here prints them. The summary shares are computed over the published specifications.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from evaluation.data.schema import sentence_case
from evaluation.errors import InputError, problem
from evaluation.result_schema import MULTIVERSE_SCHEMA_VERSION
from evaluation.report.figures import COLOURS, _save, column_label, outcome_label, plt
from evaluation.report.markdown import count, escape, estimator_name, num, pct, table

SUFFIX = ".multiverse"


def multiverse_dir(results_root: str | Path, study_id: str) -> Path:
    """``results/<id>.multiverse``: beside ``results/<id>/`` so that ``impact run`` leaves it alone."""
    return Path(results_root) / f"{study_id}{SUFFIX}"
JSON_FILE = "multiverse.json"
FIGURE_FILE = "specification_curve.png"
HEADLINE_COLOUR = "#d1495b"
WITHHELD = "not shown (disclosure control)"


def load_multiverse(results_root: str | Path, study_id: str) -> dict | None:
    """The published multiverse of a study, or None when there is none."""
    d = multiverse_dir(results_root, study_id)
    path = d / JSON_FILE
    if not path.exists():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(problem(f"not valid JSON ({err}): rerun `impact multiverse studies/{study_id}.toml`",
                                 file=str(path))) from None
    if content.get("schema_version") != MULTIVERSE_SCHEMA_VERSION or (content.get("study") or {}).get("id") != study_id:
        raise InputError(problem(f"not a multiverse of study {study_id!r} in schema version "
                                 f"{MULTIVERSE_SCHEMA_VERSION}: rerun `impact multiverse studies/{study_id}.toml`",
                                 file=str(path)))
    if not (d / FIGURE_FILE).exists():
        raise InputError(problem(f"missing {FIGURE_FILE}: rerun `impact multiverse studies/{study_id}.toml`",
                                 file=str(d)))
    return content


# ---------------------------------------------------------------------------- the figure


def _ordered(content: dict) -> list[dict]:
    """Estimated specifications, by estimate (ties by index: the same order every time)."""
    rows = [s for s in content["specifications"] if s["estimate"] is not None]
    return sorted(rows, key=lambda s: (s["estimate"], s["index"]))


def _level_rows(content: dict) -> list[tuple[str, str, str]]:
    """(dimension, level key, row label) for the panel of choices, top to bottom."""
    rows = []
    for dim in content["grid"]["dimensions"]:
        for lv in dim["levels"]:
            rows.append((dim["dimension"], lv["key"], lv["label"]))
    return rows


def specification_curve_plot(content: dict, path: Path) -> Path:
    """Simonsohn, Simmons & Nelson (2020): the estimates ranked, each with its confidence interval
    (the headline in red), and beneath them the choices each specification made."""
    rows = _ordered(content)
    levels = _level_rows(content)
    n = len(rows)
    x = np.arange(n)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9.0, 3.4 + 0.2 * len(levels)),
                                      gridspec_kw={"height_ratios": [3.2, 0.2 * len(levels)], "hspace": 0.05})
    est = np.array([r["estimate"] for r in rows], dtype=float)
    lo = np.array([r["ci_low"] for r in rows], dtype=float)
    hi = np.array([r["ci_high"] for r in rows], dtype=float)
    head = np.array([bool(r["headline"]) for r in rows])
    excl = (lo > 0) | (hi < 0)
    conf = f"{100 * (1 - content['alpha']):g}%"
    top.vlines(x[~excl], lo[~excl], hi[~excl], color="#9aa5b1", linewidth=1.0,
               label=f"{conf} CI includes zero")
    top.vlines(x[excl], lo[excl], hi[excl], color=COLOURS["partnership"], linewidth=1.0,
               label=f"{conf} CI excludes zero")
    top.scatter(x[~head], est[~head], s=8, color="black", zorder=3, label="Estimate")
    if head.any():
        top.vlines(x[head], lo[head], hi[head], color=HEADLINE_COLOUR, linewidth=2.0, zorder=4)
        top.scatter(x[head], est[head], s=60, marker="D", color=HEADLINE_COLOUR, zorder=5,
                    label="The study's own specification (headline)")
    top.axhline(0, color="black", linewidth=0.8)
    top.set_ylabel(outcome_label({"outcome": {"name": content["outcome"]}}, "Effect on "))
    summary = content["summary"]
    top.set_title(f"Specification curve: {summary['estimated']} of {summary['specifications']} specifications "
                  "estimated, ranked by estimate")
    top.legend(frameon=False, fontsize=7, loc="upper left")
    top.grid(alpha=0.3, axis="y")

    choices = [r["choices"] for r in rows]
    for i, (dim, key, _) in enumerate(levels):
        on = np.array([c.get(dim) == key for c in choices], dtype=bool)
        bottom.scatter(x[on & ~head], np.full((on & ~head).sum(), i), s=6, marker="s", color="black",
                       linewidths=0)
        bottom.scatter(x[on & head], np.full((on & head).sum(), i), s=22, marker="s", color=HEADLINE_COLOUR,
                       linewidths=0)
    bounds = [i for i in range(1, len(levels)) if levels[i][0] != levels[i - 1][0]]
    for b in bounds:
        bottom.axhline(b - 0.5, color="grey", linewidth=0.5)
    words = {d["dimension"]: d["label"] for d in content["grid"]["dimensions"]}
    bottom.set_yticks(range(len(levels)), [f"{words.get(d, d)}: {label}" for d, _, label in levels],
                      fontsize=7)
    bottom.set_ylim(len(levels) - 0.5, -0.5)
    bottom.set_xlim(-1, max(n, 1))
    bottom.set_xlabel("Specifications, ranked by estimate")
    bottom.tick_params(axis="x", labelsize=7)
    return _save(fig, path)


# ---------------------------------------------------------------------------- the chapter section


def specification_curve_section(result: dict, result_dir: Path, fig_dir: Path, rel: str) -> str:
    """'Does the answer depend on our choices?': the specification curve of the study's multiverse,
    when ``results/<id>.multiverse/`` exists (empty text otherwise). Copies the figure into
    ``fig_dir``."""
    sid = result["study"]["id"]
    content = load_multiverse(Path(result_dir).parent, sid)
    if content is None:
        return ""
    out = ["## Does the answer depend on our choices? (specification curve)", ""]
    p, mp = result["provenance"], content["provenance"]
    if (p["spec_hash"], p["data_fingerprint"]) != (mp["spec_hash"], mp["data_fingerprint"]):
        changed = " and ".join(w for w, a, b in (("the study definition", p["spec_hash"], mp["spec_hash"]),
                                                 ("the data", p["data_fingerprint"], mp["data_fingerprint"]))
                               if a != b)
        return "\n".join(out + [":::{warning}",
                                f"The multiverse on file is out of date: {changed} changed since it was computed. "
                                f"Rerun `{mp['command']}` to show the specification curve here.", ":::", ""])
    shutil.copyfile(multiverse_dir(Path(result_dir).parent, sid) / FIGURE_FILE,
                    fig_dir / f"{sid}-{FIGURE_FILE}")
    s = content["summary"]
    dims = [d for d in content["grid"]["dimensions"] if len(d["levels"]) > 1]
    conf = f"{100 * (1 - content['alpha']):g}%"
    out += [
        "The headline comes from one set of analysis choices that equally careful analysts could have made "
        "differently. The study was rerun with every combination of "
        + escape(_and([d["label"].lower() for d in dims]))
        + f": {count(s['specifications'])} specifications in all, the study's own among them (in red in the "
          "figure). Each specification matches afresh and reports its estimate with the interval the headline "
          "uses for that estimator; the diagnostics of the study are not rerun. The figure ranks the estimates "
          "with their confidence intervals and marks beneath each the choices it made (a specification curve, "
          "Simonsohn, Simmons & Nelson 2020).", "",
        _agreement_sentence(s, conf, result), "",
    ]
    out += _not_estimated_lines(content)
    notes = content["grid"].get("notes") or []
    if notes:
        out += ["Options left out of the grid:", ""] + [f"- {escape(n[0].upper() + n[1:])}." for n in notes] + [""]
    out += [f"```{{figure}} {rel}/{sid}-{FIGURE_FILE}\n:name: {sid}-specification-curve\n"
            f":alt: Specification curve: {s['estimated']} estimates ranked with their confidence intervals, "
            "the choices of each beneath\n:width: 100%\n\n"
            f"Specification curve. Top: each specification's estimate with its {conf} confidence interval "
            "(blue: excludes zero; grey: includes zero), ranked; the study's own specification in red. "
            "Bottom: the choices each specification made.\n```", ""]
    rows = []
    words = {d["dimension"]: d["label"] for d in content["grid"]["dimensions"]}
    details = {(d["dimension"], lv["key"]): _detail(d["dimension"], lv) for d in content["grid"]["dimensions"]
               for lv in d["levels"]}
    for r in content["by_level"]:
        if r["dimension"] not in {d["dimension"] for d in dims}:
            continue
        label = estimator_name(r["level"]) if r["dimension"] == "estimator" else r["label"]
        if r["dimension"] == "caliper":
            label += " (logit only)"
        rows.append([escape(words[r["dimension"]]), escape(label), escape(details[(r["dimension"], r["level"])]),
                     count(r["specifications"]), num(r["median_estimate"], 3), pct(r["share_agree"])])
    out += ["Each choice, with the median estimate and the share of specifications agreeing with the headline "
            "among those that make it (the study's own choice first in each):", "",
            table(["Choice", "Option", "What it means", "Specifications", "Median estimate", "Agree"], rows,
                  ["l", "l", "l", "r", "r", "r"]),
            f"**Agreement.** {escape(content['agreement_rule'])}", ""]
    return "\n".join(out)


def _detail(dimension: str, level: dict) -> str:
    """What a level means, in words: matching characteristics by their labels, not column names."""
    if dimension == "covariates" and isinstance(level.get("value"), list):
        head = str(level["detail"]).split(":")[0]
        return head + ": " + ", ".join(sentence_case(column_label(str(c))) for c in level["value"])
    return level["detail"]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _agreement_sentence(s: dict, conf: str, result: dict) -> str:
    n = s["estimated"]
    unit = result["outcome"].get("unit") or ""
    unit = "percentage points" if unit == "percent" else unit
    same = f"In {count(s['same_sign'])} of {count(n)} specifications ({pct(s['share_same_sign'])}) the estimate has " \
           "the same sign as the headline"
    if s["headline_excludes_zero"]:
        agree = (f", and in {count(s['excluding_zero_same_sign'])} ({pct(s['share_excluding_zero_same_sign'])}) its "
                 f"{conf} confidence interval excludes zero on the same side, as the headline's does: they agree "
                 "with the headline.")
    else:
        excl = s["excluding_zero"]
        agree = (f"; in {count(s['agree'])} ({pct(s['share_agree'])}) its {conf} confidence interval includes zero, "
                 "as the headline's does, so they agree with it"
                 + (f" (in {count(excl)} the interval excludes zero)." if excl else "."))
    spread = (f" The estimates range from {num(s['min_estimate'], 3)} to {num(s['max_estimate'], 3)}"
              f"{' ' + escape(unit) if unit else ''} (median {num(s['median_estimate'], 3)}).")
    return same + agree + spread


def _not_estimated_lines(content: dict) -> list[str]:
    specs = content["specifications"]
    failed = [x for x in specs if x["failure"]]
    withheld = [x for x in specs if x.get("withheld")]
    out = []
    if failed:
        reasons: dict[str, int] = {}
        for x in failed:
            reasons[x["failure"]] = reasons.get(x["failure"], 0) + 1
        one = len(failed) == 1
        out += [f"{count(len(failed))} specification{'' if one else 's'} could not be estimated and "
                f"{'is' if one else 'are'} left out of the shares:", ""]
        out += [f"- {escape(r)} ({count(k)})" for r, k in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
        out.append("")
    if withheld:
        out += [f"{count(len(withheld))} specification{'s' if len(withheld) != 1 else ''} rest on too few schools "
                "to publish (disclosure control) and are left out of the figure and the shares.", ""]
    return out
