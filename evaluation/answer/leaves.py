"""Leaf answers: text groups and units split off, words as words, times of day, the percent and degree
markers, and which leaves may go to the symbolic checker."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from evaluation.answer.numeric import parse_number
from evaluation.answer.text import MAX_LEN, balanced, scan


_TEXT_CMDS = r"text|textbf|textit|textrm|textnormal|textsf|texttt|mbox|mathrm|mathbf|mathit|mathsf|boldsymbol|bm|emph"
_TEXT_GROUP = re.compile(rf"\\(?:{_TEXT_CMDS})\s*\{{")
_UNIT_TAIL = re.compile(r"(?:\s*(?:\\cdot|/|\*)?\s*)$")
_MATH_WORDS = {
    "pi", "sqrt", "log", "ln", "lg", "sin", "cos", "tan", "cot", "sec", "csc", "exp", "infty", "arcsin",
    "arccos", "arctan", "sinh", "cosh", "tanh", "mod", "gcd", "lcm", "max", "min", "det", "frac", "dx", "dt",
    "i", "e", "x", "y", "z", "n", "k", "t", "cdot", "times", "circ",
}
# A trailing unit word after a number: 'cm', 'inches', 'm/s', 'ergs s^{-1}' (single letters: SI only).
_UNIT_WORD = r"(?:[A-Za-z]{2,}|[msgJNWVKL])(?:\^\{?-?\d+\}?)?"
_PLAIN_UNIT = re.compile(rf"^(.*?[\d}})°%.])\s*({_UNIT_WORD}(?:(?:\s*(?:/|\\cdot)\s*|\s+){_UNIT_WORD})*)$")


def _text_groups(s: str) -> list[tuple[int, int, int]]:
    """(start, content_start, end) of each top-level \\text{...}-like group."""
    out = []
    pos = 0
    while True:
        m = _TEXT_GROUP.search(s, pos)
        if not m:
            return out
        depth, j = 0, m.end() - 1
        end = -1
        while j < len(s):
            if s[j] == "{" and s[j - 1] != "\\":
                depth += 1
            elif s[j] == "}" and s[j - 1] != "\\":
                depth -= 1
                if depth == 0:
                    end = j
                    break
            j += 1
        if end < 0:
            return out
        out.append((m.start(), m.end(), end))
        pos = end + 1


def strip_units(s: str) -> str:
    """Drop trailing units: '5\\text{ cm}^2' -> '5', '12 inches' -> '12', '1.6 \\mathrm{~cm}' -> '1.6'."""
    for _ in range(6):
        groups = _text_groups(s)
        if groups:
            start, cstart, end = groups[-1]
            tail = s[end + 1 :]
            content = s[cstart:end].replace("~", " ").strip()
            tail_ok = re.fullmatch(r"\s*(?:\^\s*\{?-?\d+\}?)?\s*", tail) is not None
            prefix = s[:start].rstrip()
            if (
                tail_ok
                and prefix
                and re.fullmatch(r"[A-Za-z][A-Za-z\s/.\-^{}0-9\\]*", content or "-")
                and content.lower().strip(". ") not in ("and", "or")
                and not prefix.endswith(("=", "(", "[", ","))
            ):
                s = _UNIT_TAIL.sub("", prefix)
                continue
        m = _PLAIN_UNIT.match(s)
        if m and not (set(re.findall(r"[A-Za-z]+", m.group(2))) & _MATH_WORDS) and (
            len(m.group(2)) > 1 or s[m.start(2) - 1 : m.start(2)] == " "  # '5 m' is metres, '5m' is not
        ):
            s = m.group(1).rstrip()
            continue
        break
    return s.strip()


def unwrap_text(s: str) -> str:
    """'\\text{(C)}' -> '(C)', '\\mathbf{5}' -> '5'."""
    for _ in range(20):
        groups = _text_groups(s)
        if not groups:
            break
        start, cstart, end = groups[0]
        s = s[:start] + s[cstart:end] + s[end + 1 :]
    return s.strip()


_TEXTY = re.compile(r"^\(?[A-Za-z][A-Za-z .'\-]*\)?$")


def text_key(s: str) -> str | None:
    """Canonical form of a text answer ('\\text{(C)}' -> 'c', 'Monday' -> 'monday'), else None."""
    t = unwrap_text(s).strip()
    if not _TEXTY.match(t):
        return None
    words = re.findall(r"[A-Za-z]+", t)
    if len(t.strip("()")) == 1 or any(len(w) >= 2 for w in words):
        return " ".join(w.lower() for w in words)
    return None


_DEGREES_IN = re.compile(r"(\d+(?:\.\d+)?)\s*°")


def _radians(m: re.Match) -> str:
    """'90°' -> '\\frac{1\\pi}{2}': an angle in degrees as an exact multiple of pi."""
    r = Fraction(m.group(1)) / 180
    return f"\\frac{{{r.numerator}\\pi}}{{{r.denominator}}}"


_TIME = re.compile(r"^(\d{1,2}):(\d\d)(?::(\d\d))?\s*(?:([AaPp])\.?\s*[Mm]\.?)?$")


def parse_time(s: str) -> tuple[int, int, bool] | None:
    """'20:34', '20:34:00', '8:34 PM', '8:34 p.m.' -> (seconds after midnight, hour as written, AM/PM given)."""
    m = _TIME.match(unwrap_text(s).strip())
    if not m:
        return None
    h, mins, secs, half = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), m.group(4)
    if mins > 59 or secs > 59 or h > (12 if half else 23) or (half and h == 0):
        return None
    h24 = (h % 12 + (12 if half.lower() == "p" else 0)) if half else h
    return h24 * 3600 + mins * 60 + secs, h, half is not None


def times_equal(gold: tuple[int, int, bool], pred: tuple[int, int, bool]) -> bool:
    """Same time of day; a time without AM/PM and an hour of 1-12 matches either half of the day."""
    (g, g_hour, g_half), (p, p_hour, p_half) = gold, pred
    if g == p:
        return True
    unmarked_hour = p_hour if g_half and not p_half else g_hour if p_half and not g_half else None
    return unmarked_hour is not None and 1 <= unmarked_hour <= 12 and g % 43200 == p % 43200


_FUNC_LHS = re.compile(r"^[A-Za-z]+\(([^()]*)\)$")


def same_unknown(a: str, b: str) -> bool:
    """Left sides that name one unknown: equal, or a function and its graph ('f(x)' and 'y'; not 'g(x)')."""
    if a.lower() == b.lower():
        return True
    return (_FUNC_LHS.match(a) is not None and b == "y") or (_FUNC_LHS.match(b) is not None and a == "y")


def has_equals(s: str) -> bool:
    return any(c == "=" and d == 0 for _, c, d, _ in scan(s))


@dataclass(frozen=True)
class Leaf:
    """A leaf answer with its markers split off."""

    text: str
    percent: bool = False
    degree: bool = False

    @staticmethod
    def of(s: str) -> "Leaf":
        s = strip_units(s.strip())
        if "°" in s and parse_number(strip_units(s.replace("°", ""))) is None:
            s = _DEGREES_IN.sub(_radians, s)  # '\sin(90°-x)': the angle in radians
        percent = "%" in s
        degree = "°" in s
        if percent or degree:
            s = s.replace("%", "").replace("°", "").strip()
            s = strip_units(s)
        s = s.strip()
        if s.startswith("{") and s.endswith("}") and balanced(s[1:-1]):
            s = s[1:-1].strip()
        return Leaf(s, percent, degree)


def symbolic_safe(s: str) -> bool:
    """Whether `s` may go to the symbolic checker at all (the worker's time limit covers the rest)."""
    if not s or len(s) > MAX_LEN or not balanced(s):
        return False
    if re.search(r"\d\s*\^\s*\{?\s*\(?\s*\d+\s*\^", s):  # numeric power towers: 9^{9^{9}}
        return False
    if re.search(r"\^\s*\{?\s*\d{6,}", s) or re.search(r"\d{5,}\s*!", s):  # 2^{1000000}, 100000!
        return False
    if re.search(r"!\s*!\s*!", s) or (re.search(r"[)}]\s*!", s) and re.search(r"\^|\d{4,}", s)):  # 9!!!!, (10^{100})!
        return False
    return True
