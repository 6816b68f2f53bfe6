"""The estimators' names, in one place: the canonical name (study files, result.json, the
registry), the command-line spelling (hyphens), and the words the book and the summaries use.
Constants only, so that every layer (study definitions, CLI, registry, book) can import it."""

from __future__ import annotations

#: Canonical names of the study estimators, in the order the book lists them.
ESTIMATOR_NAMES: tuple[str, ...] = ("twfe", "event_study", "callaway_santanna", "sun_abraham", "imputation",
                                    "chaisemartin_dhaultfoeuille")

#: The estimators a study uses when its definition does not list them (``[estimators] use``). de
#: Chaisemartin & D'Haultfoeuille is opt-in: a study names it, so studies that do not keep their
#: definition (spec hash) and their results.
DEFAULT_USE: tuple[str, ...] = ("twfe", "event_study", "callaway_santanna", "sun_abraham", "imputation")

#: Table titles (the book), including the self-evaluation's synthetic control.
TITLES = {
    "twfe": "Two-way fixed effects (static)",
    "event_study": "Event study (dynamic TWFE)",
    "callaway_santanna": "Callaway & Sant'Anna (2021)",
    "sun_abraham": "Sun & Abraham (2021)",
    "imputation": "Imputation (Borusyak, Jaravel & Spiess 2024)",
    "chaisemartin_dhaultfoeuille": "de Chaisemartin & D'Haultfoeuille (2024)",
    "synthetic_control": "Synthetic control",
}

#: Short names for sentences (checks, summaries).
SHORT = {"callaway_santanna": "Callaway & Sant'Anna", "event_study": "TWFE event study",
         "sun_abraham": "Sun & Abraham", "imputation": "imputation (Borusyak et al.)", "twfe": "TWFE",
         "chaisemartin_dhaultfoeuille": "de Chaisemartin & D'Haultfoeuille"}


def cli_spelling(name: str) -> str:
    """``callaway_santanna`` -> ``callaway-santanna`` (the ``impact estimate --estimator`` choice)."""
    return name.replace("_", "-")


def canonical(text: str) -> str:
    """Either spelling -> the canonical name (``callaway-santanna`` -> ``callaway_santanna``)."""
    return text.strip().lower().replace("-", "_")
