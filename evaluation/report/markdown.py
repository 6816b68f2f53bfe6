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
