"""Small MyST-markdown helpers shared by the book's chapter writers (pure text, no I/O)."""

from __future__ import annotations

import math

from evaluation.estimators.names import ESTIMATOR_NAMES, TITLES
from evaluation.numbers import sign_safe_decimals

ESTIMATOR_ORDER = [*ESTIMATOR_NAMES, "synthetic_control"]


def estimator_name(name: str) -> str:
    return TITLES.get(name, name.replace("_", " "))


def ordered_estimators(names) -> list[str]:
    names = list(names)
    return [n for n in ESTIMATOR_ORDER if n in names] + sorted(n for n in names if n not in ESTIMATOR_ORDER)


def num(x, digits: int = 2, signed: bool = False) -> str:
    """A number for a reader: fixed digits, a real minus sign, an em dash when missing.

    Rounding never hides a sign: a non-zero value that would print as 0.00 gets as many more
    digits as its first significant one needs (-0.002 prints as -0.002, not 0.00)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "\u2014"
    d = sign_safe_decimals(x, digits)
    text = f"{x:+.{d}f}" if signed else f"{x:.{d}f}"
    if text.startswith("-"):
        text = "\u2212" + text[1:]
    if float(x) == 0:
        text = text.lstrip("+\u2212")
    return text


def pvalue(p) -> str:
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "\u2014"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def pct(x, digits: int = 0) -> str:
    if x is None:
        return "\u2014"
    return f"{100 * x:.{digits}f}%"


def count(n) -> str:
    return "\u2014" if n is None else f"{int(n):,}"


def cell(value) -> str:
    """Text safe inside a pipe-table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: list[str], rows: list[list], align: list[str] | None = None) -> str:
    """A MyST pipe table; align entries are 'l' or 'r' (numbers right-aligned)."""
    align = align or ["l"] * len(headers)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "| " + " | ".join(marks[a] for a in align) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def months_words(months: int) -> str:
    """'1 month's', '3 months'': the possessive a number of months takes before 'progress'."""
    n = abs(int(months))
    return f"{n} month's" if n == 1 else f"{n} months'"


def escape(text: str) -> str:
    """Plain text for a markdown paragraph: characters MyST would read as markup are escaped."""
    out = str(text)
    for ch in ("\\", "*", "_", "`", "[", "]", "<", ">", "$", "{", "}", "|"):
        out = out.replace(ch, "\\" + ch)
    return out


_LOCK = ('<svg class="{cls}" viewBox="0 0 20 24" aria-hidden="true">'
         '<path d="M5 11V7a5 5 0 0 1 10 0v4" fill="none" stroke-width="2.2"/>'
         '<rect x="2" y="11" width="16" height="12" rx="2" stroke-width="1.6"/></svg>')


def padlocks_html(n: int, total: int = 5) -> str:
    """The security rating drawn as padlocks (inline SVG: no font or image file needed)."""
    locks = "".join(_LOCK.format(cls="lock-on" if i < n else "lock-off") for i in range(total))
    return (f'<span class="padlocks" role="img" aria-label="{n} out of {total} padlocks">{locks}</span>'
            f'<span class="padlock-label">{n} out of {total} padlocks</span>')


# ---------------------------------------------------------------------------- words for counts and names

#: The reader's name for each partnership type (data_schemas' partnerships.type values): one place.
TYPE_WORDS = {
    "multi_academy_trust": "multi-academy trust", "federation_hard": "hard federation",
    "federation_soft": "soft federation", "teaching_school_alliance": "teaching school alliance",
    "umbrella_trust": "umbrella trust", "collaborative_partnership": "collaborative partnership",
    "informal_cluster": "informal cluster",
}


def type_words(code: str) -> str:
    """'federation_hard' -> 'hard federation' (unknown codes lose their underscores)."""
    return TYPE_WORDS.get(code, str(code).replace("_", " "))


def article(phrase: str) -> str:
    """'an umbrella trust', 'a multi-academy trust', 'a university', 'an 11-plus school'."""
    text = str(phrase).strip()
    low = text.lower()
    vowel = low[:1] in ("a", "e", "i", "o", "u")
    if low.startswith(("uni", "use", "usu", "one", "eu", "ur")):
        vowel = False
    if low.startswith(("8", "11", "18", "hour", "honest")):
        vowel = True
    return ("an " if vowel else "a ") + text


def plural(n, word: str, words: str | None = None) -> str:
    """'0 schools', '1 school', '2 schools', '-1 school' (thousands separated)."""
    many = words or word + "s"
    return f"{count(n)} {word if abs(int(n)) == 1 else many}"


def months(m) -> str:
    """A number of months as a noun: '0 months', '1 month', '3 months' (sign dropped)."""
    return plural(abs(int(m)), "month")


def months_signed(m) -> str:
    """A change in months: '1 month more', '2 months less', 'no difference'."""
    m = int(m)
    if m == 0:
        return "no difference"
    return f"{months(m)} {'more' if m > 0 else 'less'}"


def months_progress(m) -> str:
    """'about 1 month's additional progress', 'about 3 months' less progress',
    'less than one month's progress' (0)."""
    m = int(m)
    if m == 0:
        return "less than one month's progress"
    return f"about {months_words(m)} {'additional' if m > 0 else 'less'} progress"


def months_range(lo, hi) -> str:
    """The months of a confidence interval: '2 to 10 months more', '1 to 3 months less',
    'from 1 month less to 2 months more', '1 month more' (both ends equal)."""
    lo, hi = int(lo), int(hi)
    if lo == hi:
        return months_signed(lo)
    if lo >= 0:
        return f"{lo} to {months(hi)} more"
    if hi <= 0:
        return f"{abs(hi)} to {months(lo)} less"
    return f"from {months_signed(lo)} to {months_signed(hi)}"


def year_span(first: int, last: int) -> str:
    """'in 2016' or 'between 2016 and 2018'."""
    return f"in {first}" if int(first) == int(last) else f"between {first} and {last}"


def listing(items, conj: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


def types_listing(codes, conj: str = "or", articles: bool = False) -> str:
    """Partnership types in words, kinds of the same thing said once: 'a hard or soft federation',
    'a multi-academy trust or a hard or soft federation', 'hard and soft federations' is not
    attempted (the noun stays singular). ``articles`` puts 'a'/'an' before each kind."""
    groups: list[list[str]] = []  # runs of phrases sharing their last word ('federation')
    for phrase in (type_words(c) for c in codes):
        head = phrase.rsplit(" ", 1)
        if groups and len(head) == 2 and len(groups[-1][-1].rsplit(" ", 1)) == 2 \
                and groups[-1][-1].rsplit(" ", 1)[1] == head[1]:
            groups[-1].append(phrase)
        else:
            groups.append([phrase])
    parts = []
    for group in groups:
        text = group[0] if len(group) == 1 else \
            listing([g.rsplit(" ", 1)[0] for g in group], conj) + " " + group[-1].rsplit(" ", 1)[1]
        parts.append(article(text) if articles else text)
    return listing(parts, conj)


def p_equals(p) -> str:
    """'p = 0.042', 'p < 0.001' (never 'p = 0.000'), 'p not available'."""
    text = pvalue(p)
    if text == "\u2014":
        return "p not available"
    return "p " + text if text.startswith("<") else "p = " + text
