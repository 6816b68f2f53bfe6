"""A synthetic national school panel with a known truth.

About 20,000 schools in England's 9 regions and 152 local authorities, academic
years 2010-2024, with context, KS2/KS4 outcomes and partnerships of every type.
It is honest about what makes real evaluation hard:

* selection: weaker schools, and schools in a recent dip, are more likely to be
  taken on by sponsor-led trusts (an Ashenfelter dip: their outcomes would have
  recovered anyway); stronger schools convert into converter trusts; small rural
  primaries federate; outstanding schools lead teaching school alliances. So, for
  sponsor-led trusts, a naive post-only comparison with never-joined schools is
  biased downwards (here it reverses the sign), and a before-after comparison is
  biased upwards (mean reversion after the dip); tests/test_synthetic.py checks both;
* effects differ by partnership type and grow with years of membership, so a
  naive two-way fixed-effects regression is biased under staggered joining;
* effects of multi-academy trusts differ by the trust's size on the school's joining date and
  by the distance to the school's nearest partner school then (``SIZE_FACTORS``,
  ``DISTANCE_FACTORS``; the definitions of ``evaluation.data.partnership_attributes``, which
  the heterogeneity stage uses too), so a study's subgroups can be checked against the truth;
* schools open, close, leave or move trust (re-brokering: a sponsored academy that has been
  in its trust 4+ years moves to another sponsor-led trust, weaker schools more often); the
  new trust's effect replaces the old one's, and ``truth_moves`` holds the effect of moving
  against staying (the old trust's effect continued); alliances close (2021);
* small cohorts are noisy and their results suppressed (SUPP), some progress
  scores have low coverage (LOWCOV), some values are not published (NP/x).

Model. A school's latent quality in year t is
    q0_it = alpha_i + beta_i (t - 2017) + u_it,   u_it = rho u_i,t-1 + e_it  (AR(1))
in units of the between-school SD of alpha. Membership m adds tau_m(e) with e the
years since first exposure (``calendar.first_exposed_year``), times the membership's
size and distance factors for multi-academy trusts; effects add across concurrent
memberships and end when the membership ends. Each outcome is y = clip(mu_t + lambda * q + noise), the
noise shrinking with the cohort size n as the within-school pupil SD / sqrt(n)
(``Outcome.within_sd``). The truth
tables hold, per school-year and membership, the realised effect on every outcome,
y(q0 + tau) - y(q0) with the same noise, before rounding for publication.

Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``, in a
fixed order, so the same seed gives byte-identical tables. A pupil panel consistent with
these tables (school means equal to the published values, planted effects split between
disadvantaged and other pupils) is drawn by ``evaluation.data.synthetic_pupils``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evaluation.data.calendar import first_exposed_year, last_exposed_year
from evaluation.data.partnership_attributes import DISTANCE_BINS_KM, TRUST_SIZE_BINS, bin_index, partner_context

FIRST_YEAR, LAST_YEAR = 2010, 2024
YEARS = np.arange(FIRST_YEAR, LAST_YEAR + 1)
DEFAULT_SCHOOLS = 20_000
RHO = 0.5  # AR(1) coefficient of transitory quality shocks
SD_U = 0.35  # stationary SD of the transitory shock (alpha has SD 1)

# name, share of schools, number of LAs, LA code base, centroid (E, N), spread of LA centroids (m),
# share rural, quality shift, FSM %, EAL %
REGIONS = [
    ("North East", 0.05, 12, 390, (425_000, 560_000), 25_000, 0.25, -0.10, 22.0, 7.0),
    ("North West", 0.13, 23, 340, (360_000, 430_000), 35_000, 0.20, -0.05, 20.0, 14.0),
    ("Yorkshire and the Humber", 0.10, 15, 370, (440_000, 450_000), 35_000, 0.25, -0.10, 19.0, 16.0),
    ("East Midlands", 0.09, 9, 830, (470_000, 330_000), 35_000, 0.30, -0.10, 16.0, 14.0),
    ("West Midlands", 0.11, 14, 860, (390_000, 290_000), 35_000, 0.25, -0.05, 20.0, 20.0),
    ("East of England", 0.12, 11, 880, (570_000, 260_000), 40_000, 0.35, 0.00, 14.0, 13.0),
    ("London", 0.12, 33, 201, (530_000, 180_000), 10_000, 0.00, 0.30, 24.0, 45.0),
    ("South East", 0.16, 19, 930, (490_000, 140_000), 45_000, 0.30, 0.05, 12.0, 12.0),
    ("South West", 0.12, 16, 800, (300_000, 110_000), 50_000, 0.40, 0.00, 12.0, 6.0),
]

# Partnership types: full effect on latent quality (SD units), years to reach it.
EFFECTS = {
    ("multi_academy_trust", "sponsor"): (0.25, 4),
    ("multi_academy_trust", "converter"): (0.04, 3),
    ("multi_academy_trust", "rebrokered"): (0.40, 2),  # the trust a sponsored academy moved to
    ("federation_hard", ""): (0.12, 3),
    ("federation_soft", ""): (0.04, 3),
    ("teaching_school_alliance", "member"): (0.05, 2),
    ("teaching_school_alliance", "lead"): (0.0, 2),
    ("umbrella_trust", ""): (0.02, 2),
    ("collaborative_partnership", ""): (0.03, 2),
    ("informal_cluster", ""): (0.0, 2),
}


# Planted heterogeneity (issue 14): a sponsored or converter trust membership's effect is
# multiplied by the factor of the trust's size on the joining date and the factor of the
# distance to the nearest partner school then (bins of evaluation.data.partnership_attributes:
# sizes 1-5, 6-15, 16+ schools; distances < 5, 5-20, 20+ km; no partner: factor 1).
SIZE_FACTORS = (0.5, 1.0, 1.8)
DISTANCE_FACTORS = (1.5, 1.0, 0.5)
HETEROGENEOUS_KINDS = (("multi_academy_trust", "sponsor"), ("multi_academy_trust", "converter"))
REBROKER_RATE = 0.03  # yearly share of sponsored academies 4+ years in their trust that move
REBROKER_MIN_YEARS = 4


def true_effect(kind: tuple[str, str], event_time: np.ndarray, effects: dict | None = None) -> np.ndarray:
    """Planted effect on latent quality e years after first exposure (0 before)."""
    full, ramp = (effects or EFFECTS)[kind]
    e = np.asarray(event_time, dtype=float)
    return np.where(e >= 0, full * np.minimum(e + 1, ramp) / ramp, 0.0)


@dataclass(frozen=True)
class Outcome:
    """How an outcome is made from latent quality: mean by year, loading, pupil-level SD."""

    name: str
    phase: str
    loading: float
    pupil_sd: float
    means: dict
    decimals: int
    lo: float
    hi: float
    percent: bool = False

    @property
    def within_sd(self) -> float:
        """The pupil-level SD within a school-year: the total pupil SD ``pupil_sd`` less the
        between-school part, ``sqrt(pupil_sd^2 - loading^2 (1 + SD_U^2))`` (latent quality has
        variance 1 + SD_U^2 across school-years). A school's result is the mean of its cohort, so
        its sampling noise is ``within_sd / sqrt(cohort)`` (non-percentage outcomes); the pupil
        panel (``evaluation.data.synthetic_pupils``) draws pupils with this within-school SD."""
        return float(np.sqrt(self.pupil_sd**2 - self.loading**2 * (1 + SD_U**2)))


def _means(values: list[float]) -> dict:
    return dict(zip(YEARS.tolist(), values))


# National means by year (stylised on published series; 2020 and 2021, when no tests were
# sat, are interpolated unless the COVID gap is switched on).
# Calibration (issue item 2): the loadings of Attainment 8, Progress 8 and KS2 reading and maths
# progress, and the 2019 Attainment 8 mean, are set so that the 2019 panel (seed 2024, 20,000
# schools) matches the 2018/19 KS4 and KS2 tables of state-funded mainstream schools: among
# secondaries with a published Progress 8, Attainment 8 mean 47.0 and between-school SD 9.2,
# Progress 8 SD 0.50; among primaries with published progress, reading and maths progress SD 2.4
# (tests/test_synthetic_pupils.py::test_2019_panel_matches_the_published_figures).
OUTCOMES = [
    Outcome("ks2_rwm_expected_pct", "primary", 12.0, 48.0,
            _means([54, 55, 56, 57, 58, 59, 53, 61, 64, 65, 63, 61, 59, 59, 61]), 0, 0, 100, True),
    Outcome("ks2_rwm_high_pct", "primary", 4.5, 28.0,
            _means([7, 7, 8, 8, 9, 9, 5, 9, 10, 11, 10, 9, 7, 8, 8]), 0, 0, 100, True),
    Outcome("ks2_reading_progress", "primary", 2.07, 6.0, _means([0.0] * 15), 2, -30, 30),
    Outcome("ks2_writing_progress", "primary", 1.5, 6.0, _means([0.0] * 15), 2, -30, 30),
    Outcome("ks2_maths_progress", "primary", 2.10, 5.5, _means([0.0] * 15), 2, -30, 30),
    Outcome("ks2_reading_score", "primary", 2.2, 7.5,
            _means([103, 103, 103, 103, 103, 103, 103, 104, 105, 104, 104, 105, 105, 105, 105]), 1, 80, 120),
    Outcome("ks2_maths_score", "primary", 2.4, 7.0,
            _means([102, 102, 103, 103, 103, 103, 103, 104, 104, 105, 105, 104, 104, 104, 104]), 1, 80, 120),
    Outcome("ks4_attainment8", "secondary", 8.66, 19.0,
            _means([47, 47, 48, 48, 48, 48, 50, 46, 46, 46.5, 50, 51, 49, 46, 46]), 1, 0, 90),
    Outcome("ks4_progress8", "secondary", 0.47, 1.25, _means([0.0] * 15), 2, -10, 10),
    Outcome("ks4_basics_94_pct", "secondary", 11.0, 48.0,
            _means([60, 61, 62, 62, 63, 63, 63, 64, 64, 65, 71, 72, 69, 65, 65]), 0, 0, 100, True),
    Outcome("ks4_basics_95_pct", "secondary", 12.0, 50.0,
            _means([40, 41, 41, 42, 42, 42, 42, 43, 43, 43, 50, 52, 50, 45, 46]), 0, 0, 100, True),
    Outcome("ks4_ebacc_aps", "secondary", 0.65, 1.8,
            _means([3.6, 3.6, 3.7, 3.7, 3.7, 3.8, 3.8, 3.8, 3.9, 4.1, 4.4, 4.5, 4.3, 4.1, 4.1]), 2, 0, 9),
]
OUTCOME_NAMES = [o.name for o in OUTCOMES]
TYPE_OF = {"multi_academy_trust": True, "federation_hard": True, "federation_soft": False,
           "teaching_school_alliance": False, "umbrella_trust": True, "collaborative_partnership": False,
           "informal_cluster": False}  # formal?

_NAME_A = ["Ash", "Beech", "Brook", "Castle", "Cedar", "Church", "Clay", "Elm", "Fair", "Fern", "Field", "Glen",
           "Green", "Hart", "Hazel", "High", "Hill", "Holly", "Kings", "Lark", "Lea", "Lime", "Long", "Mill",
           "Moor", "New", "North", "Oak", "Orchard", "Park", "Queens", "Red", "River", "Rose", "South", "Stone",
           "Sun", "West", "Willow", "Wood"]
_NAME_B = ["bank", "bridge", "brook", "bury", "croft", "dale", "den", "field", "ford", "gate", "grove", "ham",
           "hurst", "lands", "leigh", "mead", "mount", "side", "stead", "ton", "vale", "view", "well", "wood"]


@dataclass
class SyntheticPanel:
    """The generated tables (text with DfE markers, as a download would have them) and the truth."""

    schools: pd.DataFrame
    partnerships: pd.DataFrame
    memberships: pd.DataFrame
    school_years: pd.DataFrame
    truth_effects: pd.DataFrame
    truth_cohorts: pd.DataFrame
    truth_moves: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"schools": self.schools, "partnerships": self.partnerships, "memberships": self.memberships,
                "school_years": self.school_years, "truth_effects": self.truth_effects,
                "truth_cohorts": self.truth_cohorts, "truth_moves": self.truth_moves}


def _gumbel_top_k(rng: np.random.Generator, log_w: np.ndarray, k: int) -> np.ndarray:
    """Indices of k draws without replacement with probabilities proportional to exp(log_w)."""
    if k <= 0 or len(log_w) == 0:
        return np.array([], dtype=np.int64)
    keys = log_w + rng.gumbel(size=len(log_w))
    k = min(k, len(log_w))
    return np.sort(np.argpartition(-keys, k - 1)[:k])


class _Builder:
    """Holds the schools' state while partnerships form year by year."""

    def __init__(self, seed: int, n_schools: int, covid_gap: bool, effects: dict | None = None):
        self.effect_sizes = dict(EFFECTS if effects is None else effects)
        self.rng = np.random.default_rng(seed)
        self.n = n_schools
        self.scale = n_schools / DEFAULT_SCHOOLS
        self.covid_gap = covid_gap
        self.partnerships: list[dict] = []
        self.memberships: list[dict] = []

    # ------------------------------------------------------------------ schools
    def make_schools(self) -> None:
        rng, n = self.rng, self.n
        shares = np.array([r[1] for r in REGIONS])
        region = rng.choice(len(REGIONS), size=n, p=shares / shares.sum())
        la_region, la_code, la_centre, la_rural = [], [], [], []
        for r, (_, _, n_la, base, (ce, cn), spread, rural, *_rest) in enumerate(REGIONS):
            for j in range(n_la):
                la_region.append(r)
                la_code.append(base + j)
                la_centre.append((ce + rng.normal(0, spread), cn + rng.normal(0, spread)))
                la_rural.append(np.clip(rural + rng.normal(0, 0.1), 0, 0.8) if rural > 0 else 0.0)
        la_region = np.array(la_region)
        la_centre = np.array(la_centre)
        la = np.empty(n, dtype=np.int64)
        for r in range(len(REGIONS)):
            idx = np.flatnonzero(region == r)
            las = np.flatnonzero(la_region == r)
            weights = rng.dirichlet(np.full(len(las), 4.0))
            la[idx] = rng.choice(las, size=len(idx), p=weights)
        self.region, self.la = region, la
        self.la_code = np.array(la_code)[la]
        self.la_names = {code: f"{REGIONS[la_region[i]][0]} LA {code}" for i, code in enumerate(la_code)}
        spread = np.where(region == 6, 3_000.0, 9_000.0)
        self.easting = np.clip(la_centre[la, 0] + rng.normal(0, spread), 90_000, 655_000).round()
        self.northing = np.clip(la_centre[la, 1] + rng.normal(0, spread), 10_000, 650_000).round()
        self.rural = rng.random(n) < np.array(la_rural)[la]
        self.secondary = rng.random(n) < 0.16
        base_size = np.where(self.secondary, 950.0, np.where(self.rural, 110.0, 300.0))
        self.size = np.round(base_size * np.exp(rng.normal(0, 0.4, n))).clip(12, 2400)
        reg = np.array([REGIONS[r][7:] for r in region])  # quality shift, fsm, eal
        self.fsm0 = np.clip(reg[:, 1] * np.exp(rng.normal(0, 0.55, n)), 1, 75)
        self.eal0 = np.clip(reg[:, 2] * np.exp(rng.normal(0, 0.8, n)), 0, 95)
        self.sen0 = np.clip(rng.normal(13, 3.5, n), 2, 40)
        z_fsm = (np.log(self.fsm0) - np.log(self.fsm0).mean()) / np.log(self.fsm0).std()
        self.alpha = reg[:, 0] - 0.45 * z_fsm + np.sqrt(1 - 0.45**2) * rng.normal(0, 1, n)
        self.alpha = (self.alpha - self.alpha.mean()) / self.alpha.std()
        self.slope = rng.normal(0, 0.02, n)
        # Opening and closing: ~3% open during the panel, ~4% close
        self.first_year = np.full(n, FIRST_YEAR)
        opens = rng.random(n) < 0.03
        self.first_year[opens] = rng.integers(2012, 2021, opens.sum())
        self.last_year = np.full(n, LAST_YEAR)
        close_w = np.exp(-0.8 * self.alpha - 0.6 * np.log(self.size / 200.0))
        closers = _gumbel_top_k(rng, np.log(close_w), int(0.04 * n))
        closers = closers[self.first_year[closers] < 2016]
        # close at least two years after opening, between 2012 and 2023
        self.last_year[closers] = rng.integers(np.maximum(2012, self.first_year[closers] + 2), 2024)
        self.free_school = opens
        self.urn = np.sort(rng.choice(900_000, size=n, replace=False)) + 100_000
        # Transitory AR(1) shocks from 2008 (two burn-in years for dips before 2010)
        n_t = LAST_YEAR - 2008 + 1
        u = np.empty((n, n_t))
        u[:, 0] = rng.normal(0, SD_U, n)
        eps_sd = SD_U * np.sqrt(1 - RHO**2)
        for t in range(1, n_t):
            u[:, t] = RHO * u[:, t - 1] + rng.normal(0, eps_sd, n)
        self.u = u  # column t corresponds to year 2008 + t
        self.q0 = self.alpha[:, None] + self.slope[:, None] * (np.arange(2008, LAST_YEAR + 1) - 2017) + u
        self.grade = self._ofsted()
        self.in_mat = np.full(n, -1)
        self.in_group = {k: np.zeros(n, dtype=bool) for k in ("federation", "tsa", "umbrella", "collab", "cluster")}

    def _ofsted(self) -> np.ndarray:
        """Ofsted grade in force each year (index year - 2008): inspected every 3-5 years."""
        rng, n = self.rng, self.n
        n_t = self.q0.shape[1]
        grade = np.zeros((n, n_t), dtype=np.int64)
        cuts = np.array([-0.95, 0.55, 1.55])  # ~20% outstanding, ~60% good, ~15% RI, ~5% inadequate
        next_visit = rng.integers(0, 4, n)
        current = 4 - np.searchsorted(cuts, self.q0[:, 0] + rng.normal(0, 0.5, n))
        for t in range(n_t):
            visit = next_visit == t
            score = self.q0[visit, t] + rng.normal(0, 0.5, visit.sum())
            current[visit] = 4 - np.searchsorted(cuts, score)
            gap = np.where(current[visit] >= 3, 2, rng.integers(3, 6, visit.sum()))
            next_visit[visit] = t + gap
            grade[:, t] = current
        return np.clip(grade, 1, 4)

    def open_in(self, year: int) -> np.ndarray:
        return (self.first_year <= year) & (self.last_year >= year)

    # ------------------------------------------------------------------ partnerships
    def _new_partnership(self, ptype: str, name: str, opened: pd.Timestamp, sponsor: bool | None) -> int:
        pid = len(self.partnerships)
        self.partnerships.append({"pid": pid, "type": ptype, "name": name, "opened": opened, "closed": pd.NaT,
                                  "sponsor_led": sponsor})
        return pid

    def _join(self, school: int, pid: int, joined: pd.Timestamp, role: str, kind: tuple[str, str]) -> None:
        self.memberships.append({"school": school, "pid": pid, "joined": joined, "left": pd.NaT, "role": role,
                                 "kind": kind, "moved_from": -1})

    def _join_date(self, year: int) -> pd.Timestamp:
        """A join date whose first exposed academic year is ``year``."""
        month = self.rng.choice([9, 11, 1, 4], p=[0.6, 0.1, 0.15, 0.15])
        cal_year = year - 1 if month in (9, 11, 4) else year
        return pd.Timestamp(cal_year, month, 1)

    def form_trusts(self) -> None:
        rng = self.rng
        for year in range(2011, LAST_YEAR + 1):
            t = year - 2008
            open_now = self.open_in(year) & (self.first_year < year)
            for phase_secondary in (True, False):
                eligible = np.flatnonzero(open_now & (self.in_mat < 0) & (self.secondary == phase_secondary))
                # sponsor-led: weak schools and schools in a recent dip
                dip = (self.u[eligible, t - 1] + self.u[eligible, t - 2]) / 2
                log_w = (-1.0 * self.alpha[eligible] - 4.0 * dip + 1.2 * (self.grade[eligible, t - 1] == 4)
                         + 0.5 * (self.grade[eligible, t - 1] == 3))
                rate = _sponsor_rate(year, phase_secondary)
                chosen = eligible[_gumbel_top_k(rng, log_w, rng.binomial(len(eligible), rate))]
                self._assign_trusts(chosen, year, sponsor=True)
                eligible = np.setdiff1d(eligible, chosen)
                # converters: permanent quality and the baseline (2010) judgement, not current shocks
                log_w = 0.8 * self.alpha[eligible] + 0.8 * (self.grade[eligible, 2] <= 2)
                rate = _converter_rate(year, phase_secondary)
                chosen = eligible[_gumbel_top_k(rng, log_w, rng.binomial(len(eligible), rate))]
                self._assign_trusts(chosen, year, sponsor=False)
            # free schools opening this year: half open inside a trust (treated from their first year)
            new = np.flatnonzero(self.free_school & (self.first_year == year) & (self.in_mat < 0))
            new = new[rng.random(len(new)) < 0.5]
            self._assign_trusts(new, year, sponsor=False, at_opening=True)
            self._rebroker(year)

    def _assign_trusts(self, schools: np.ndarray, year: int, sponsor: bool, at_opening: bool = False,
                       avoid: int = -1) -> None:
        rng = self.rng
        key = "sponsor" if sponsor else "converter"
        pool = getattr(self, f"_{key}_pool", None)
        if pool is None:
            pool = {}
            setattr(self, f"_{key}_pool", pool)
        for s in schools:
            area = self.region[s] if sponsor else self.la[s]
            trusts = [tr for tr in pool.setdefault(area, []) if tr[0] != avoid]
            p_new = 0.2 if sponsor else 0.25
            joined = (pd.Timestamp(year - 1, 9, 1) if at_opening else self._join_date(year))
            if not trusts or rng.random() < p_new:
                word = rng.choice(_NAME_A)
                pid = self._new_partnership("multi_academy_trust",
                                            f"{word} {'Academies' if sponsor else 'Learning'} Trust {len(self.partnerships) + 1}",
                                            joined - pd.Timedelta(days=int(rng.integers(30, 200))), sponsor)
                pool[area].append([pid, 0])
                trusts = pool[area]
                role = "lead"
            else:
                sizes = np.array([tr[1] + 1.0 for tr in trusts])
                pick = rng.choice(len(trusts), p=sizes / sizes.sum())
                pid = trusts[pick][0]
                role = "member"
            for tr in trusts:
                if tr[0] == pid:
                    tr[1] += 1
            self._join(int(s), pid, joined, role, ("multi_academy_trust", key))
            self.in_mat[s] = len(self.memberships) - 1

    def _rebroker(self, year: int) -> None:
        """Sponsored academies 4+ years in their trust move to another sponsor-led trust
        (``REBROKER_RATE`` a year, weaker schools more often: selection on the permanent level,
        which a difference-in-differences removes): the old membership ends on 31 August, the
        new one starts the next day with the kind ``rebrokered``."""
        rng = self.rng
        open_now = self.open_in(year)
        members = np.flatnonzero((self.in_mat >= 0) & open_now)
        sponsored = np.array([self.memberships[self.in_mat[s]]["kind"][1] in ("sponsor", "rebrokered")
                              for s in members], dtype=bool)
        cand = members[sponsored]
        joined = pd.DatetimeIndex([self.memberships[self.in_mat[s]]["joined"] for s in cand])
        cand = cand[year - np.asarray(first_exposed_year(joined), dtype=np.int64) >= REBROKER_MIN_YEARS]
        chosen = cand[_gumbel_top_k(rng, -0.5 * self.alpha[cand], rng.binomial(len(cand), REBROKER_RATE))]
        for s in chosen:
            old = int(self.in_mat[s])
            self.memberships[old]["left"] = pd.Timestamp(year - 1, 8, 31)
            self.in_mat[s] = -1
            self._assign_trusts(np.array([s]), year, sponsor=True, avoid=self.memberships[old]["pid"])
            new = self.memberships[-1]
            new["joined"] = pd.Timestamp(year - 1, 9, 1)
            new["kind"] = ("multi_academy_trust", "rebrokered")
            new["moved_from"] = old

    def form_groups(self) -> None:
        """Federations, alliances, umbrella trusts, collaborative partnerships, informal clusters."""
        rng = self.rng
        specs = [
            # type, group key, per-year count at full scale, years, size range, phase rule, selection
            ("federation_hard", "federation", 30, range(2011, 2024), (2, 3), "primary", "small_rural"),
            ("federation_soft", "federation", 14, range(2011, 2024), (2, 4), "same", "weak_mild"),
            ("umbrella_trust", "umbrella", 6, range(2013, 2021), (3, 8), "same", "none"),
            ("collaborative_partnership", "collab", 14, range(2012, 2023), (4, 9), "any", "none"),
            ("informal_cluster", "cluster", 25, range(2011, 2024), (3, 7), "any", "none"),
        ]
        for ptype, group, per_year, years, (lo, hi), phase_rule, selection in specs:
            for year in years:
                for _ in range(rng.poisson(per_year * self.scale)):
                    self._form_group(ptype, group, year, lo, hi, phase_rule, selection)
        self._form_alliances()

    def _candidates(self, year: int, group: str) -> np.ndarray:
        return self.open_in(year) & (self.first_year < year) & ~self.in_group[group]

    def _form_group(self, ptype, group, year, lo, hi, phase_rule, selection) -> None:
        rng = self.rng
        cand = self._candidates(year, group)
        if phase_rule == "primary":
            cand &= ~self.secondary
        idx = np.flatnonzero(cand)
        if len(idx) < hi:
            return
        if selection == "small_rural":
            log_w = -1.0 * np.log(self.size[idx] / 150.0) + 1.0 * self.rural[idx] - 0.5 * self.alpha[idx]
        elif selection == "weak_mild":
            log_w = -0.5 * self.alpha[idx]
        else:
            log_w = np.zeros(len(idx))
        seed = idx[_gumbel_top_k(rng, log_w, 1)[0]]
        same_la = idx[(self.la[idx] == self.la[seed]) & (idx != seed)]
        if phase_rule in ("primary", "same"):
            same_la = same_la[self.secondary[same_la] == self.secondary[seed]]
        k = int(rng.integers(lo, hi + 1)) - 1
        if len(same_la) < k:
            return
        dist = np.hypot(self.easting[same_la] - self.easting[seed], self.northing[same_la] - self.northing[seed])
        partners = same_la[np.argsort(dist, kind="stable")[:k]]
        joined = self._join_date(year)
        word = rng.choice(_NAME_A)
        label = {"federation_hard": "Federation", "federation_soft": "Partnership of Schools",
                 "umbrella_trust": "Umbrella Trust", "collaborative_partnership": "Collaborative",
                 "informal_cluster": "Cluster"}[ptype]
        pid = self._new_partnership(ptype, f"{word} {label} {len(self.partnerships) + 1}", joined, None)
        dissolve = rng.random() < 0.1
        lefts = []
        for j, s in enumerate([seed, *partners]):
            self._join(int(s), pid, joined, "lead" if j == 0 else "member", (ptype, ""))
            self.in_group[group][s] = True
            if dissolve:
                self.memberships[-1]["left"] = pd.Timestamp(year + int(rng.integers(2, 6)), 8, 31)
                lefts.append(self.memberships[-1]["left"])
        if dissolve:  # the group closes when its last member leaves
            self.partnerships[pid]["closed"] = max(lefts)

    def _form_alliances(self) -> None:
        """Teaching school alliances: an outstanding lead and nearby members; all closed August 2021."""
        rng = self.rng
        closed = pd.Timestamp(2021, 8, 31)
        for year in range(2012, 2017):
            t = year - 2008
            cand = np.flatnonzero(self._candidates(year, "tsa"))
            log_w = 2.0 * self.alpha[cand] + 2.5 * (self.grade[cand, t - 1] == 1)
            n_new = rng.poisson(120 * self.scale)
            for lead in cand[_gumbel_top_k(rng, log_w, n_new)]:
                if self.in_group["tsa"][lead]:
                    continue
                pool = np.flatnonzero(self._candidates(year, "tsa") & (self.la == self.la[lead]))
                pool = pool[pool != lead]
                k = int(rng.integers(4, 11))
                if len(pool) < k:
                    continue
                dist = np.hypot(self.easting[pool] - self.easting[lead], self.northing[pool] - self.northing[lead])
                members = pool[np.argsort(dist, kind="stable")[:k]]
                joined = pd.Timestamp(year - 1, 9, 1)
                pid = self._new_partnership("teaching_school_alliance",
                                            f"{rng.choice(_NAME_A)} Teaching School Alliance {len(self.partnerships) + 1}",
                                            joined, None)
                self.partnerships[pid]["closed"] = closed
                self._join(int(lead), pid, joined, "lead", ("teaching_school_alliance", "lead"))
                self.memberships[-1]["left"] = closed
                self.in_group["tsa"][lead] = True
                for s in members:
                    later = int(rng.choice([0, 0, 1, 2]))
                    self._join(int(s), pid, self._join_date(year + later), "member",
                               ("teaching_school_alliance", "member"))
                    self.memberships[-1]["left"] = closed
                    self.in_group["tsa"][s] = True

    # ------------------------------------------------------------------ tables
    def finish_memberships(self) -> pd.DataFrame:
        m = pd.DataFrame(self.memberships)
        m["mid"] = np.arange(len(m))  # the builder's index, which ``moved_from`` refers to
        school = m["school"].to_numpy()
        # a school that closes leaves at closure
        close_date = pd.to_datetime([f"{y}-08-31" for y in self.last_year[school]])
        closes = self.last_year[school] < LAST_YEAR
        left = m["left"].where(~(closes & (m["left"].isna() | (m["left"] > close_date))), close_date)
        m["left"] = left
        m["first_year"] = first_exposed_year(m["joined"])
        m["last_year"] = np.minimum(last_exposed_year(m["left"]), self.last_year[school])
        # drop memberships that would start after the school closed
        keep = m["joined"] <= pd.Series(close_date).where(closes, pd.Timestamp(2099, 1, 1)).to_numpy()
        return m[keep].reset_index(drop=True)

    def factors(self, m: pd.DataFrame) -> np.ndarray:
        """Each membership's effect multiplier: size factor x distance factor for the kinds in
        ``HETEROGENEOUS_KINDS`` (1 otherwise), from the published memberships and coordinates."""
        factor = np.ones(len(m))
        het = m["kind"].isin(HETEROGENEOUS_KINDS).to_numpy()
        if not het.any():
            return factor
        published = pd.DataFrame({"urn": self.urn[m["school"].to_numpy()], "partnership_id": m["pid"].to_numpy(),
                                  "joined": m["joined"].to_numpy(), "left": m["left"].to_numpy()})
        coords = pd.DataFrame({"easting": self.easting.astype(np.int64).astype(float),
                               "northing": self.northing.astype(np.int64).astype(float)}, index=self.urn)
        size, dist = partner_context(published, published[het], coords)
        sf = np.array([SIZE_FACTORS[bin_index(v, TRUST_SIZE_BINS)] for v in size])
        df = np.array([1.0 if (k := bin_index(v, DISTANCE_BINS_KM)) is None else DISTANCE_FACTORS[k] for v in dist])
        factor[het] = sf * df
        return factor

    def effects(self, m: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, pd.DataFrame]:
        """Latent effect per school-year (n x years), per membership-year rows, the latent effect
        had no school moved trust (n x years) and one row per school-year after a move."""
        n_y = len(YEARS)
        tau = np.zeros((self.n, n_y))
        years = YEARS[None, :]
        factor = self.factors(m)
        rows, eff_of = [], {}
        for kind, grp in m.groupby("kind", sort=True):
            first = grp["first_year"].to_numpy()[:, None]
            last = grp["last_year"].to_numpy()[:, None]
            e = years - first
            active = (e >= 0) & (years <= last)
            eff = np.where(active, factor[grp.index.to_numpy()][:, None] * true_effect(kind, e, self.effect_sizes), 0.0)
            np.add.at(tau, grp["school"].to_numpy(), eff)
            eff_of.update(zip(grp.index.to_numpy(), eff))
            r, c = np.nonzero(active)
            rows.append(pd.DataFrame({"membership": grp.index.to_numpy()[r], "year": YEARS[c],
                                      "event_time": e[r, c], "effect_latent": eff[r, c]}))
        tau_stay, moves = self._had_they_stayed(m, tau, factor, eff_of)
        return tau, pd.concat(rows, ignore_index=True), tau_stay, moves

    def _had_they_stayed(self, m, tau, factor, eff_of):
        """The counterfactual of re-brokerage: from a school's first move on, the effects of the
        trusts it moved to are replaced by its original trust's effect continued (as if it had
        stayed until the last year of its last trust membership)."""
        tau_stay = tau.copy()
        row_of = dict(zip(m["mid"].to_numpy(), m.index.to_numpy()))
        moves = []
        moved = m[m["moved_from"] >= 0]
        firsts = moved[~moved["moved_from"].isin(moved["mid"])]  # first moves (not a move out of a moved-to trust)
        for j, mv in firsts.iterrows():
            root = row_of.get(int(mv["moved_from"]))
            if root is None:
                continue
            chain = [j]
            while True:  # later moves of the same school
                nxt = m.index[(m["moved_from"] == m.loc[chain[-1], "mid"])]
                if not len(nxt):
                    break
                chain.append(int(nxt[0]))
            school = int(mv["school"])
            g = int(mv["first_year"])
            last = int(m.loc[chain, "last_year"].max())
            cols = (YEARS >= g) & (YEARS <= last)
            if not cols.any():
                continue
            r = m.loc[root]
            stayed = factor[root] * true_effect(r["kind"], YEARS - int(r["first_year"]), self.effect_sizes)
            for k in chain:
                tau_stay[school] -= eff_of[k]
            tau_stay[school, cols] += stayed[cols]
            moves.append({"school": school, "cohort": g, "last_year": last, "from_pid": int(r["pid"]),
                          "to_pid": int(mv["pid"])})
        return tau_stay, pd.DataFrame(moves, columns=["school", "cohort", "last_year", "from_pid", "to_pid"])


def _sponsor_rate(year: int, secondary: bool) -> float:
    """Yearly share of not-yet-academy schools taken on by sponsors (stylised DfE history)."""
    if secondary:
        return {2011: 0.02, 2012: 0.03, 2013: 0.04, 2014: 0.04, 2015: 0.03}.get(year, 0.02 if year < 2020 else 0.015)
    return {2011: 0.002, 2012: 0.005, 2013: 0.012, 2014: 0.015, 2015: 0.015, 2016: 0.012}.get(
        year, 0.008 if year < 2020 else 0.006)


def _converter_rate(year: int, secondary: bool) -> float:
    if secondary:
        return {2011: 0.15, 2012: 0.12, 2013: 0.08}.get(year, 0.06 if year < 2019 else 0.05)
    return {2011: 0.008, 2012: 0.02, 2013: 0.025}.get(year, 0.03 if year < 2019 else 0.035)


def generate(seed: int = 2024, n_schools: int = DEFAULT_SCHOOLS, covid_gap: bool = False,
             effects: dict | None = None) -> SyntheticPanel:
    """Generate the synthetic national panel (deterministic by ``seed``).

    ``effects`` maps each key of ``EFFECTS`` to (full effect in latent SD units, years to
    reach it); the default is ``EFFECTS``. Use e.g. ``{k: (0.2, 1) for k in EFFECTS}`` to
    plant a homogeneous, immediate effect. Selection into partnerships is unchanged.
    """
    if n_schools < 200:
        raise ValueError("n_schools must be at least 200 (partnerships need neighbours)")
    if effects is not None and set(effects) != set(EFFECTS):
        raise ValueError(f"effects must give every partnership kind: {sorted(EFFECTS)}")
    b = _Builder(seed, n_schools, covid_gap, effects)
    b.make_schools()
    b.form_trusts()
    b.form_groups()
    m = b.finish_memberships()
    tau, mem_years, tau_stay, moves = b.effects(m)
    return _assemble(b, m, tau, mem_years, tau_stay, moves)


def _assemble(b: _Builder, m: pd.DataFrame, tau: np.ndarray, mem_years: pd.DataFrame, tau_stay: np.ndarray,
              moves: pd.DataFrame) -> SyntheticPanel:
    rng = b.rng
    n = b.n
    col = YEARS - 2008  # columns of u/q0/grade for 2010..2024
    q0 = b.q0[:, col]
    alive = (YEARS[None, :] >= b.first_year[:, None]) & (YEARS[None, :] <= b.last_year[:, None])
    si, yi = np.nonzero(alive)  # school-year rows, sorted by school then year
    years = YEARS[yi]
    secondary = b.secondary[si]

    # context
    trend_fsm = np.interp(years, [2010, 2014, 2019, 2022, 2024], [0.0, -2.5, -2.5, 3.5, 5.5])
    pupils = np.round(b.size[si] * (1 + 0.004 * (years - 2010)) * np.exp(rng.normal(0, 0.04, len(si))))
    fsm = np.clip(b.fsm0[si] + trend_fsm * b.fsm0[si] / 15 + rng.normal(0, 1.2, len(si)), 0, 100).round(1)
    eal = np.clip(b.eal0[si] + 0.25 * (years - 2010) + rng.normal(0, 1.0, len(si)), 0, 100).round(1)
    sen = np.clip(b.sen0[si] + rng.normal(0, 1.0, len(si)), 0, 100).round(1)
    grade = b.grade[si, col[yi]]
    cohort = np.maximum(rng.binomial(pupils.astype(np.int64), np.where(secondary, 1 / 5.6, 1 / 7.0)), 0)
    frame = {"urn": b.urn[si], "year": years, "pupils": pupils.astype(np.int64), "fsm_pct": fsm,
             "eal_pct": eal, "sen_pct": sen, "ofsted_grade": grade}
    frame["ks2_eligible_pupils"] = np.where(secondary, -1, cohort)
    frame["ks4_eligible_pupils"] = np.where(secondary, cohort, -1)
    frame["ks4_disadvantaged_pct"] = np.where(
        secondary, np.clip(fsm * 1.45 + rng.normal(0, 3, len(si)), 0, 100).round(0), np.nan)

    # outcomes: the same noise for the treated and untreated potential outcome
    q_untreated = q0[si, yi]
    q_treated = q_untreated + tau[si, yi]
    q_stayed = q_untreated + tau_stay[si, yi]
    safe_n = np.maximum(cohort, 1)
    y0_all, eff_all, move_all = {}, {}, {}
    for out in OUTCOMES:
        applies = ~secondary if out.phase == "primary" else secondary
        mean = np.array([out.means[y] for y in years])
        if out.percent:
            p = np.clip(mean / 100, 0.02, 0.98)
            noise_sd = 100 * np.sqrt(p * (1 - p) / safe_n)
        else:
            noise_sd = out.within_sd / np.sqrt(safe_n)
        noise = rng.normal(0, 1, len(si)) * noise_sd
        y0 = np.clip(mean + out.loading * q_untreated + noise, out.lo, out.hi)
        y1 = np.clip(mean + out.loading * q_treated + noise, out.lo, out.hi)
        ys = np.clip(mean + out.loading * q_stayed + noise, out.lo, out.hi)
        y0_all[out.name] = np.where(applies, y0, np.nan)
        eff_all[out.name] = np.where(applies, y1 - y0, np.nan)
        move_all[out.name] = np.where(applies, y1 - ys, np.nan)
        frame[out.name] = np.where(applies, np.round(y1, out.decimals), np.nan)
    sy = pd.DataFrame(frame)
    text = _with_markers(b, sy, secondary, cohort)

    truth = _truth_effects(b, m, mem_years, tau, eff_all, si, yi, alive)
    cohorts = _truth_cohorts(truth)
    truth_moves = _truth_moves(b, moves, tau, tau_stay, move_all, si, yi)
    schools = _schools_table(b, m)
    partnerships, memberships = _partnership_tables(b, m)
    meta = {"seed": None, "n_schools": n, "years": [FIRST_YEAR, LAST_YEAR], "covid_gap": b.covid_gap,
            "effects": {f"{t}:{k}" if k else t: {"full": f, "ramp_years": r}
                        for (t, k), (f, r) in b.effect_sizes.items()},
            "rho": RHO, "sd_transitory": SD_U, "pupil_sd": {o.name: o.pupil_sd for o in OUTCOMES},
            "within_school_sd": {o.name: round(o.within_sd, 6) for o in OUTCOMES if not o.percent},
            "loading": {o.name: o.loading for o in OUTCOMES},
            "heterogeneity": {"kinds": [":".join(k) for k in HETEROGENEOUS_KINDS],
                              "trust_size": {w: f for (_, _, w), f in zip(TRUST_SIZE_BINS, SIZE_FACTORS)},
                              "distance_to_partner": {w: f for (_, _, w), f in zip(DISTANCE_BINS_KM, DISTANCE_FACTORS)}},
            "rebrokerage": {"rate": REBROKER_RATE, "min_years_in_trust": REBROKER_MIN_YEARS}}
    return SyntheticPanel(schools, partnerships, memberships, text, truth, cohorts, truth_moves, meta)


def _with_markers(b: _Builder, sy: pd.DataFrame, secondary: np.ndarray, cohort: np.ndarray) -> pd.DataFrame:
    """Publishable text: suppression markers where DfE would print them, numbers elsewhere."""
    rng = b.rng
    out = {"urn": sy["urn"].astype(str), "year": sy["year"].astype(str)}
    n = len(sy)
    small = cohort <= 5
    lowcov = rng.random(n) < 0.02
    not_published = rng.random(n) < 0.003
    covid = sy["year"].isin([2020, 2021]).to_numpy() if b.covid_gap else np.zeros(n, dtype=bool)
    for name in sy.columns[2:]:
        values = sy[name].to_numpy(dtype=float)
        texts = _format(values, name)
        marker = np.full(n, "", dtype=object)
        if name.startswith(("ks2_", "ks4_")) and not name.endswith(("eligible_pupils", "disadvantaged_pct")):
            applies = ~secondary if name.startswith("ks2_") else secondary
            marker[applies & small] = "SUPP"
            if "progress" in name:
                marker[applies & ~small & lowcov] = "LOWCOV"
            if name == "ks4_ebacc_aps":
                marker[applies & ~small & (rng.random(n) < 0.004)] = "NE"
            marker[applies & not_published & (marker == "")] = "NP"
            marker[applies & covid] = "NP"
        elif name == "fsm_pct":
            marker[rng.random(n) < 0.002] = "x"
        texts = np.where(marker != "", marker, texts)
        out[name] = texts
    return pd.DataFrame(out)


def _format(values: np.ndarray, name: str) -> np.ndarray:
    decimals = {o.name: o.decimals for o in OUTCOMES}.get(name, 1)
    if name in ("pupils", "ofsted_grade", "ks2_eligible_pupils", "ks4_eligible_pupils", "ks4_disadvantaged_pct"):
        decimals = 0
    ok = ~np.isnan(values) & (values >= 0 if name.endswith("eligible_pupils") else True)
    rounded = np.round(np.where(ok, values, 0.0), decimals)
    rounded = np.where(rounded == 0, 0.0, rounded)  # no "-0.0"
    text = np.char.mod(f"%.{decimals}f", rounded).astype(object)
    return np.where(ok, text, "")


def _truth_effects(b, m, mem_years, tau, eff_all, si, yi, alive) -> pd.DataFrame:
    """Realised effect per (school, year, membership): the school-year total split in
    proportion to each membership's latent contribution (exact when effects do not clip)."""
    index_of = -np.ones((b.n, len(YEARS)), dtype=np.int64)
    index_of[si, yi] = np.arange(len(si))
    mm = m.loc[mem_years["membership"].to_numpy()]
    school = mm["school"].to_numpy()
    ycol = mem_years["year"].to_numpy() - FIRST_YEAR
    row = index_of[school, ycol]
    keep = row >= 0
    mem_years, mm, school, ycol, row = mem_years[keep], mm[keep], school[keep], ycol[keep], row[keep]
    total = tau[school, ycol]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total != 0, mem_years["effect_latent"].to_numpy() / total, 0.0)
    pids = mm["pid"].to_numpy()
    ptype = np.array([b.partnerships[p]["type"] for p in pids], dtype=object)
    sponsor = np.array([b.partnerships[p]["sponsor_led"] for p in pids], dtype=object)
    out = pd.DataFrame({
        "urn": b.urn[school], "year": mem_years["year"].to_numpy(),
        "partnership_id": _pid_labels(pids), "partnership_type": ptype,
        "sponsor_led": pd.array(sponsor, dtype="boolean"),
        "role": mm["role"].to_numpy(), "phase": np.where(b.secondary[school], "secondary", "primary"),
        "cohort": mm["first_year"].to_numpy(), "event_time": mem_years["event_time"].to_numpy(),
        "effect_latent": mem_years["effect_latent"].to_numpy(),
    })
    for name, eff in eff_all.items():
        out[f"effect_{name}"] = eff[row] * share
    return out.sort_values(["urn", "year", "partnership_id"], kind="stable").reset_index(drop=True)


def _truth_moves(b, moves, tau, tau_stay, move_all, si, yi) -> pd.DataFrame:
    """Per school-year after a school's first move of trust: the effect of having moved rather
    than stayed in its original trust (latent and on every outcome, the same noise)."""
    index_of = -np.ones((b.n, len(YEARS)), dtype=np.int64)
    index_of[si, yi] = np.arange(len(si))
    parts = []
    for mv in moves.itertuples(index=False):
        cols = np.flatnonzero((YEARS >= mv.cohort) & (YEARS <= mv.last_year))
        rows = index_of[mv.school, cols]
        keep = rows >= 0
        cols, rows = cols[keep], rows[keep]
        if not len(cols):
            continue
        part = {"urn": b.urn[mv.school], "year": YEARS[cols], "partnership_id": _pid_labels([mv.to_pid])[0],
                "moved_from": _pid_labels([mv.from_pid])[0],
                "phase": "secondary" if b.secondary[mv.school] else "primary", "cohort": mv.cohort,
                "event_time": YEARS[cols] - mv.cohort,
                "effect_latent": tau[mv.school, cols] - tau_stay[mv.school, cols]}
        for name, eff in move_all.items():
            part[f"effect_{name}"] = eff[rows]
        parts.append(pd.DataFrame(part))
    columns = ["urn", "year", "partnership_id", "moved_from", "phase", "cohort", "event_time", "effect_latent",
               *(f"effect_{name}" for name in move_all)]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns].sort_values(["urn", "year"], kind="stable").reset_index(drop=True)


def _truth_cohorts(truth: pd.DataFrame) -> pd.DataFrame:
    """Mean true effect by partnership type, phase, cohort and event time (long by outcome)."""
    keys = ["partnership_type", "sponsor_led", "role", "phase", "cohort", "event_time"]
    t = truth.copy()
    sl = t["sponsor_led"]
    t["sponsor_led"] = np.where(sl.isna(), "", np.where(sl.fillna(False).astype(bool), "true", "false"))
    eff_cols = [c for c in t.columns if c.startswith("effect_") and c != "effect_latent"]
    long = t.melt(id_vars=keys + ["urn"], value_vars=["effect_latent", *eff_cols], var_name="outcome",
                  value_name="effect").dropna(subset=["effect"])
    long["outcome"] = long["outcome"].str.removeprefix("effect_")
    agg = long.groupby(keys + ["outcome"], sort=True, dropna=False).agg(n_schools=("urn", "nunique"),
                                                          true_att=("effect", "mean")).reset_index()
    return agg


def _pid_labels(pids) -> np.ndarray:
    return np.array([f"P{p + 1:05d}" for p in pids], dtype=object)


def _schools_table(b: _Builder, m: pd.DataFrame) -> pd.DataFrame:
    rng = b.rng
    n = b.n
    first_mat = m[m["kind"].map(lambda k: k[0] == "multi_academy_trust")].drop_duplicates("school")
    etype = rng.choice(["community", "voluntary_aided", "voluntary_controlled", "foundation"], size=n,
                       p=[0.6, 0.17, 0.13, 0.10]).astype(object)
    sponsor_kind = first_mat["kind"].map(lambda k: k[1]).to_numpy()
    etype[first_mat["school"].to_numpy()] = np.where(sponsor_kind == "sponsor", "academy_sponsor_led",
                                                     "academy_converter")
    etype[b.free_school] = "free_school"
    a = rng.choice(_NAME_A, size=n)
    bb = rng.choice(_NAME_B, size=n)
    saint = rng.random(n) < 0.08
    kind_word = np.where(b.secondary, np.where(rng.random(n) < 0.5, "Academy", "High School"), "Primary School")
    names = np.where(saint, "St " + rng.choice(["Mary", "John", "Peter", "Anne", "Chad", "Bede"], size=n) + "'s "
                     + np.where(etype == "voluntary_aided", "Catholic ", "Church of England ") + kind_word,
                     np.char.add(np.char.add(a.astype(str), bb.astype(str)), " ").astype(object) + kind_word)
    opened = np.where(b.first_year > FIRST_YEAR, [f"{y - 1}-09-01" for y in b.first_year], "")
    closed = np.where(b.last_year < LAST_YEAR, [f"{y}-08-31" for y in b.last_year], "")
    return pd.DataFrame({
        "urn": b.urn.astype(str), "name": names, "la_code": b.la_code.astype(str),
        "la_name": [b.la_names[c] for c in b.la_code], "region": [REGIONS[r][0] for r in b.region],
        "phase": np.where(b.secondary, "secondary", "primary"), "establishment_type": etype,
        "urban_rural": np.where(b.rural, "rural", "urban"),
        "easting": b.easting.astype(np.int64).astype(str), "northing": b.northing.astype(np.int64).astype(str),
        "opened": opened, "closed": closed,
    })


def _partnership_tables(b: _Builder, m: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    used = np.unique(m["pid"].to_numpy())
    p = pd.DataFrame([b.partnerships[i] for i in used])
    # a partnership opens no later than its first member joins
    first_join = m.groupby("pid")["joined"].min()
    p["opened"] = np.minimum(p["opened"].to_numpy(), first_join.loc[p["pid"]].to_numpy())
    partnerships = pd.DataFrame({
        "partnership_id": _pid_labels(p["pid"].to_numpy()), "name": p["name"].to_numpy(),
        "type": p["type"].to_numpy(), "formal": [str(TYPE_OF[t]).lower() for t in p["type"]],
        "sponsor_led": [("" if s is None else str(bool(s)).lower()) for s in p["sponsor_led"]],
        "opened": pd.to_datetime(p["opened"]).dt.strftime("%Y-%m-%d").to_numpy(),
        "closed": pd.to_datetime(p["closed"]).dt.strftime("%Y-%m-%d").fillna("").to_numpy(),
    })
    memberships = pd.DataFrame({
        "urn": b.urn[m["school"].to_numpy()].astype(str), "partnership_id": _pid_labels(m["pid"].to_numpy()),
        "joined": m["joined"].dt.strftime("%Y-%m-%d").to_numpy(),
        "left": m["left"].dt.strftime("%Y-%m-%d").fillna("").to_numpy(), "role": m["role"].to_numpy(),
    }).sort_values(["urn", "joined", "partnership_id"], kind="stable").reset_index(drop=True)
    return partnerships, memberships
