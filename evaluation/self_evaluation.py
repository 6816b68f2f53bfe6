"""One partnership evaluating itself: every school, each phase, joining over the years.

A trust grows school by school and mixes primaries and secondaries; conventional clustered
standard errors are meaningless for it (one partnership is one cluster). The design:

* **Every school counts.** Each school is analysed from its own first results after joining,
  on its phase's outcome (KS2 for primaries, KS4 for secondaries, or what the partnership
  names), or left out with a reason the chapter prints (joined before the data, no results
  since joining yet, results missing or the school closed, no outcome for its phase, no
  similar schools to compare with). A *supporting* school (a sponsor, a teaching school, a
  trust's founding school) is reported on its own, not in the partnership's average.
* **Families of similar schools.** For each school, the ``family_size`` most similar schools
  of its phase on the years before it joined (results level and trend, context), by z-score
  distance (EEF families of schools), taken from schools in no partnership during the years
  compared (never-or-not-yet members), with results in every one of those years.
* **Staggered joining: synthetic DiD per joining cohort, then averaged.** The schools of one
  phase that had their first results after joining in the same year form a cohort; each
  cohort is estimated by synthetic difference-in-differences (Arkhangelsky et al. 2021,
  Algorithm 1) against the union of its schools' families, with synthetic control and plain
  DiD beside it. The phase's effect is the average of the cohorts' effects weighted by their
  numbers of schools (the staggered-adoption aggregation of Arkhangelsky et al. 2021,
  section 7 / appendix, with school counts as weights: the average school's post-joining
  effect).
* **Inference that holds for a handful of schools: placebo.** Each cohort's estimate is
  repeated ``n_perm`` times with as many comparison schools posing as the cohort
  (Algorithm 4); the phase's placebo distribution combines the cohorts' draws with the same
  weights, replicate by replicate (cohorts' placebo draws are independent, like their
  disjoint sets of schools). SE = sqrt((R-1)/R) x SD of the combined draws (synthdid's
  convention); 95% CI = estimate +- 1.96 SE; placebo p-value = (1 + #{|draw| >= |estimate|})
  / (R + 1). Shocks shared by a partnership's schools are not represented (see the chapter).
* **Phases combined only in effect-size units.** When every analysed phase's outcome has a
  known pupil-level SD, the partnership's effect is the school-weighted average of the
  phases' effect sizes (draws combined the same way); otherwise each phase is shown on its
  own, in its own units.
* **Baselines and targets** (:mod:`evaluation.self_eval_targets`) and the **history** of the
  estimate over re-runs (one entry per latest year of data).

Pure functions of the tables (``StudyData``) and a list of schools with join dates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from evaluation import __version__
from evaluation.data.calendar import first_exposed_year
from evaluation.data.schema import load_schema
from evaluation.effects import months_progress
from evaluation.errors import InputError, problem
from evaluation.result_schema import RESULT_SCHEMA_VERSION, SelfEvaluationResult
from evaluation.self_eval_targets import evaluate_targets, weight_column
from evaluation.stages.cohort import StudyData, data_fingerprint, pre_features
from evaluation.stages.effects import pupil_level_sd
from evaluation.study import CONTEXT_COVARIATES

DEFAULT_OUTCOME = {"primary": "ks2_rwm_expected_pct", "secondary": "ks4_attainment8"}
COVARIATES = ("pre_level", "pre_trend", "fsm_pct", "eal_pct", "sen_pct", "pupils")
MDES_MULTIPLIER = float(stats.norm.ppf(0.975) + stats.norm.ppf(0.8))
Z975 = float(stats.norm.ppf(0.975))
METHODS = ("synthetic_did", "synthetic_control", "did")
BY_SCHOOL_REPLICATIONS = 200
MIN_PRE_YEARS = 2


@dataclass(frozen=True)
class SelfEvaluationSpec:
    name: str
    schools: pd.DataFrame  # urn, joined (datetime), optional role ("member" / "supporting")
    outcome: str | None = None  # one outcome for the phase it belongs to (the CLI's --outcome)
    pre_years: int = 4
    post_years: int = 5
    family_size: int = 50
    seed: int = 20240901
    n_perm: int = 200  # placebo replications of each cohort's estimate (synthdid's default)
    title: str | None = None  # e.g. the partnership's name; defaults to ``name``
    outcomes: dict = field(default_factory=dict)  # phase -> outcome column
    baseline_year: int | None = None
    targets: tuple = ()  # partnership_file.TargetEntry
    pupil_sd: dict = field(default_factory=dict)  # outcome -> (sd, source)
    partnership_id: str | None = None
    source_file: str | None = None  # the partnership file, as the user named it
    methods: tuple = METHODS  # synthetic DiD first; the others are shown beside it
    by_school: bool = True  # each school against its own family (off in simulations)


# ---------------------------------------------------------------------------- the schools


def read_schools_file(path) -> pd.DataFrame:
    """A partnership's schools: CSV with columns urn and joined (a date), optionally role
    (member or supporting), one row per school."""
    from evaluation.data.validate import parse_dates, read_raw

    raw = read_raw(path)
    cells = raw.cells.rename(columns=lambda c: str(c).strip().lower())
    problems = []
    for col in ("urn", "joined"):
        if col not in cells.columns:
            problems.append(problem(f"required column {col!r} is missing (expected columns: urn, joined, "
                                    "optionally role)", file=raw.label, row=1 if raw.kind == "csv" else None,
                                    column=col))
    if problems:
        raise InputError(problems)
    urn = pd.to_numeric(cells["urn"].str.strip(), errors="coerce")
    joined, bad_dates = parse_dates(cells["joined"].str.strip())
    for row in urn.index[urn.isna() | (urn % 1 != 0)]:
        problems.append(problem("expected a six-digit URN", file=raw.label, row=int(row), column="urn",
                                value=cells.at[row, "urn"]))
    for row in bad_dates.index[bad_dates | joined.isna()]:
        problems.append(problem("expected a join date (YYYY-MM-DD or DD/MM/YYYY)", file=raw.label, row=int(row),
                                column="joined", value=cells.at[row, "joined"]))
    role = pd.Series("member", index=cells.index)
    if "role" in cells.columns:
        given = cells["role"].fillna("").str.strip().str.lower().replace("", "member")
        for row in given.index[~given.isin(["member", "supporting"])]:
            problems.append(problem("expected role member or supporting (or empty)", file=raw.label, row=int(row),
                                    column="role", value=cells.at[row, "role"]))
        role = given
    dup = urn.duplicated(keep="first") & urn.notna()
    for row in urn.index[dup]:
        problems.append(problem("the same school is listed twice", file=raw.label, row=int(row), column="urn",
                                value=cells.at[row, "urn"]))
    if problems:
        raise InputError(problems, summary=f"{raw.label}: {len(problems)} problem(s); nothing was evaluated")
    if len(urn) == 0:
        raise InputError(problem("the file lists no schools", file=raw.label))
    return pd.DataFrame({"urn": urn.astype("int64").to_numpy(), "joined": joined.to_numpy(),
                         "role": role.to_numpy()})


def schools_of_partnership(data: StudyData, partnership_id: str, supporting=()) -> pd.DataFrame:
    """A partnership's schools from the store: each school's first joining date; the schools the
    store marks as the partnership's lead (and any URN in ``supporting``) are its supporting schools."""
    m = data.memberships[data.memberships["partnership_id"] == partnership_id]
    if m.empty:
        known = data.partnerships["partnership_id"].astype(str)
        import difflib

        close = difflib.get_close_matches(partnership_id, list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(problem(f"no partnership {partnership_id!r} with member schools in the store{hint}",
                                 column="partnership_id", value=partnership_id))
    m = m.sort_values("joined").drop_duplicates("urn")
    lead = m["role"].astype(str).eq("lead") if "role" in m.columns else pd.Series(False, index=m.index)
    missing = sorted(set(supporting) - set(m["urn"].astype(int)))
    if missing:
        raise InputError(problem(f"supporting school {missing[0]} is not a member of {partnership_id}",
                                 column="supporting", value=missing[0]))
    role = np.where(lead | m["urn"].isin(list(supporting)), "supporting", "member")
    return pd.DataFrame({"urn": m["urn"].astype("int64").to_numpy(), "joined": m["joined"].to_numpy(),
                         "role": role})


def example_partnership(data: StudyData, size: int = 5) -> str:
    """A partnership for the demo: ``size`` schools of one phase that all joined on one date
    between 2014 and 2018 (the lowest such id; else the nearest size above 2)."""
    m = data.memberships.merge(data.schools[["urn", "phase"]], on="urn")
    grp = m.groupby("partnership_id").agg(n=("urn", "nunique"), phases=("phase", "nunique"),
                                          first=("joined", "min"), last=("joined", "max"))
    ok = grp[(grp["phases"] == 1) & (grp["first"] == grp["last"]) & grp["first"].dt.year.between(2013, 2017)
             & (grp["n"] >= 3)]
    if ok.empty:
        raise InputError(problem("no partnership of three or more schools joined on one date in 2013-2017"))
    ok = ok.assign(dist=(ok["n"] - size).abs()).sort_values(["dist", "n"], kind="stable")
    return str(ok[ok["dist"] == ok["dist"].min()].index.sort_values()[0])


# ---------------------------------------------------------------------------- outcomes and eligibility


@dataclass(frozen=True)
class PhaseOutcome:
    phase: str
    name: str
    description: str
    unit: str | None
    years: tuple[int, ...]  # academic years with this outcome published for the phase
    pupil_sd: float | None
    sd_source: str | None
    weight: str | None  # the key-stage cohort size column, for pupil-weighted averages

    def block(self) -> dict:
        return {"phase": self.phase, "name": self.name, "description": self.description, "unit": self.unit,
                "pupil_sd": self.pupil_sd, "sd_source": self.sd_source}


def _outcome_for(phase: str, spec: SelfEvaluationSpec) -> str | None:
    if phase in spec.outcomes:
        return spec.outcomes[phase]
    default = DEFAULT_OUTCOME.get(phase)
    if spec.outcome and default and spec.outcome.split("_", 1)[0] == default.split("_", 1)[0]:
        return spec.outcome  # --outcome names one outcome: it serves the phase of its key stage
    return default


def _phase_outcomes(spec: SelfEvaluationSpec, data: StudyData, phases) -> dict[str, PhaseOutcome]:
    schema = load_schema("school_years")
    if spec.outcome is not None:
        col = schema.column(spec.outcome)
        if col is None or col.role != "outcome":
            raise InputError(problem("not an outcome column of school_years", column="outcome", value=spec.outcome))
        if not any(_outcome_for(p, spec) == spec.outcome for p in phases):
            raise InputError(problem(f"--outcome {spec.outcome} is for another phase than these schools' "
                                     f"({', '.join(sorted(phases))})", column="outcome", value=spec.outcome))
    sy = data.school_years.merge(data.schools[["urn", "phase"]], on="urn")
    out = {}
    for phase in sorted(phases):
        name = _outcome_for(phase, spec)
        col = schema.column(name) if name else None
        if col is None or col.role != "outcome" or name not in sy.columns:
            continue
        rows = sy[(sy["phase"] == phase) & sy[name].notna()]
        years = tuple(sorted(int(y) for y in rows["year"].unique()))
        if name in spec.pupil_sd:
            sd, source = spec.pupil_sd[name]
        else:
            sd, source = pupil_level_sd(name, data)
        out[phase] = PhaseOutcome(phase, name, col.description, col.unit, years, sd, source,
                                  weight_column(name, sy.columns))
    return out


def _eligibility(spec, data, schools: pd.DataFrame, outcomes: dict[str, PhaseOutcome]) -> pd.DataFrame:
    """Per school: status (analysed / supporting / excluded), the reason, and the years compared
    (``pre`` and ``post`` lists of published years)."""
    sy = data.school_years
    rows = []
    for s in schools.itertuples():
        o = outcomes.get(s.phase)
        rec = {"urn": int(s.urn), "status": "excluded", "reason": None, "pre": [], "post": []}
        if o is None:
            rec["reason"] = f"no outcome is named for {s.phase} schools"
            rows.append(rec)
            continue
        before = [y for y in o.years if y < s.g]
        after = [y for y in o.years if s.g <= y <= s.g + spec.post_years]
        pre = before[-spec.pre_years:]
        if len(before) < MIN_PRE_YEARS:
            rec["reason"] = (f"joined before the data: {len(before)} year(s) of results before joining "
                             f"({MIN_PRE_YEARS} needed)")
        elif not after:
            rec["reason"] = f"no results since joining yet (the first would be {s.g})"
        else:
            own = sy.loc[(sy["urn"] == s.urn) & sy["year"].isin(pre + after) & sy[o.name].notna(), "year"]
            missing = sorted(set(pre + after) - set(int(y) for y in own))
            if missing:
                closed = pd.to_datetime(s.closed) if pd.notna(s.closed) else None
                if closed is not None and int(first_exposed_year([closed])[0]) <= missing[-1]:
                    rec["reason"] = f"closed on {closed.date().isoformat()}: no results for {_years(missing)}"
                else:
                    rec["reason"] = f"no {o.name} results for {_years(missing)}"
            else:
                rec.update(status="supporting" if s.role == "supporting" else "analysed", pre=pre, post=after)
        rows.append(rec)
    return pd.DataFrame(rows)


def _years(years: list[int]) -> str:
    return ", ".join(str(y) for y in years)


def _busy_schools(data: StudyData, first: int, last: int) -> set[int]:
    """Schools that were in any partnership during academic years ``first``-``last``."""
    from evaluation.data.calendar import last_exposed_year

    m = data.memberships
    start = first_exposed_year(m["joined"])
    end = last_exposed_year(m["left"]) if "left" in m.columns else np.full(len(m), 10**6)
    overlap = (start <= last) & (end >= first)
    return set(m.loc[overlap, "urn"].astype(int))


# ---------------------------------------------------------------------------- one joining cohort


def _families(spec, data, treated_urns, phase, outcome, pre, window, exclude):
    """Each treated school's family of comparison schools (pairs urn -> comparison_urn), matched on the
    ``pre`` years; the pool: same phase, not ``exclude``d, results in every year of ``window``."""
    from evaluation.matching import family_of_schools

    sy = data.school_years
    inwin = sy[sy["year"].isin(window) & sy[outcome].notna()]
    complete = inwin.groupby("urn").size()
    complete = set(complete.index[complete == len(window)].astype(int))
    schools = data.schools
    pool = schools.loc[(schools["phase"] == phase) & ~schools["urn"].isin(exclude)
                       & schools["urn"].isin(complete), ["urn"]]
    frame = pd.concat([pd.DataFrame({"urn": treated_urns, "treated": 1}), pool.assign(treated=0)],
                      ignore_index=True)
    wide = sy[sy["urn"].isin(frame["urn"])].pivot(index="urn", columns="year", values=outcome)
    feats = pre_features(wide, list(pre))
    ctx = sy[sy["year"].isin(pre) & sy["urn"].isin(frame["urn"])].groupby("urn")[list(CONTEXT_COVARIATES)].mean()
    frame = frame.join(feats, on="urn").join(ctx, on="urn")
    ok = frame[list(COVARIATES)].notna().all(axis=1) & (frame["pre_n"] >= MIN_PRE_YEARS)
    lost = frame.loc[(frame["treated"] == 1) & ~ok, "urn"].astype(int).tolist()
    frame = frame[ok].reset_index(drop=True)
    if frame["treated"].sum() == 0 or (frame["treated"] == 0).sum() < 2:
        return pd.DataFrame(columns=["urn", "comparison_urn"]), lost
    res = family_of_schools(frame, "treated", list(COVARIATES), k=spec.family_size, id="urn")
    pairs = res.pairs().rename(columns={"treated_id": "urn", "control_id": "comparison_urn"})
    return pairs[["urn", "comparison_urn"]].astype("int64"), lost


def _panel(data, outcome, urns, years) -> pd.DataFrame:
    sy = data.school_years
    rows = sy.loc[sy["urn"].isin(urns) & sy["year"].isin(years), ["urn", "year", outcome]]
    return rows.rename(columns={outcome: "y"}).astype({"urn": "int64", "year": "int64"})


def _fit(panel: pd.DataFrame, treated_urns, g: int, seed: int, reps: int, methods=METHODS) -> dict:
    """The three estimators on one cohort's balanced panel, each with its placebo draws."""
    from evaluation.estimators.synthetic import did_estimate, sc_estimate, synthdid_estimate

    fns = {"synthetic_did": synthdid_estimate, "synthetic_control": sc_estimate, "did": did_estimate}
    p = panel.assign(D=(panel["urn"].isin(treated_urns) & (panel["year"] >= g)).astype(int))
    out = {}
    for name in methods:
        res = fns[name](p, unit="urn", time="year", outcome="y", treated="D", se="placebo", replications=reps,
                        seed=seed)
        o = res.overall
        out[name] = {"estimate": o.estimate, "se": o.se, "ci_low": o.ci_low, "ci_high": o.ci_high,
                     "draws": np.asarray(res.details["replicate_estimates"], dtype=float),
                     "variance": res.variance.describe()}
        if name == "synthetic_did":
            out[name]["gaps"] = res.details["gaps"]
            out[name]["top_comparison_weights"] = res.details["omega"][:10]
    return out


def _combine(parts: list[tuple[float, float, np.ndarray]]) -> dict:
    """sum_c w_c * estimate_c with its placebo SE, normal 95% CI and placebo p-value (module docstring)."""
    est = float(sum(w * e for w, e, _ in parts))
    draws = sum(w * d for w, _, d in parts)
    reps = len(draws)
    se = float(np.sqrt((reps - 1) / reps) * np.std(draws, ddof=1))
    p = float((1 + np.sum(np.abs(draws) >= abs(est) * (1 - 1e-9))) / (reps + 1))
    return {"estimate": est, "se": se, "ci_low": est - Z975 * se, "ci_high": est + Z975 * se, "p_value": p,
            "replications": reps, "draws": draws}


def _public(block: dict) -> dict:
    return {k: v for k, v in block.items() if k != "draws"}


def _event_time(cohorts: list[dict]) -> list[dict]:
    """The synthetic-DiD effect by years since joining, averaged over cohorts by their schools."""
    rows = []
    for c in cohorts:
        for gap in c["estimates"]["synthetic_did"]["gaps"]:
            rows.append({"e": int(gap["time"]) - c["joined"], "effect": gap["effect"], "n": len(c["schools"])})
    if not rows:
        return []
    f = pd.DataFrame(rows)
    out = f.groupby("e").apply(lambda x: pd.Series({"effect": float(np.average(x["effect"], weights=x["n"])),
                                                     "schools": int(x["n"].sum())}), include_groups=False)
    return [{"years_since_joining": int(e), "effect": float(r.effect), "schools": int(r.schools)}
            for e, r in out.iterrows()]


# ---------------------------------------------------------------------------- the whole evaluation


def self_evaluate(spec: SelfEvaluationSpec, data: StudyData, history: list[dict] | tuple = ()) -> dict:
    """The whole self-evaluation, as a JSON-ready dict (the chapter reads it). ``history``: the
    previous run's history entries; this run's entry replaces one for the same latest data year."""

    roles = spec.schools["role"] if "role" in spec.schools.columns else pd.Series("member", index=spec.schools.index)
    schools = spec.schools.assign(role=roles.to_numpy())[["urn", "joined", "role"]].merge(
        data.schools[["urn", "name", "phase", "closed"]], on="urn", how="left")
    unknown = schools.loc[schools["phase"].isna(), "urn"].tolist()
    if unknown:
        raise InputError(problem(f"{len(unknown)} school(s) not in the store's schools table (e.g. URN {unknown[0]})",
                                 column="urn", value=unknown[0]))
    schools["phase"] = schools["phase"].astype(str)
    schools["g"] = first_exposed_year(schools["joined"])
    outcomes = _phase_outcomes(spec, data, set(schools["phase"]))
    status = _eligibility(spec, data, schools, outcomes).set_index("urn")
    first_year, last_year = data.years

    families_of: dict[int, list[int]] = {}
    cohorts, by_school, supporting = [], [], []
    members = set(schools["urn"].astype(int))
    analysed = schools[schools["urn"].map(status["status"]).eq("analysed")]
    for k, ((phase, g), grp) in enumerate(analysed.groupby(["phase", "g"], sort=True)):
        o = outcomes[phase]
        pre, post = status.at[grp["urn"].iloc[0], "pre"], status.at[grp["urn"].iloc[0], "post"]
        years = list(pre) + list(post)
        busy = _busy_schools(data, years[0], years[-1])
        fam, lost = _families(spec, data, grp["urn"].astype(int).tolist(), phase, o.name, pre, years,
                              members | busy)
        for urn in lost:
            status.loc[urn, ["status", "reason"]] = ["excluded", "not enough data before joining to find similar "
                                                                  "schools"]
        treated = sorted(set(fam["urn"]))
        if not treated:
            continue
        comparison = sorted(set(fam["comparison_urn"]))
        panel = _panel(data, o.name, treated + comparison, years)
        est = _fit(panel, treated, int(g), spec.seed + 1000 * k, spec.n_perm, methods=spec.methods)
        cohorts.append({"phase": phase, "joined": int(g), "schools": treated, "years": years,
                        "pre_years": list(pre), "post_years": list(post), "comparison_schools": len(comparison),
                        "estimates": est})
        for urn in treated:
            own = fam.loc[fam["urn"] == urn, "comparison_urn"].tolist()
            families_of[urn] = own
            if not spec.by_school:
                continue
            e = _fit(panel[panel["urn"].isin([urn, *own])], [urn], int(g), spec.seed + urn, BY_SCHOOL_REPLICATIONS,
                     methods=("synthetic_did",))["synthetic_did"]
            by_school.append({"urn": int(urn), "name": str(grp.set_index("urn").at[urn, "name"]), "phase": phase,
                              "joined": int(g), "family_size": len(own),
                              **{key: e[key] for key in ("estimate", "se", "ci_low", "ci_high")}})
    for s in schools[schools["urn"].map(status["status"]).eq("supporting")].itertuples() if spec.by_school else ():
        supporting.append(_supporting(spec, data, s, outcomes[s.phase], status.loc[s.urn], members))

    phases = _phases(cohorts, outcomes)
    headline, withheld = _headline(phases)
    targets = evaluate_targets(spec, data, schools, outcomes, families_of, spec.baseline_year)
    n_analysed = int(sum(len(c["schools"]) for c in cohorts))
    if not n_analysed:
        reasons = "; ".join(f"URN {u}: {r if isinstance(r, str) else 'the supporting school, reported on its own'}"
                            for u, r in status["reason"].items())
        raise InputError(problem(f"no school could be analysed ({reasons})", column="urn"))

    entry = {"data_last_year": last_year, "data_fingerprint": data_fingerprint(data),
             "package_version": __version__, "schools_analysed": n_analysed,
             **({k: headline[k] for k in ("scale", "estimate", "ci_low", "ci_high", "p_value")} if headline else
                {"scale": None, "estimate": None, "ci_low": None, "ci_high": None, "p_value": None}),
             "phases": {p["phase"]: {k: p["estimates"]["synthetic_did"][k] for k in ("estimate", "ci_low", "ci_high")}
                        for p in phases}}
    kept = [h for h in history if h.get("data_last_year") != last_year]
    history_out = sorted([*kept, entry], key=lambda h: h["data_last_year"])

    school_rows = []
    for s in schools.itertuples():
        st = status.loc[s.urn]
        school_rows.append({"urn": int(s.urn), "name": str(s.name), "phase": s.phase,
                            "joined_on": pd.Timestamp(s.joined).date().isoformat(), "first_exposed_year": int(s.g),
                            "role": s.role, "analysed": bool(st["status"] == "analysed"), "status": st["status"],
                            "reason": st["reason"] if isinstance(st["reason"], str) else None})
    all_years = sorted({y for c in cohorts for y in c["years"]})
    result = {
        "schema_version": RESULT_SCHEMA_VERSION, "kind": "self_evaluation", "name": spec.name,
        "title": spec.title or spec.name,
        "outcomes": {p: o.block() for p, o in outcomes.items()},
        "years": [all_years[0], all_years[-1]],
        "schools": school_rows,
        "notes": _notes(school_rows, outcomes, spec.family_size),
        "comparison": {"family_size": spec.family_size,
                       "schools": len({u for c in cohorts for u in _comparison_urns(c, families_of)}),
                       "covariates": list(COVARIATES),
                       "rule": "for each school, the most similar schools of its phase on the years before it "
                               "joined (results level and trend) and context, by z-score distance (EEF families "
                               "of schools), among schools in no partnership during the years compared and with "
                               "results in each of them"},
        "cohorts": [{**{k: v for k, v in c.items() if k != "estimates"},
                     "estimates": {m: _public(v) for m, v in c["estimates"].items()}} for c in cohorts],
        "phases": [{**p, "estimates": {m: _public(v) for m, v in p["estimates"].items()}} for p in phases],
        "headline": None if headline is None else _public(headline),
        "headline_withheld": withheld,
        "by_school": by_school,
        "supporting": supporting,
        "targets": targets,
        "history": history_out,
        "method": {"estimator": "synthetic difference-in-differences per joining cohort (Arkhangelsky et al. 2021), "
                                "averaged over cohorts by their numbers of schools",
                   "inference": f"placebo: {spec.n_perm} replications per cohort, comparison schools posing as the "
                                "cohort, combined replicate by replicate with the same weights; SE = sqrt((R-1)/R) "
                                "x SD of the combined draws; 95% CI = estimate +- 1.96 SE; p = (1 + #{|draw| >= "
                                "|estimate|}) / (R + 1)",
                   "mdes_rule": f"{MDES_MULTIPLIER:.2f} x the placebo SE"},
        "provenance": {"package_version": __version__, "seed": spec.seed,
                       "synthetic": data.truth is not None, "data_fingerprint": data_fingerprint(data),
                       **_reproduce(spec, data)},
        "window": {"pre_years": spec.pre_years, "post_years": spec.post_years, "data_years": [first_year, last_year],
                   "why": _window_words(spec, cohorts, outcomes, last_year)},
    }
    SelfEvaluationResult.model_validate(result)  # the contract holds as the result is built
    return result


def _comparison_urns(cohort: dict, families_of: dict) -> set[int]:
    return {u for s in cohort["schools"] for u in families_of.get(s, [])}


def _supporting(spec, data, s, o: PhaseOutcome, st, members) -> dict:
    """The supporting school against its own family, from the date it began supporting."""
    pre, post = list(st["pre"]), list(st["post"])
    years = pre + post
    busy = _busy_schools(data, years[0], years[-1])
    fam, lost = _families(spec, data, [int(s.urn)], s.phase, o.name, pre, years, members | busy)
    base = {"urn": int(s.urn), "name": str(s.name), "phase": s.phase, "joined": int(s.g), "outcome": o.name}
    if fam.empty:
        return {**base, "estimate": None, "reason": "not enough data before it began supporting to find similar "
                                                     "schools"}
    own = fam["comparison_urn"].tolist()
    panel = _panel(data, o.name, [int(s.urn), *own], years)
    e = _fit(panel, [int(s.urn)], int(s.g), spec.seed + int(s.urn), BY_SCHOOL_REPLICATIONS,
             methods=("synthetic_did",))["synthetic_did"]
    gaps = e["gaps"]
    before = float(np.mean([x["treated"] for x in gaps if not x["post"]]))
    after = float(np.mean([x["treated"] for x in gaps if x["post"]]))
    return {**base, "family_size": len(own), "years": years, "before": before, "after": after,
            **{k: e[k] for k in ("estimate", "se", "ci_low", "ci_high")}, "reason": None}


def _phases(cohorts: list[dict], outcomes: dict[str, PhaseOutcome]) -> list[dict]:
    out = []
    for phase in sorted({c["phase"] for c in cohorts}):
        cs = [c for c in cohorts if c["phase"] == phase]
        n = sum(len(c["schools"]) for c in cs)
        est = {m: _combine([(len(c["schools"]) / n, c["estimates"][m]["estimate"], c["estimates"][m]["draws"])
                            for c in cs]) for m in cs[0]["estimates"]}
        o = outcomes[phase]
        sdid = est["synthetic_did"]
        g = None if o.pupil_sd is None else {
            "g": sdid["estimate"] / o.pupil_sd, "ci_low": sdid["ci_low"] / o.pupil_sd,
            "ci_high": sdid["ci_high"] / o.pupil_sd, "months": months_progress(sdid["estimate"] / o.pupil_sd),
            "mdes": MDES_MULTIPLIER * sdid["se"] / o.pupil_sd}
        out.append({"phase": phase, "outcome": o.name, "pupil_sd": o.pupil_sd, "schools": n, "cohorts": [c["joined"] for c in cs],
                    "weights": {str(c["joined"]): len(c["schools"]) / n for c in cs},
                    "estimates": est, "effect_size": g, "mdes_units": MDES_MULTIPLIER * sdid["se"],
                    "event_time": _event_time(cs)})
    return out


def _headline(phases: list[dict]) -> tuple[dict | None, str | None]:
    """The partnership's answer: one phase in its units (and g when known), or the phases combined in
    effect-size units when every phase has a pupil-level SD; else None and why."""
    if not phases:
        return None, "no school could be analysed"
    if len(phases) == 1:
        p = phases[0]
        e = p["estimates"]["synthetic_did"]
        es = p["effect_size"] or {}
        return {"scale": "units", "phase": p["phase"], "outcome": p["outcome"], "schools": p["schools"],
                **{k: e[k] for k in ("estimate", "se", "ci_low", "ci_high", "p_value", "replications", "draws")},
                "g": es.get("g"), "g_ci": [es["ci_low"], es["ci_high"]] if es else None, "months": es.get("months"),
                "mdes": es.get("mdes"), "mdes_months": None if not es else months_progress(es["mdes"]),
                "mdes_units": p["mdes_units"]}, None
    unknown = [p["outcome"] for p in phases if p["effect_size"] is None]
    if unknown:
        return None, (f"the phases' results are in different units and no pupil-level SD is known for "
                      f"{', '.join(unknown)}, so they cannot be put on one scale: each phase is shown on its own")
    n = sum(p["schools"] for p in phases)
    parts = []
    for p in phases:
        e = p["estimates"]["synthetic_did"]
        parts.append((p["schools"] / n, e["estimate"] / p["pupil_sd"], e["draws"] / p["pupil_sd"]))
    c = _combine(parts)
    return {"scale": "effect size", "phase": None, "outcome": None, "schools": n, **c, "g": c["estimate"],
            "g_ci": [c["ci_low"], c["ci_high"]], "months": months_progress(c["estimate"]),
            "mdes": MDES_MULTIPLIER * c["se"], "mdes_months": months_progress(MDES_MULTIPLIER * c["se"]),
            "mdes_units": None}, None


SMALL_FAMILY_NOTE = ("Families of fewer than 50 similar schools: in the project's simulation (benchmarks/"
                     "self_evaluation_coverage.md), primary schools' 95% intervals with families of 20 covered the "
                     "truth 91% of the time rather than 95%, so read the intervals as somewhat too narrow.")


def _notes(school_rows: list[dict], outcomes, family_size: int = 50) -> list[str]:
    out = [SMALL_FAMILY_NOTE] if family_size < 50 else []
    for s in school_rows:
        if s["status"] == "excluded":
            out.append(f"{s['name']} (URN {s['urn']}) is not analysed: {s['reason']}.")
        elif s["status"] == "supporting":
            out.append(f"{s['name']} (URN {s['urn']}) is the supporting school: it is reported on its own, not in "
                       "the partnership's average.")
    return out


def _window_words(spec, cohorts, outcomes, last_year) -> str:
    if not cohorts:
        return ""
    ends = sorted({c["years"][-1] for c in cohorts})
    gaps = sorted({y for o in outcomes.values() for y in range(o.years[0], o.years[-1] + 1) if y not in o.years})
    text = (f"Each school is compared over up to {spec.pre_years} years of results before it joined and up to "
            f"{spec.post_years} years after its first results after joining; the latest results in the data are "
            f"for {last_year}")
    if ends[-1] < last_year:
        text += (f", and no school's window reaches them because every school's {spec.post_years} years after "
                 f"joining ended by {ends[-1]}")
    if gaps:
        text += f". No results were published for {_years(gaps)}, so those years are skipped"
    return text + "."


def _reproduce(spec: SelfEvaluationSpec, data: StudyData) -> dict:
    """The command that reproduces this result: the partnership file when there is one, else
    ``--partnership ID`` or ``--schools FILE`` with every option that differs from its default."""
    if spec.source_file:
        return {"command": f"impact self-evaluate {spec.source_file}", "partnership_id": spec.partnership_id,
                "schools_file": None}
    rows = spec.schools[["urn", "joined"]].copy()
    rows["joined"] = pd.to_datetime(rows["joined"]).dt.strftime("%Y-%m-%d")
    if "role" in spec.schools.columns:
        rows["role"] = spec.schools["role"].to_numpy()
    rows = rows.sort_values(["urn", "joined"]).reset_index(drop=True)
    pid = spec.partnership_id
    who = f"--partnership {pid}" if pid else f"--schools {spec.name}_schools.csv"
    defaults = SelfEvaluationSpec(name=spec.name, schools=spec.schools)
    parts = ["impact self-evaluate", who, f"--name {spec.name}"]
    if spec.outcome:
        parts.append(f"--outcome {spec.outcome}")
    for flag, attr in (("--family-size", "family_size"), ("--permutations", "n_perm"), ("--pre-years", "pre_years"),
                       ("--post-years", "post_years")):
        if getattr(spec, attr) != getattr(defaults, attr):
            parts.append(f"{flag} {getattr(spec, attr)}")
    parts.append(f"--seed {spec.seed}")
    return {"command": " ".join(parts), "partnership_id": pid,
            "schools_file": None if pid else rows.to_dict("records")}
