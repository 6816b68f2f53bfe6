"""Disclosure control: the one place that decides which counts and statistics may be published.

Everything written for publication (``results/<id>/``: result.json, tables, figures, the map;
``results/<id>.multiverse/``; the book reads only those) passes through :func:`control_study`
(or :func:`control_multiverse`) first. Pure functions: no I/O.

The rules follow the ONS Secure Research Service (SRS) output-checking rules of thumb
(ONS SRS Output Checking Guidance, "default SDC rules of thumb"; Statistics and Registration
Service Act 2007 s.39):

* **Threshold.** Every count, and every statistic (mean, estimate, interval), must rest on at
  least 10 units (here schools). A study may set ``[disclosure] threshold = N``; below the
  default only with ``reason = "..."``, which the chapter prints.
* **Primary suppression.** A count of fewer than the threshold (but not zero: no unit
  contributes to a zero) is suppressed, and so is a statistic computed from fewer schools.
* **Secondary (complementary) suppression against differencing.** In a set of cells whose
  total is published, a suppressed cell could be worked out from the total and the other
  cells. So while exactly one cell of the set is suppressed, or the suppressed cells together
  hold fewer than the threshold, the next smallest non-zero cell is suppressed too, and again
  until neither holds. A total that is itself below the threshold is suppressed.

Applied to a study:

* **the cohort table** (one row per joining cohort: partnership schools entering matching,
  matched and analysed, and comparison schools matched): a cohort with any count below the
  threshold is suppressed as a whole (primary), then cohorts are added by the secondary rule.
  Suppressed cohorts leave ``counts.cohorts``; their schools leave the published school rows,
  the map and the matched pairs (a comparison school stays only if it was also matched to a
  published cohort); their rows in the planned-power table lose their counts;
* **the sample flow, withheld as a block** (:func:`flow_withheld`). The partnership schools
  found and those lost at each step (``counts.treated_lost``: too few pre-joining years and a
  missing matching characteristic before matching, no comparison school within the caliper at
  matching, no outcome in the window after it) are tied to many other numbers: the schools
  analysed, the cohort table's schools entering matching and matched, the planned power's
  schools (and the ingredients it is computed from), the attrition percentage, the schools
  listed in ``tables/cohort.csv``. Suppressing single cells cannot protect them. So **if any
  number of schools lost at a step is between 1 and the threshold - 1, the whole flow is
  withheld**: ``treated_found``, ``attrition``, every ``treated_lost`` reason, the cohort
  table's ``treated`` and ``treated_matched`` columns, the planned power's schools
  (``schools_treated``, ``schools_comparison``, per-cohort ``treated`` and ``treated_dropped``,
  ``cluster_sizes``) and every ingredient of the planned power they could be worked out from
  (design effect, Hedges' J, standard error, degrees of freedom, multiplier, MDES in the
  outcome's units, ICC and the serial-correlation estimates); the MDES is published to 2
  decimals (``power.mdes`` and ``effects.mdes``). The words that state these numbers are
  reworded: the power note's count, the attrition percentage in the padlock reasons, the
  summary's caveat and the checks' texts. What stays: the partnership schools analysed (the
  study's N, at least the threshold) and the comparison schools. When every reason is 0 or at
  least the threshold, the flow is published in full: every difference of its published totals
  is then a sum of reasons, so 0 or at least the threshold too;
* **``tables/cohort.csv``** lists only the analysed partnership schools of published cohorts,
  never the schools found (with the per-cohort counts those would give the schools lost in each
  cohort) and never a school of a suppressed cohort;
* **statistics by year since joining** (event study, trends, planted effects) and placebo
  estimates draw on the cohorts observed there: a row is removed when it rests on fewer schools
  than the threshold, or when it draws on some but not all suppressed cohorts (it would single
  them out). A row over every suppressed cohort together, like the overall estimate, stays;
* **texts**: those that name a suppressed cohort (why an estimator was not computed, estimator
  notes) are withheld, placebo notes that name one (as its real year g, or as g - k, the year
  the placebo for joining k years early moves it to) are removed, the design checks' texts lose
  the numbers of removed rows (the answer, the padlocks and the check results stay those of the
  full analysis), and in every note a count of schools below the threshold (a number followed by
  "school(s)", "partnership school-years", "observation(s)", ...) becomes "fewer than N"; other
  numbers (negative numbers, years, event windows, degrees of freedom) are left as they are;
* the overall estimate stays when the partnership and comparison schools analysed are each at
  least the threshold; otherwise nothing of the study can be published (an InputError).

Suppressed values are left out (or null where the contract allows it), never shown as 0; the
``disclosure`` block of result.json lists each, with the rule and the reason, and what was
knowingly left in (``not_suppressed``):

* when the flow is published, differences of two published counts of one cohort (schools
  entering matching minus matched, matched minus analysed) below the threshold: they are not
  treated as cells of a table;
* when the flow is withheld and attrition cost padlocks, the number of padlocks lost to it: it
  shows the 10-point band of the rating rule (``evaluation.effects.ATTRITION_CAPS``) the
  attrition falls in, not the share. The padlocks are part of the answer;
* when no coverage by year since joining is given, that rows by year were not checked.

The multiverse (:func:`control_multiverse`): a specification resting on fewer than the
threshold of partnership or comparison schools keeps its choices but loses its numbers and any
failure text; counts of schools below the threshold in failure texts become "fewer than N";
and when the headline specification's sample flow must be withheld (the same rule as the
study's), the numbers of schools of every specification are published only as "at least the
threshold" (``schools_at_least``), since their differences (no caliper minus caliper, ...)
would reveal the schools lost at a step.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from typing import Hashable, Iterable, Mapping

import pandas as pd

from evaluation.effects import round2
from evaluation.errors import InputError, problem
from evaluation.multiverse import MultiverseResult
from evaluation.study import DISCLOSURE_DEFAULT_THRESHOLD

PRIMARY = "primary"
SECONDARY = "secondary"
RULE = ("ONS Secure Research Service output rules: no count or statistic from fewer than the threshold of "
        "schools (primary suppression); while exactly one cell of a set with a published total is suppressed, "
        "or the suppressed cells hold fewer than the threshold, the next smallest cell is suppressed too "
        "(secondary suppression against differencing); a total below the threshold is suppressed")
WITHHELD = "not shown (disclosure control)"


@dataclass(frozen=True)
class DisclosurePolicy:
    """The threshold (schools) below which nothing is published; the ONS SRS default is 10."""

    threshold: int = DISCLOSURE_DEFAULT_THRESHOLD
    reason: str | None = None
    unit: str = "schools"

    def __post_init__(self):
        if self.threshold < 1:
            raise ValueError(f"the disclosure threshold must be at least 1, got {self.threshold}")
        if self.lowered and not (self.reason and self.reason.strip()):
            raise ValueError(f"a disclosure threshold of {self.threshold}, below the ONS SRS default of "
                             f"{DISCLOSURE_DEFAULT_THRESHOLD}, needs a reason")

    @property
    def lowered(self) -> bool:
        return self.threshold < DISCLOSURE_DEFAULT_THRESHOLD

    @classmethod
    def of_definition(cls, definition: Mapping | None) -> "DisclosurePolicy":
        """The policy a study definition (``result["study"]["definition"]``) sets; default when absent."""
        d = (definition or {}).get("disclosure") or {}
        return cls(threshold=int(d.get("threshold", DISCLOSURE_DEFAULT_THRESHOLD)), reason=d.get("reason"))

    def small(self, n) -> bool:
        """A count that may not be published: more than zero and fewer than the threshold."""
        return n is not None and 0 < n < self.threshold

    def header(self) -> dict:
        return {"threshold": self.threshold, "default_threshold": DISCLOSURE_DEFAULT_THRESHOLD,
                "lowered": self.lowered, "reason": self.reason, "unit": self.unit, "rule": RULE}


# ---------------------------------------------------------------------------- the suppression rules


@dataclass(frozen=True)
class TableSuppression:
    """Which rows (cells) of a table are suppressed, by which rule, and which column totals."""

    rows: dict  # key -> PRIMARY | SECONDARY
    totals: frozenset = frozenset()  # columns whose total is below the threshold (suppressed too)

    def __contains__(self, key) -> bool:
        return key in self.rows


def suppress_table(rows: Mapping[Hashable, Mapping[str, int]], threshold: int,
                   totals: Mapping[str, int] | None = None) -> TableSuppression:
    """Primary and secondary suppression of whole rows of a table of counts.

    ``rows``: key -> {column: count}. Each column is a set of cells with a published total
    (``totals[column]``, default the column's sum). A row with any count in 1..threshold-1 is
    suppressed (primary). Then, column by column, while the suppressed rows are exactly one or
    hold fewer than ``threshold`` in that column (and more than zero), the row with the next
    smallest non-zero count in that column is suppressed (secondary), until no column needs
    more. A column whose total is in 1..threshold-1 is reported in ``totals`` (suppress it)."""
    keys = list(rows)
    order = {k: i for i, k in enumerate(keys)}
    columns = list(dict.fromkeys(c for k in keys for c in rows[k]))
    value = {k: {c: int(rows[k].get(c) or 0) for c in columns} for k in keys}
    total = {c: int(totals[c]) if totals and totals.get(c) is not None else sum(value[k][c] for k in keys)
             for c in columns}
    below = frozenset(c for c in columns if 0 < total[c] < threshold)
    out = {k: PRIMARY for k in keys if any(0 < value[k][c] < threshold for c in columns)}
    while True:
        pick = None
        for c in columns:
            if c in below:  # the total is suppressed: nothing to difference against
                continue
            held = sum(value[k][c] for k in out)
            if held <= 0 or not (len(out) == 1 or held < threshold):
                continue
            candidates = [k for k in keys if k not in out and value[k][c] > 0]
            if candidates:
                pick = min(candidates, key=lambda k: (value[k][c], order[k]))
                break
        if pick is None:
            return TableSuppression(out, below)
        out[pick] = SECONDARY


def suppress_cells(cells: Mapping[Hashable, int], threshold: int, total: int | None = None) -> TableSuppression:
    """:func:`suppress_table` for a one-column table (cells of one set with a published total)."""
    return suppress_table({k: {"n": v} for k, v in cells.items()}, threshold,
                          None if total is None else {"n": total})


def event_time_rows(cohorts_at: Mapping[int, set], n_at: Mapping[int, int], suppressed: set,
                    threshold: int, times: Iterable[int]) -> dict[int, str]:
    """Rows by year since joining (e) that may not be published, with the reason.

    A row at e draws on the cohorts observed at e (``cohorts_at``) and ``n_at[e]`` partnership
    schools. It is removed when it rests on fewer than ``threshold`` schools (primary), or when
    it draws on some but not all of the suppressed cohorts (secondary: it would single them out,
    and its count would give theirs). Rows over no suppressed cohort, or over all of them
    together (like the overall estimate), stay."""
    out = {}
    for e in sorted(set(times)):
        drawn = set(cohorts_at.get(e, set()))
        n = int(n_at.get(e, 0))
        if n < threshold:
            out[e] = PRIMARY
        elif suppressed and (drawn & suppressed) and not suppressed <= drawn:
            out[e] = SECONDARY
    return out


# ---------------------------------------------------------------------------- a study's publication


@dataclass
class Published:
    """What may be written: the controlled result (with its ``disclosure`` block) and frames."""

    result: dict
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def record(self) -> dict:
        return self.result["disclosure"]

    @property
    def suppressed_cohorts(self) -> list[int]:
        return sorted(int(s["key"]) for s in self.record["suppressed"] if s["table"] == "counts.cohorts")


def _words_list(items: list) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cohorts(gs: list) -> str:
    """'the 2014 cohort', 'the 2014 and 2016 cohorts'."""
    return f"the {_words_list(sorted(gs))} cohort" + ("s" if len(gs) > 1 else "")


def _fewer(policy: DisclosurePolicy) -> str:
    return f"fewer than {policy.threshold} {policy.unit}"


def _heterogeneity(r: dict, policy: DisclosurePolicy, suppressed: list) -> None:
    """Subgroup counts (and the schools whose characteristic is unknown) are cells of one set whose
    total, the partnership schools analysed, is published: primary and secondary suppression of the
    counts (``suppress_cells``). The stage estimates no subgroup below the threshold; an estimate whose
    comparison schools are below it is withheld here, and with it the characteristic's test."""
    total = r["counts"]["treated_analysed"]
    for ch in r["heterogeneity"]["characteristics"]:
        cells = {s["key"]: s["n_schools"] for s in ch["subgroups"]}
        cells["(unknown)"] = ch["n_unknown"]
        sup = suppress_cells(cells, policy.threshold, total)
        for s in ch["subgroups"]:
            if s["key"] in sup:
                rule = sup.rows[s["key"]]
                s["n_schools"] = None
                if rule == PRIMARY:
                    s["n_partnerships"] = None
                suppressed.append(_item("heterogeneity", f"{ch['name']}:{s['key']}", rule,
                                        _fewer(policy) if rule == PRIMARY else
                                        "so that the suppressed subgroup cannot be worked out from the total",
                                        f"the number of schools in the subgroup '{s['label']}'"))
            if s["estimate"] is not None and policy.small(s["n_comparison"]):
                s.update(estimate=None, se=None, ci_low=None, ci_high=None, p=None, n_comparison=None,
                         withheld=f"fewer than {policy.threshold} comparison schools: not shown")
                suppressed.append(_item("heterogeneity", f"{ch['name']}:{s['key']}", PRIMARY, _fewer(policy),
                                        f"the effect in the subgroup '{s['label']}'"))
                if ch["test"] is not None and s["key"] in ch["test"]["subgroups"]:
                    ch["test"] = None
                    ch["note"] = "the test is not shown: it rests on a subgroup not shown"
        if "(unknown)" in sup:
            ch["n_unknown"] = None
            suppressed.append(_item("heterogeneity", f"{ch['name']}:(unknown)", sup.rows["(unknown)"],
                                    _fewer(policy), "the number of schools whose subgroup is unknown"))


def _fewer_pupils(policy: DisclosurePolicy) -> str:
    return f"fewer than {policy.threshold} pupils or schools (ONS SRS threshold)"


def _pupils(r: dict, policy: DisclosurePolicy, suppressed: list) -> None:
    """A pupil-level study (``evaluation.stages.pupils``). Every pupil count below the threshold (not
    zero) is suppressed. On each side (partnership and comparison schools) the groups' pupils
    (disadvantaged, other, and those whose disadvantage is not known, which the total less the two
    would give) are cells of one set whose total is published: primary and secondary suppression
    (``suppress_cells``), the total suppressed when the unknown cell is; the partnership schools with
    and without pupils of a group likewise. A group's estimate is withheld when it rests on fewer
    pupils or schools (partnership or comparison) than the threshold. The difference row publishes no
    counts of its own (the groups' rows already give them: it uses the same school-years)."""
    pb = r["pupils"]
    for key, v in pb["counts"].items():
        if v is not None and policy.small(v):
            pb["counts"][key] = None
            suppressed.append(_item("pupils", key, PRIMARY, _fewer_pupils(policy),
                                    f"the number of {key.replace('_', ' ')}"))
    groups = pb.get("groups") or []
    by = {g["group"]: g for g in groups}
    too_few = {g["group"]: g["estimate"] is not None and any(
        n is not None and policy.small(n)
        for n in (g.get("n_pupils"), g.get("n_pupils_comparison"), g["n_schools"], g["n_comparison"]))
        for g in groups}
    for side, total_key, count_key, where in (("treated", "pupils_treated", "n_pupils", "partnership schools"),
                                              ("comparison", "pupils_comparison", "n_pupils_comparison",
                                               "comparison schools")):
        total = pb["counts"].get(total_key)
        if not ("disadvantaged" in by and "other" in by):
            continue
        cells = {"disadvantaged": by["disadvantaged"][count_key], "other": by["other"][count_key]}
        if total is not None:
            cells["(unknown)"] = total - sum(cells.values())
        sup = suppress_cells(cells, policy.threshold, total)
        for key in ("disadvantaged", "other"):
            if key in sup:
                by[key][count_key] = None
                suppressed.append(_item("pupils", f"{key}:{count_key}", sup.rows[key],
                                        _fewer_pupils(policy) if sup.rows[key] == PRIMARY else
                                        "so that the suppressed group cannot be worked out from the total",
                                        f"the number of {by[key]['label']} at {where}"))
        if "(unknown)" in sup and total is not None:
            pb["counts"][total_key] = None
            suppressed.append(_item("pupils", total_key, sup.rows["(unknown)"], _fewer_pupils(policy),
                                    f"the number of pupils at {where} (with the groups' numbers it would give "
                                    "those whose disadvantage is not known)"))
    if pb["counts"].get("pupils_treated") is None or pb["counts"].get("pupils_comparison") is None:
        tw = pb.get("pupil_weighted_twfe") or {}
        if tw.get("n_pupils") is not None:  # their sum, with the other total, would give the suppressed one
            tw["n_pupils"] = None
            tw["variance"] = "CR1 clustered (N in the small-sample factor: the pupils analysed; suppressed)"
    for g in groups:
        for key, all_key in (("n_schools", "treated_analysed"), ("n_comparison", "comparison_matched")):
            rest = r["counts"][all_key] - g[key] if g[key] is not None else 0
            if g[key] is not None and (policy.small(g[key]) or policy.small(rest) and rest > 0):
                g[key] = None
                suppressed.append(_item("pupils", f"{g['group']}:{key}", PRIMARY, _fewer(policy),
                                        f"the number of schools with {g['label']} (or without them)"))
        if g["group"] == "difference":
            g["n_pupils"] = g["n_pupils_comparison"] = None
        if too_few[g["group"]]:
            g.update(estimate=None, se=None, ci_low=None, ci_high=None, p=None, g=None,
                     note=f"rests on {_fewer_pupils(policy)}: not shown")
            suppressed.append(_item("pupils", f"{g['group']}:estimate", PRIMARY, _fewer_pupils(policy),
                                    f"the effect on {g['label']}"))


def _item(table: str, key, rule: str, reason: str, what: str) -> dict:
    return {"table": table, "key": key, "rule": rule, "reason": reason, "what": what}


def flow_withheld(lost: Mapping[str, int | None], policy: DisclosurePolicy) -> bool:
    """The sample-flow rule: the flow (schools found, lost at each step, attrition, and every number
    they follow from) is withheld as a block when any number of partnership schools lost at a step
    is between 1 and the threshold - 1."""
    return any(policy.small(n) for n in lost.values())


FLOW_REASON = ("at least one of the numbers of partnership schools lost at a step is below {t}, and the others "
               "would reveal it")
#: The planned-power numbers the partnership schools entering matching can be worked out from.
POWER_FLOW_KEYS = ("schools_treated", "schools_comparison", "cluster_sizes", "design_effect", "hedges_j", "se", "df",
                   "multiplier", "mdes_raw", "icc", "serial_correlation", "autocorrelation", "within_school_sd",
                   "semivariogram", "var_change", "var_change_direct")
ATTRITION_WORDS = re.compile(r"\d+(?:\.\d+)?% of the partnership schools")
ATTRITION_WITHHELD = "a share of the partnership schools (the share is withheld: disclosure control)"


def control_study(result: dict, policy: DisclosurePolicy | None = None, *,
                  frames: Mapping[str, pd.DataFrame] | None = None, links: pd.DataFrame | None = None,
                  coverage: pd.DataFrame | None = None) -> Published:
    """Disclosure control of a study's result.json content and the per-school frames written beside it.

    ``frames``: ``cohort`` (urn, g, ...: the partnership schools found, with ``analysed`` when
    known), ``matched_pairs`` (treated_id, control_id, cohort) and ``schools`` (urn, group, ...:
    the map). ``links``: urn, g, treated: every analysed school with the cohort(s) it belongs to
    (a comparison school may be matched in several). ``coverage``: g, e, urn: the partnership
    schools' outcome rows in the analysis panel by year since joining. Returns copies; the inputs
    are not changed.

    Raises InputError when the schools analysed (partnership or comparison) are fewer than the
    threshold: then no statistic of the study may be published."""
    policy = policy or DisclosurePolicy.of_definition(result["study"].get("definition"))
    t = policy.threshold
    r = copy.deepcopy(result)
    out_frames = {name: f.copy() for name, f in (frames or {}).items()}
    suppressed: list[dict] = []
    kept: list[dict] = []
    c = r["counts"]
    sid = r["study"]["id"]

    for key, words in (("treated_analysed", "partnership schools"), ("comparison_matched", "comparison schools")):
        if policy.small(c[key]) or c[key] == 0:
            raise InputError(problem(
                f"nothing from study {sid!r} can be published: {c[key]} {words} are in the analysis, fewer than "
                f"the disclosure threshold of {t} schools (ONS Secure Research Service rule), so every estimate "
                f"would rest on too few schools. Widen the cohort, or set [disclosure] threshold lower with a "
                f"reason", column="disclosure.threshold", value=t))

    # -- the cohort table, row by row, against the totals in counts; with the partnership schools
    #    analysed in each cohort (tables/cohort.csv lists them) as one more column
    analysed_in = ({} if coverage is None or not len(coverage) else
                   {int(g): int(n) for g, n in coverage.groupby("g")["urn"].nunique().items()})
    cols = ("treated", "treated_matched", "comparison_matched")
    table = {int(g["g"]): {k: int(g[k]) for k in cols} for g in c["cohorts"]}
    if coverage is not None:
        for g, row in table.items():
            row["treated_analysed"] = analysed_in.get(g, 0)
    sup = suppress_table(table, t)
    gone = set(sup.rows)
    for g, rule in sorted(sup.rows.items()):
        reason = (_fewer(policy) if rule == PRIMARY else
                  "so that the suppressed cohorts cannot be worked out from the totals")
        suppressed.append(_item("counts.cohorts", g, rule, reason,
                                f"the {g} cohort: its counts, schools, matched pairs and map points"))
    c["cohorts"] = [g for g in c["cohorts"] if int(g["g"]) not in gone]

    # -- the sample flow: published in full, or withheld as a block
    withhold_flow = flow_withheld(c["treated_lost"], policy)
    if withhold_flow:
        _withhold_flow(r, policy, suppressed, kept)
    else:
        _nested_differences(table, gone, policy, kept)

    # -- statistics by year since joining
    cohorts_at: dict[int, set] = {}
    n_at: dict[int, int] = {}
    if coverage is not None and len(coverage):
        for e, grp in coverage.groupby("e"):
            cohorts_at[int(e)] = {int(g) for g in grp["g"].unique()}
            n_at[int(e)] = int(grp["urn"].nunique())
    elif coverage is None:
        kept.append({"table": "event_study", "key": None,
                     "reason": "no coverage by year since joining was given, so rows by year were not checked"})
    removed_e = _event_time(r, cohorts_at, n_at, gone, policy, suppressed) if coverage is not None else {}
    removed_k = _placebos(r, gone, policy, suppressed)
    _scrub_checks(r, removed_k, removed_e)

    # -- planned power: counts by cohort, partnership sizes (and, with the flow withheld, its ingredients)
    _power(r, gone, policy, suppressed, withhold_flow)

    # -- texts naming a suppressed cohort, and counts of schools below the threshold in notes
    _scrub_notes(r, gone, policy, suppressed)

    # -- subgroup effects ([heterogeneity]): subgroup counts against the schools analysed
    if r.get("heterogeneity"):
        _heterogeneity(r, policy, suppressed)

    # -- a pupil-level study: pupil counts and the pupil groups' results
    if r.get("pupils"):
        _pupils(r, policy, suppressed)

    # -- per-school frames: the analysed partnership schools, matched pairs, map points
    _frames(out_frames, gone, links, coverage)

    r["disclosure"] = {**policy.header(), "suppressed": suppressed, "not_suppressed": kept}
    return Published(r, out_frames)


def _withhold_flow(r: dict, policy: DisclosurePolicy, suppressed: list, kept: list) -> None:
    """The sample flow withheld as a block (:func:`flow_withheld`), with the words that state it."""
    c = r["counts"]
    c["treated_found"] = None
    c["attrition"] = None
    c["treated_lost"] = {k: None for k in c["treated_lost"]}
    for row in c["cohorts"]:
        row["treated"] = None
        row["treated_matched"] = None
    suppressed.append(_item(
        "counts.flow", ["counts.treated_found", "counts.attrition", "counts.treated_lost",
                        "counts.cohorts.treated", "counts.cohorts.treated_matched"],
        PRIMARY, FLOW_REASON.format(t=policy.threshold),
        "the sample flow: the partnership schools found, the share and the numbers lost at each step, and the "
        "partnership schools entering matching and matched in each cohort"))
    attrition_locks = 0

    def scrub(node):
        nonlocal attrition_locks
        if isinstance(node, str):
            attrition_locks += node.startswith("attrition: ")
            return ATTRITION_WORDS.sub(ATTRITION_WITHHELD, node)
        if isinstance(node, list):
            return [scrub(v) for v in node]
        if isinstance(node, dict):
            return {k: scrub(v) for k, v in node.items()}
        return node

    for block in ("effects", "summary", "verdict"):
        if r.get(block) is not None:
            r[block] = scrub(r[block])
    summary = r.get("summary") or {}
    for key, text in summary.items():  # a sentence that now starts with the lower-case words
        if isinstance(text, str) and text.startswith(ATTRITION_WITHHELD):
            summary[key] = text[0].upper() + text[1:]
    if attrition_locks:
        kept.append({"table": "effects.padlocks", "key": None,
                     "reason": f"{attrition_locks} padlock(s) are lost to attrition: the number shows the band of "
                               "the rating rule the attrition falls in (above the share the remaining padlocks "
                               "allow), not the share itself; the padlocks are part of the answer"})


def _nested_differences(table: dict, gone: set, policy: DisclosurePolicy, kept: list) -> None:
    """Counts a reader can take from two published counts of a cohort (entering matching minus matched,
    matched minus analysed), when the flow is published."""
    def small(g):
        row = table[g]
        return (policy.small(row["treated"] - row["treated_matched"])
                or ("treated_analysed" in row and policy.small(row["treated_matched"] - row["treated_analysed"])))

    shown = [g for g in sorted(table) if g not in gone and small(g)]
    if shown:
        kept.append({"table": "counts.cohorts", "key": shown,
                     "reason": f"in {_cohorts(shown)} the partnership schools entering matching but not matched, "
                               f"or matched but not analysed (listed in tables/cohort.csv), are {_fewer(policy)}; "
                               "differences of two published counts of the same cohort are not treated as cells"})


def _event_time(r: dict, cohorts_at, n_at, gone: set, policy: DisclosurePolicy, suppressed: list
                ) -> dict[str, set]:
    """Remove rows by year since joining that rest on too few schools or single out suppressed cohorts."""
    t = policy.threshold
    removed: dict[str, set] = {}

    def words(e_rule: dict) -> str:
        reasons = []
        if PRIMARY in e_rule.values():
            reasons.append(f"fewer than {t} partnership schools observed there")
        if SECONDARY in e_rule.values():
            reasons.append("they draw on only some of the suppressed cohorts")
        return "; ".join(reasons)

    def drop(table: str, rows: list, label: str, extra=lambda row: False) -> list:
        rule = event_time_rows(cohorts_at, n_at, gone, t, [row["e"] for row in rows])
        own = {row["e"]: PRIMARY for row in rows if extra(row) and row["e"] not in rule}
        rule = {**rule, **own}
        if rule:
            es = sorted(rule)
            suppressed.append(_item(table, es, SECONDARY if set(rule.values()) == {SECONDARY} else PRIMARY,
                                    words(rule), f"{label} at e = {_words_list(es)}"))
        return [row for row in rows if row["e"] not in rule]

    for name, rows in (r.get("event_study") or {}).items():
        kept_rows = drop(f"event_study.{name}", rows, f"the {name.replace('_', ' ')} effects by year since joining")
        removed[name] = {row["e"] for row in rows} - {row["e"] for row in kept_rows}
        r["event_study"][name] = kept_rows
    if r.get("trends"):
        r["trends"] = drop("trends", r["trends"], "the outcome trends by year since joining",
                           extra=lambda row: policy.small(row.get("n_schools")))
    truth = r.get("synthetic_truth")
    if truth:
        for key, label in (("event_time", "the planted (synthetic) effect by year since joining"),
                           ("did_of_all_planted_effects", "the planted (synthetic) difference by year since joining")):
            if truth.get(key):
                truth[key] = drop(f"synthetic_truth.{key}", truth[key], label)
    return removed


def _placebos(r: dict, gone: set, policy: DisclosurePolicy, suppressed: list) -> list[int]:
    """Remove placebo estimates resting on too few schools or on only some suppressed cohorts."""
    placebo = (r.get("diagnostics") or {}).get("placebo_dates") or {}
    rows = placebo.get("placebos") or []
    out, removed = [], []
    for p in rows:
        real = {int(g) + int(p["k"]) for g in p.get("cohorts") or []}
        few = any(policy.small(p.get(k)) for k in ("treated_schools", "comparison_schools"))
        partial = bool(gone) and bool(real & gone) and not gone <= real
        if few or partial:
            removed.append(int(p["k"]))
            suppressed.append(_item(
                "diagnostics.placebo_dates.placebos", int(p["k"]), PRIMARY if few else SECONDARY,
                f"{_fewer(policy)}" if few else "it draws on only some of the suppressed cohorts",
                f"the placebo estimate for joining {p['k']} year(s) early (its row and the numbers in the "
                "placebo check's text)"))
        else:
            out.append(p)
    if removed:
        placebo["placebos"] = out
        effects = r.get("effects") or {}
        if effects.get("placebo_g"):  # the same estimates in effect-size units
            effects["placebo_g"] = [row for row in effects["placebo_g"] if int(row["k"]) not in removed]
    return removed


def _scrub_checks(r: dict, removed_k: list[int], removed_e: dict[str, set]) -> None:
    """Take the numbers of removed rows out of the design checks' texts (verdict and padlock
    reasons); whether each check failed, the answer and the padlocks stay as computed."""
    checks = (r.get("verdict") or {}).get("checks") or []
    any_e = set().union(*removed_e.values()) if removed_e else set()
    swaps: dict[str, str] = {}
    for check in checks:
        old = check.get("detail") or ""
        new = old
        if check.get("name") == "placebo" and removed_k:
            found = 0
            for k in removed_k:
                new, n = re.subn(rf"(?<![\d-]){k} year\(s\) early: [^;]*?p (?:<|=) [0-9.]+",
                                 f"{k} year(s) early: {WITHHELD}", new)
                found += n
            if found < len(removed_k):  # a format this rule does not know: withhold the whole text
                new = f"placebo joining dates: the estimates are {WITHHELD}"

        def pre(m):
            return f"; largest pre-joining difference {WITHHELD}" if int(m.group(1)) in any_e else m.group(0)

        new = re.sub(r"; largest pre-joining difference .*? at e = (-?\d+)", pre, new)
        if new != old:
            swaps[old] = new
            check["detail"] = new
    if not swaps:
        return

    def swap(node):  # the same texts, quoted in the padlock reasons and the summary's words
        if isinstance(node, str):
            for old, new in swaps.items():
                node = node.replace(old, new)
            return node
        if isinstance(node, list):
            return [swap(v) for v in node]
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        return node

    for block in ("effects", "summary"):
        if r.get(block) is not None:
            r[block] = swap(r[block])


def _power(r: dict, gone: set, policy: DisclosurePolicy, suppressed: list, withhold_flow: bool) -> None:
    """The planned-power block: per-cohort counts and the sizes of the partnerships; with the sample
    flow withheld, every number of schools and every ingredient they could be worked out from."""
    power = r.get("power")
    if not power:
        return
    rows = power.get("cohorts") or []
    if withhold_flow:
        for row in rows:
            for key in ("treated", "treated_dropped"):
                if key in row:
                    row[key] = None
        present = [k for k in POWER_FLOW_KEYS if power.get(k) is not None]
        for key in present:
            power[key] = None
        for block in (power, r.get("effects") or {}):
            if block.get("mdes") is not None:
                block["mdes"] = round2(float(block["mdes"]))
        notes = power.get("notes") or []
        power["notes"] = [_LEFT_OUT.sub("partnership schools (their number is withheld: disclosure control)", n)
                          for n in notes]
        suppressed.append(_item(
            "power", ["power.cohorts.treated", "power.cohorts.treated_dropped", *(f"power.{k}" for k in present)],
            PRIMARY, FLOW_REASON.format(t=policy.threshold),
            "the planned power's numbers of partnership and comparison schools (in all, by cohort, left out, per "
            "partnership) and the ingredients they could be worked out from; the minimum detectable effect size is "
            "shown to 2 decimals"))
        return
    found = {int(row["g"]): {"treated": int(row["treated"])} for row in rows if row.get("treated") is not None}
    hide = set(suppress_table(found, policy.threshold).rows) | (gone & set(found))
    dropped = {int(row["g"]): int(row["treated_dropped"]) for row in rows if row.get("treated_dropped") is not None}
    hide_dropped = set(suppress_cells(dropped, policy.threshold).rows)
    for row in rows:
        g = int(row["g"])
        if g in hide:
            row["treated"] = None
        if g in hide | hide_dropped and "treated_dropped" in row:
            row["treated_dropped"] = None
    if hide:
        gs = sorted(hide)
        suppressed.append(_item("power.cohorts", gs, PRIMARY, f"{_fewer(policy)}, or a suppressed cohort",
                                f"the planned-power counts of {_cohorts(gs)}"))
    if hide_dropped - hide:
        gs = sorted(hide_dropped - hide)
        suppressed.append(_item("power.cohorts", gs, PRIMARY, _fewer(policy),
                                f"the number of partnership schools the planned power leaves out in "
                                f"{_cohorts(gs)}"))
    notes = power.get("notes") or []
    scrubbed = [_small_numbers(n, policy.threshold) for n in notes]
    if scrubbed != notes:
        power["notes"] = scrubbed
        suppressed.append(_item("power.notes", None, PRIMARY, _fewer(policy),
                                "the number of partnership schools the planned power leaves out, in its notes"))
    sizes = power.get("cluster_sizes")
    if sizes and any(policy.small(s) for s in sizes):
        power["cluster_sizes"] = None
        suppressed.append(_item("power.cluster_sizes", None, PRIMARY, f"partnerships of {_fewer(policy)}",
                                "the number of schools in each partnership (used for the planned power)"))


_LEFT_OUT = re.compile(r"^\d+ partnership school\(s\)")


def _mentions(text: str, years: set) -> bool:
    return any(re.search(rf"(?<!\d){g}(?:\.0)?(?!\d)", text) for g in years)


def _scrub_notes(r: dict, gone: set, policy: DisclosurePolicy, suppressed: list) -> None:
    """Texts that name a suppressed cohort would say something about it alone: withheld (placebo notes:
    removed). Counts of schools below the threshold in the others become "fewer than N"."""
    t = policy.threshold
    skipped = r.get("estimators_not_computed") or {}
    for name, text in list(skipped.items()):
        if not isinstance(text, str):
            continue
        if gone and _mentions(text, gone):
            skipped[name] = f"not computed: the reason concerns a suppressed cohort, {WITHHELD}"
            suppressed.append(_item("estimators_not_computed", name, SECONDARY, "it names a suppressed cohort",
                                    f"why the {name.replace('_', ' ')} estimator was not computed"))
        elif _small_numbers(text, t) != text:
            skipped[name] = _small_numbers(text, t)
            suppressed.append(_item("estimators_not_computed", name, PRIMARY, _fewer(policy),
                                    f"a count of schools in why the {name.replace('_', ' ')} estimator was not "
                                    "computed"))
    for name, entry in (r.get("estimates") or {}).items():
        notes = entry.get("notes") or []
        if gone and any(_mentions(n, gone) for n in notes):
            notes = [f"a note about a suppressed cohort: {WITHHELD}" if _mentions(n, gone) else n for n in notes]
            suppressed.append(_item(f"estimates.{name}.notes", name, SECONDARY, "it names a suppressed cohort",
                                    f"a note of the {name.replace('_', ' ')} estimator"))
        scrubbed = [_small_numbers(n, t) for n in notes]
        if scrubbed != notes:
            suppressed.append(_item(f"estimates.{name}.notes", name, PRIMARY, _fewer(policy),
                                    f"a count of schools in a note of the {name.replace('_', ' ')} estimator"))
        if "notes" in entry:
            entry["notes"] = scrubbed
    for p in ((r.get("diagnostics") or {}).get("placebo_dates") or {}).get("placebos") or []:
        notes = p.get("notes") or []
        k = int(p["k"])
        named = gone | {g - k for g in gone}  # a cohort by its real year, or as the placebo moves it
        out = [_small_numbers(n, t) for n in notes if not (named and _mentions(n, named))]
        if len(out) < len(notes):
            suppressed.append(_item("diagnostics.placebo_dates.placebos.notes", k, SECONDARY,
                                    "they name a suppressed cohort",
                                    f"notes of the placebo estimate for joining {k} year(s) early"))
        elif out != notes:
            suppressed.append(_item("diagnostics.placebo_dates.placebos.notes", k, PRIMARY, _fewer(policy),
                                    f"a count of schools in the notes of the placebo estimate for joining {k} "
                                    "year(s) early"))
        if "notes" in p:
            p["notes"] = out


def _frames(frames: dict[str, pd.DataFrame], gone: set, links: pd.DataFrame | None,
            coverage: pd.DataFrame | None) -> None:
    """The analysed partnership schools of published cohorts (tables/cohort.csv); matched pairs and map
    points without the suppressed cohorts."""
    if "cohort" in frames:
        f = frames["cohort"]
        if "analysed" in f.columns:
            keep = f["analysed"].astype(bool)
        elif coverage is not None:
            keep = f["urn"].astype("int64").isin(set(coverage["urn"].astype("int64")))
        elif links is not None:
            keep = f["urn"].astype("int64").isin(set(links.loc[links["treated"] == 1, "urn"].astype("int64")))
        else:  # which schools were analysed is not known: none can be listed safely
            keep = pd.Series(False, index=f.index)
        if "g" in f.columns and gone:
            keep &= ~f["g"].astype("int64").isin(gone)
        frames["cohort"] = f[keep].drop(columns=["analysed"], errors="ignore").reset_index(drop=True)
    if not gone:
        return
    if "matched_pairs" in frames and "cohort" in frames["matched_pairs"].columns:
        f = frames["matched_pairs"]
        frames["matched_pairs"] = f[~f["cohort"].astype("int64").isin(gone)].reset_index(drop=True)
    if "schools" in frames and len(frames["schools"]):
        f = frames["schools"]
        if links is None:  # without the cohorts of each school, no school can be shown safely
            frames["schools"] = f.iloc[0:0]
            return
        shown = set(links.loc[~links["g"].astype("int64").isin(gone), "urn"].astype("int64"))
        frames["schools"] = f[f["urn"].astype("int64").isin(shown)].reset_index(drop=True)


# ---------------------------------------------------------------------------- a self-evaluation


def control_self_evaluation(result: dict, policy: DisclosurePolicy | None = None) -> dict:
    """A self-evaluation with its ``disclosure`` block (a copy).

    A self-evaluation is about named schools by design: a partnership of 3-50 schools publishes
    its own schools' results against families of similar schools, so its schools, their average
    and each school's own comparison are published whatever their number; nothing is suppressed.
    The block says so, and flags comparison families (or a comparison group) smaller than the
    threshold, whose means rest on fewer schools than the study rule allows."""
    policy = policy or DisclosurePolicy()
    r = copy.deepcopy(result)
    kept = [{"table": "schools", "key": None,
             "reason": "the partnership's own schools are named and their results and average are published "
                       "whatever their number: a self-evaluation is about named schools by design"}]
    small = [b for b in r.get("by_school") or [] if policy.small(b.get("family_size"))]
    if small:
        kept.append({"table": "by_school", "key": [int(b["urn"]) for b in small],
                     "reason": f"the comparison families of {len(small)} school(s) have {_fewer(policy)}, so "
                               "those schools' comparisons rest on fewer schools than the study rule allows"})
    n_comparison = (r.get("comparison") or {}).get("schools")
    if policy.small(n_comparison):
        kept.append({"table": "comparison", "key": "schools",
                     "reason": f"the comparison group has {_fewer(policy)}"})
    r["disclosure"] = {**policy.header(), "suppressed": [], "not_suppressed": kept}
    return r


# ---------------------------------------------------------------------------- the multiverse


def control_multiverse(mv: MultiverseResult, policy: DisclosurePolicy | None = None) -> tuple[dict, MultiverseResult]:
    """The multiverse as it may be published, and its disclosure record.

    A specification resting on fewer than the threshold of partnership or comparison schools
    keeps its choices but loses its numbers and any failure text (``withheld``); a count of
    schools below the threshold inside a reason a specification could not be estimated becomes
    "fewer than N". When the headline specification's sample flow must be withheld
    (:func:`flow_withheld`, the rule the study's result.json follows; also when it is not known),
    every specification's numbers of schools are published only as "at least the threshold"
    (``schools_at_least``): their differences would reveal the schools lost at a step. Raises
    InputError when the headline specification itself may not be published (then neither may the
    study)."""
    policy = policy or DisclosurePolicy.of_definition(mv.definition)
    t = policy.threshold
    lost = mv.headline.treated_lost
    withhold_counts = lost is None or flow_withheld(lost, policy)
    suppressed, out = [], []
    for s in mv.specifications:
        small = [w for w, n in (("partnership", s.treated_schools), ("comparison", s.comparison_schools))
                 if n is not None and (policy.small(n) or (n == 0 and s.estimated))]
        if small:
            if s.headline:
                raise InputError(problem(
                    f"the multiverse of {mv.study_id!r} cannot be published: its headline specification rests on "
                    f"fewer than {t} {' and '.join(small)} schools (disclosure threshold)",
                    column="disclosure.threshold", value=t))
            why = f"fewer than {t} {' and '.join(small)} schools"
            suppressed.append({"table": "specifications", "key": s.index, "rule": "primary", "reason": why,
                               "what": "the estimate, interval, p-value, counts and any failure text of this "
                                       "specification"})
            s = replace(s, estimate=None, se=None, ci_low=None, ci_high=None, p=None, agrees=None,
                        treated_schools=None, comparison_schools=None, treated_clusters=None,
                        max_abs_smd_after=None, failure=None, withheld=f"{WITHHELD}: {why}")
        else:
            if s.failure:
                s = replace(s, failure=_small_numbers(s.failure, t))
            if withhold_counts and (s.treated_schools is not None or s.comparison_schools is not None):
                s = replace(s, treated_schools=None, comparison_schools=None, schools_at_least=t)
        out.append(replace(s, treated_lost=None))
    published = replace(mv, specifications=out)
    if withhold_counts:
        suppressed.append({
            "table": "specifications", "key": None, "rule": "secondary",
            "reason": ("the headline specification's sample flow is withheld: " + FLOW_REASON.format(t=t)
                       if lost is not None else "the headline specification's sample flow is not known"),
            "what": "the numbers of partnership and comparison schools of each specification (each is at least "
                    f"{t}: schools_at_least), whose differences would give the schools lost at a step"})
        kept = []
    else:
        kept = [{"table": "specifications", "key": None,
                 "reason": "the numbers of schools differ between specifications by the schools one choice adds or "
                           "drops (a caliper, a ratio); such a difference is published even when it is below the "
                           "threshold, as no estimate is published for those schools alone, and the study's own "
                           "sample flow is published in full"}]
    record = {**policy.header(), "suppressed": suppressed, "not_suppressed": kept}
    return record, published


#: A count of schools in a text: a number (not part of a word, a decimal, a negative number or a
#: range) followed by words that say it counts schools ("12 partnership school-years",
#: "6 observation(s)", "3 comparison schools"). Years, windows and df are not followed by them.
_SCHOOL_COUNT = re.compile(
    r"(?<![\w.\-\u2212+])(\d+)"
    r"(?=\s+(?:(?:partnership|comparison|treated|treated-unit|control|matched|unmatched|analysed|eligible|"
    r"similar|member|pool|other|more|new)\s+)*"
    r"(?:school|observation|pupil)(?:-year)?(?:s|\(s\))?(?![\w(-]))")


def _small_numbers(text: str, threshold: int) -> str:
    """Counts of schools of 1..threshold-1 in a text replaced by 'fewer than N'; every other number kept."""
    def sub(m):
        n = int(m.group(1))
        return f"fewer than {threshold}" if 0 < n < threshold else m.group(0)

    return _SCHOOL_COUNT.sub(sub, text)
