r"""Answer normalisation, exact numbers and answer structures, in pure Python (no sympy, no eval).

Grading compares a gold answer and a predicted answer (both strings) in three layers:

1. `clean`: LaTeX noise (delimiters, ``\left``, spacing, ``\dfrac``, unicode) is removed; degrees and
   percents become one marker each (``°``, ``%``); "and"/"or" between answers become commas.
2. `parse_structure`: the cleaned text becomes a tree: sets ``\{..\}`` (order free), bare lists
   ``1, 2`` (order free: "all solutions"), bracketed sequences ``(a, b)`` / ``[a, b)`` (tuples and
   intervals: order and bracket kinds matter), matrices, unions, and leaves.
3. `Comparator.leaf_equal`: leaves are equal when their text is, when both are text answers with the
   same words, when both are exact numbers of equal value (decimal golds: see `numbers_equal`), or
   when the symbolic checker (sympy via math-verify's parser, run only inside the grader's worker
   processes) says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Callable

MAX_LEN = 2000  # longer answers are only compared as text
MAX_ITEMS = 64  # larger collections are only compared as text

# ----------------------------------------------------------------------------------------- cleaning

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u22c5": "\\cdot ",
    "\u00f7": "\\div ", "\u221a": "\\sqrt", "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u2264": "\\leq ",
    "\u2265": "\\geq ", "\u2260": "\\neq ", "\u222a": "\\cup ", "\u2229": "\\cap ", "\u00a0": " ",
    "\u2009": " ", "\u202f": " ", "\u2019": "'", "\u00b2": "^2", "\u00b3": "^3", "\u00b0": "°",
}
_SUBS = [
    # bracket sizing
    (re.compile(r"\\(?:left|right|middle)\s*\.|\\(?:left|right|middle|[bB]igg?[lr]?)(?![A-Za-z])"), ""),
    (re.compile(r"\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits)(?![A-Za-z])"), ""),
    # spacing
    (re.compile(r"(?<!\\)\\[!,:;>]"), ""),
    (re.compile(r"\\(?:q?quad|space|enspace|thinspace)(?![A-Za-z])|(?<!\\)\\ |~"), " "),
    # synonyms
    (re.compile(r"\\[dtc]frac(?![A-Za-z])"), r"\\frac"),
    (re.compile(r"\\[dt]binom(?![A-Za-z])"), r"\\binom"),
    (re.compile(r"\\(?:leqslant|leq|le)(?![A-Za-z])"), r"\\leq "),
    (re.compile(r"\\(?:geqslant|geq|ge)(?![A-Za-z])"), r"\\geq "),
    (re.compile(r"\\(?:neq|ne)(?![A-Za-z])"), r"\\neq "),
    (re.compile(r"\\lt(?![A-Za-z])"), "<"),
    (re.compile(r"\\gt(?![A-Za-z])"), ">"),
    (re.compile(r"\\(?:lbrace)(?![A-Za-z])"), r"\\{"),
    (re.compile(r"\\(?:rbrace)(?![A-Za-z])"), r"\\}"),
    (re.compile(r"\\(?:infinity|inf)(?![A-Za-z])|(?<![\\A-Za-z])(?:infinity|infty|inf)(?![A-Za-z])"), r"\\infty "),
    # degrees and percents -> one marker each
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])"), "°"),
    (re.compile(r"\^\s*\{\s*\\text\{\s*o\s*\}\s*\}"), "°"),
    (re.compile(r"\\(?:text|mbox|mathrm)\s*\{\s*(?:degrees?|deg)\s*\}|(?<![A-Za-z])degrees?(?![A-Za-z])"), "°"),
    (re.compile(r"\\%|\\(?:text|mbox|mathrm)\s*\{\s*(?:percent|\\%|%)\s*\}|(?<![A-Za-z])percent(?![A-Za-z])"), "%"),
    # currency
    (re.compile(r"\\(?:text|mbox|mathrm)\s*\{\s*(?:\\\$|[€£¥₹])\s*\}|\\\$|[€£¥₹]|\\(?:euro|pounds|yen|EUR)(?![A-Za-z])"
                r"|(?<![A-Za-z])(?:dollars?|euros?|USD|EUR|GBP)(?![A-Za-z])"), ""),
    # "and" / "or" between answers
    (re.compile(r"\\(?:text|mbox|mathrm)\s*\{\s*,?\s*(?:and|or)\s*\}|(?<![A-Za-z\\])(?:and|or)(?![A-Za-z])"), ","),
    (re.compile(r"\\(?:dots|ldots|cdots)(?![A-Za-z])"), r"\\dots"),
    (re.compile(r"\\(?:varnothing|emptyset)(?![A-Za-z])|\\\{\s*\\\}|\\O(?![A-Za-z])"), r"\\emptyset"),
    (re.compile(r"\\(?:text|mbox|mathrm)\s*\{\s*[.,;:]?\s*\}"), ""),  # '\text{.}', '\text{ }'
]
_TEXT_LIST = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*,[^{}]*)\}")
_DELIMS = [("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")]


def _strip_delims(s: str) -> str:
    changed = True
    while changed:
        changed = False
        s = s.strip()
        for a, b in _DELIMS:
            if len(s) >= len(a) + len(b) and s.startswith(a) and s.endswith(b):
                s = s[len(a) : len(s) - len(b)]
                changed = True
                break
    return s


@lru_cache(maxsize=65536)
def clean(s: str) -> str:
    """Canonical text of an answer (see the module docstring); a pure string transform."""
    s = "".join(_UNICODE.get(c, c) for c in str(s))
    s = _strip_delims(s)
    if "\\boxed" in s or "\\fbox" in s:  # a gold or answer that is itself boxed
        from evaluation.extract import last_boxed_answer

        s = _strip_delims(last_boxed_answer(s) or s)
    s = s.replace("{,}", ",")
    s = s.replace("\\$", "\\DOLLAR")
    s = s.replace("$", " ")  # stray inline-math delimiters ("$69$,$84$")
    s = s.replace("\\DOLLAR", "\\$")
    for pat, rep in _SUBS:
        s = pat.sub(rep, s)
    s = _TEXT_LIST.sub(lambda m: m.group(1), s)  # '\text{A, C}': a list of text answers
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"^(?:,\s*)+|(?:\s*,)+$", "", s)  # a dangling comma from "and"
    s = re.sub(r"^[A-Za-z]\s*\\in\s+", "", s)  # "x \in [1, 2]"
    s = s.rstrip(" .;").strip()
    return s


# ------------------------------------------------------------------------------------------ numbers

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_RE_PLAIN = re.compile(rf"^([+-]?)({_NUM})(?:[eE]([+-]?\d+)|(?:\\times|\\cdot|\*|x)10\^(?:\{{([+-]?\d+)\}}|([+-]?\d)))?$")
_RE_POW10 = re.compile(r"^([+-]?)10\^(?:\{([+-]?\d+)\}|(\d))$")
_RE_FRAC = re.compile(rf"^([+-]?)\\frac\{{([+-]?{_NUM})\}}\{{([+-]?{_NUM})\}}$")
_RE_FRAC_SHORT = re.compile(r"^([+-]?)\\frac(\d)(\d)$")
_RE_SLASH = re.compile(rf"^([+-]?)\(?([+-]?{_NUM})\)?/\(?([+-]?{_NUM})\)?$")
_RE_MIXED = re.compile(r"^([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")
_RE_REPEAT = re.compile(r"^([+-]?)(\d*)\.(\d*)\\overline\{(\d+)\}$")
_RE_THOUSANDS = re.compile(r"^([+-]?)(\d{1,3}(?:,\d{3})+)(\.\d+)?$")
MAX_EXP = 400


@dataclass(frozen=True)
class Num:
    """An exact number; `quantum` is the rounding step of a decimal literal (None: exact)."""

    value: Fraction
    quantum: Fraction | None = None


def _decimal(text: str) -> tuple[Fraction, int]:
    """Value of an unsigned decimal literal and its number of fractional digits."""
    if "." in text:
        whole, frac = text.split(".", 1)
        digits = len(frac)
        return Fraction(int(whole or "0") * 10**digits + int(frac or "0"), 10**digits), digits
    return Fraction(int(text)), 0


@lru_cache(maxsize=65536)
def parse_number(s: str, allow_thousands: bool = True) -> Num | None:
    """`s` as an exact number, or None. Integers, decimals (leading zeros fine), 4.5e33, 4.5\\times 10^{33},
    10^{6}, \\frac{a}{b}, a/b, mixed numbers 2\\frac{1}{2}, 1,000,000."""
    t = re.sub(r"\s+", "", s)
    if not t or len(t) > 200:
        return None
    while t.startswith("{") and t.endswith("}") and _balanced(t[1:-1]):
        t = t[1:-1]
    m = _RE_PLAIN.match(t)
    if m:
        sign, mant, e1, e2, e3 = m.groups()
        value, digits = _decimal(mant)
        exp_text = e1 or e2 or e3
        if exp_text is not None:
            exp = int(exp_text)
            if abs(exp) > MAX_EXP:
                return None
            value *= Fraction(10) ** exp
            quantum = Fraction(10) ** (exp - digits)
        else:
            frac_digits = mant.split(".", 1)[1] if "." in mant else ""
            quantum = Fraction(1, 10**digits) if frac_digits.strip("0") else None
        return Num(-value if sign == "-" else value, quantum)
    m = _RE_REPEAT.match(t)
    if m:  # 0.\overline{36} = 36/99
        sign, whole, fixed, rep = m.groups()
        k, r = len(fixed), len(rep)
        value = int(whole or "0") + Fraction(int(fixed or "0"), 10**k) + Fraction(int(rep), 10**k * (10**r - 1))
        return Num(-value if sign == "-" else value)
    m = _RE_POW10.match(t)
    if m:
        exp = int(m.group(2) or m.group(3))
        if abs(exp) > MAX_EXP:
            return None
        value = Fraction(10) ** exp
        return Num(-value if m.group(1) == "-" else value)
    m = _RE_FRAC.match(t) or _RE_SLASH.match(t) or _RE_FRAC_SHORT.match(t)
    if m:
        sign, a, b = m.groups()
        na, nb = _signed(a), _signed(b)
        if nb == 0:
            return None
        value = na / nb
        return Num(-value if sign == "-" else value)
    m = _RE_MIXED.match(t)
    if m:
        sign, whole, a, b = m.groups()
        if int(b) == 0 or int(a) >= int(b):
            return None
        value = int(whole) + Fraction(int(a), int(b))
        return Num(-value if sign == "-" else value)
    if allow_thousands and not re.search(r",\s", s):  # "32, 349" is two answers, not 32349
        m = _RE_THOUSANDS.match(t)
        if m:
            sign, whole, frac = m.groups()
            value, digits = _decimal(whole.replace(",", "") + (frac or ""))
            quantum = Fraction(1, 10**digits) if frac and frac[1:].strip("0") else None
            return Num(-value if sign == "-" else value, quantum)
    return None


def _signed(text: str) -> Fraction:
    sign = -1 if text.startswith("-") else 1
    return sign * _decimal(text.lstrip("+-"))[0]


def _round_to(value: Fraction, quantum: Fraction) -> Fraction:
    """`value` rounded to a multiple of `quantum`, halves away from zero."""
    q = abs(value) / quantum
    n = int(q)
    if q - n >= Fraction(1, 2):
        n += 1
    return (n if value >= 0 else -n) * quantum


REL_TOL_APPROX = Fraction(1, 10**4)


def numbers_equal(gold: Num, pred: Num, tolerance: float | None = None) -> bool:
    """Exact equality, plus two rounding rules.

    A decimal gold (0.33, 4.5e33) is matched by an exact prediction that rounds to it (1/3, 9/2*10^33),
    not by another decimal (0.333). An exact gold (1/3) is matched by a decimal prediction that is the
    gold rounded to the prediction's digits and within 1e-4 relative (0.3333, not 0.33).
    """
    g, p = gold.value, pred.value
    if g == p:
        return True
    if tolerance is not None and abs(g - p) <= Fraction(str(tolerance)):
        return True
    if gold.quantum is not None:
        # only an exact prediction (integer, fraction, closed form) may round to the gold: a decimal
        # prediction is itself rounded, so it must equal the gold (2.54 is not 2.5)
        return pred.quantum is None and _round_to(p, gold.quantum) == g
    if pred.quantum is not None and g != 0:
        return _round_to(g, pred.quantum) == p and abs(p - g) <= REL_TOL_APPROX * abs(g)
    return False


# --------------------------------------------------------------------------------------- structures

_OPEN = {"(": ")", "[": "]", "{": "}"}
_MATRIX_RE = re.compile(r"^\\begin\{([pbBvV]?matrix|smallmatrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.S)


def _scan(s: str):
    """Yield (index, token, depth_before, length) over `s`; `\\{`, `\\}` are braces and
    `\\langle`, `\\rangle` are parentheses."""
    depth = 0
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            if i + 1 < n and s[i + 1] in "{}":
                tok = "\\" + s[i + 1]
                yield i, tok, depth, 2
                depth += 1 if tok == "\\{" else -1
                i += 2
                continue
            if s.startswith("\\langle", i) or s.startswith("\\rangle", i):
                opening = s[i + 1] == "l"
                yield i, "(" if opening else ")", depth, 7
                depth += 1 if opening else -1
                i += 7
                continue
        yield i, c, depth, 1
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1


def _balanced(s: str) -> bool:
    depth = 0
    for _, c, _, _ in _scan(s):
        if c in ("(", "[", "{", "\\{"):
            depth += 1
        elif c in (")", "]", "}", "\\}"):
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def _split_top(s: str, seps: str = ",;") -> list[str]:
    parts, last = [], 0
    for i, c, d, _ in _scan(s):
        if d == 0 and c in seps and len(c) == 1:
            parts.append(s[last:i])
            last = i + 1
    parts.append(s[last:])
    return [p.strip() for p in parts]


def _split_top_word(s: str, word: str) -> list[str]:
    parts, last = [], 0
    for i, c, d, _ in _scan(s):
        if d == 0 and c == "\\" and s.startswith(word, i) and not s[i + len(word) : i + len(word) + 1].isalpha():
            parts.append(s[last:i])
            last = i + len(word)
    parts.append(s[last:])
    return [p.strip() for p in parts]


def _outer(s: str) -> tuple[str, str, str] | None:
    """(open, inner, close) when one bracket pair encloses all of `s`; \\langle..\\rangle reads as (..)."""
    first = None
    for i, c, d, n in _scan(s):
        if first is None:
            if c not in ("(", "[", "{", "\\{"):
                return None
            first = (c, n)
            continue
        if d == 1 and c in (")", "]", "}", "\\}"):
            if s[i + n :].strip():
                return None
            return first[0], s[first[1] : i], c
    return None


@dataclass
class Node:
    """kind: leaf | set | list | seq | matrix | union. `raw` is the cleaned text."""

    kind: str
    raw: str
    items: list = field(default_factory=list)
    brackets: str = ""  # seq: open+close, e.g. "(]"
    rows: list = field(default_factory=list)  # matrix: list of rows of Nodes


def _matrix(inner: str) -> list[list[str]] | None:
    rows = [r for r in re.split(r"\\\\(?:\[[^\]]*\])?", inner) if r.strip() and r.strip() != "\\hline"]
    table = [[c.strip() for c in r.split("&")] for r in rows]
    if not table or len({len(r) for r in table}) != 1:
        return None
    return table


def _assignment_tuples(parts: list[str]) -> list[list[str]] | None:
    """['p=5', 'q=2', 'p=7', 'q=2'] -> [['p=5', 'q=2'], ['p=7', 'q=2']]: assignments to k >= 2 unknowns,
    repeated in one order; None for anything else."""
    names = [split_assignment(p)[0] for p in parts]
    if None in names or names.count(names[0]) < 2:
        return None
    k = names.index(names[0], 1)
    if k < 2 or len(parts) % k or len(set(names[:k])) != k or any(n != names[i % k] for i, n in enumerate(names)):
        return None
    return [parts[i : i + k] for i in range(0, len(parts), k)]


def parse_structure(s: str, depth: int = 0) -> Node:
    """The answer tree of a cleaned answer (see the module docstring)."""
    s = s.strip()
    if depth > 8 or len(s) > MAX_LEN or not _balanced(s):
        return Node("leaf", s)
    parts = _split_top_word(s, "\\cup")
    if len(parts) > 1 and all(parts):
        return Node("union", s, [parse_structure(p, depth + 1) for p in parts])
    parts = _split_top(s)
    if len(parts) > 1:
        if len(parts) > MAX_ITEMS or not all(parts):
            return Node("leaf", s)
        groups = _assignment_tuples(parts)
        if groups:  # 'p=5, q=2; p=7, q=2' is the tuples (5, 2), (7, 2)
            return Node("list", s, [Node("seq", ", ".join(g), [parse_structure(p, depth + 1) for p in g], brackets="()") for g in groups])
        return Node("list", s, [parse_structure(p, depth + 1) for p in parts])
    m = _MATRIX_RE.match(s)
    if m and m.group(1) not in ("vmatrix", "Vmatrix"):
        table = _matrix(m.group(2))
        if table:
            return Node("matrix", s, rows=[[parse_structure(c, depth + 1) for c in r] for r in table])
    outer = _outer(s)
    if outer:
        op, inner, cl = outer
        inner_parts = _split_top(inner)
        if op == "\\{" and cl == "\\}":
            if len(inner_parts) > MAX_ITEMS:
                return Node("leaf", s)
            return Node("set", s, [parse_structure(p, depth + 1) for p in inner_parts if p])
        if op == "{" and cl == "}":
            if len(inner_parts) == 1:
                return parse_structure(inner, depth + 1)
            return Node("set", s, [parse_structure(p, depth + 1) for p in inner_parts if p])
        if op in "([" and cl in ")]":
            if len(inner_parts) == 1:
                if op == "(" and cl == ")" or inner.lstrip().startswith("\\begin{"):
                    return parse_structure(inner, depth + 1)  # "(5)", "(\begin{matrix}..)", "[\begin{array}..]"
                return Node("leaf", s)
            if len(inner_parts) > MAX_ITEMS or not all(inner_parts):
                return Node("leaf", s)
            return Node("seq", s, [parse_structure(p, depth + 1) for p in inner_parts], brackets=op + cl)
    pm = [i for i, c, d, _ in _scan(s) if c == "\\" and (s.startswith("\\pm", i) or s.startswith("\\mp", i))]
    if len(pm) == 1 and not s[pm[0] + 3 : pm[0] + 4].isalpha():
        i = pm[0]
        a, b = ("+", "-") if s.startswith("\\pm", i) else ("-", "+")
        plus, minus = s[:i] + a + s[i + 3 :], s[:i] + b + s[i + 3 :]
        return Node("list", s, [parse_structure(plus.strip(), depth + 1), parse_structure(minus.strip(), depth + 1)])
    return Node("leaf", s)


# ------------------------------------------------------------------------------------------- leaves

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


_ASSIGN_LHS = re.compile(
    r"^(?:[A-Za-z](?:_(?:\{[^{}]*\}|[A-Za-z0-9]))?'*|\\[A-Za-z]+(?:_(?:\{[^{}]*\}|[A-Za-z0-9]))?"
    r"|[A-Za-z]+\s*\(\s*[A-Za-z](?:\s*,\s*[A-Za-z])*\s*\)|\(\s*[A-Za-z](?:\s*,\s*[A-Za-z])+\s*\))$"
)


def split_assignment(s: str) -> tuple[str | None, str]:
    """('x', '5') for 'x = 5' and 'f(x)=2x'; (None, s) when `s` is not a simple assignment."""
    eqs = [i for i, c, d, _ in _scan(s) if c == "=" and d == 0]
    if len(eqs) == 0:
        return None, s
    lhs = s[: eqs[0]].strip()
    rhs = s[eqs[-1] + 1 :].strip()
    if lhs and rhs and _ASSIGN_LHS.match(lhs) and s[eqs[0] - 1 : eqs[0]] not in "<>!":
        return re.sub(r"\s+", "", lhs), rhs
    return None, s


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


def _has_equals(s: str) -> bool:
    return any(c == "=" and d == 0 for _, c, d, _ in _scan(s))


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
        if s.startswith("{") and s.endswith("}") and _balanced(s[1:-1]):
            s = s[1:-1].strip()
        return Leaf(s, percent, degree)


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


def symbolic_safe(s: str) -> bool:
    """Whether `s` may go to the symbolic checker at all (the worker's time limit covers the rest)."""
    if not s or len(s) > MAX_LEN or not _balanced(s):
        return False
    if re.search(r"\d\s*\^\s*\{?\s*\(?\s*\d+\s*\^", s):  # numeric power towers: 9^{9^{9}}
        return False
    if re.search(r"\^\s*\{?\s*\d{6,}", s) or re.search(r"\d{5,}\s*!", s):  # 2^{1000000}, 100000!
        return False
    if re.search(r"!\s*!\s*!", s) or (re.search(r"[)}]\s*!", s) and re.search(r"\^|\d{4,}", s)):  # 9!!!!, (10^{100})!
        return False
    return True


SymbolicEq = Callable[[Leaf, Leaf, Num | None, Num | None], bool]


class Comparator:
    """Structural comparison; leaves that need algebra go to `symbolic` (None: text and numbers only)."""

    def __init__(self, symbolic: SymbolicEq | None = None, tolerance: float | None = None, answer_type: str | None = None):
        self.symbolic = symbolic
        self.tolerance = tolerance
        self.answer_type = (answer_type or "").lower()

    # -- leaves
    def leaf_equal(self, gold: str, pred: str) -> bool:
        if _squash(gold) == _squash(pred):
            return True
        g_time, p_time = parse_time(gold), parse_time(pred)
        if g_time is not None and p_time is not None:
            return times_equal(g_time, p_time)
        g_lhs, g_rhs = split_assignment(gold)
        p_lhs, p_rhs = split_assignment(pred)
        if g_lhs is not None and p_lhs is not None:
            if same_unknown(g_lhs, p_lhs):  # 'x = 5', 'x = 10/2'; 'f(x) = 2x', 'y = 2x'
                return self._leaf_values_equal(Leaf.of(g_rhs), Leaf.of(p_rhs))
        elif p_lhs is not None and not _has_equals(gold):  # gold '5', pred 'x = 5'
            return self._leaf_values_equal(Leaf.of(gold), Leaf.of(p_rhs))
        elif g_lhs is not None and not _has_equals(pred):  # gold 'f(x)=2x', pred '2x'
            return self._leaf_values_equal(Leaf.of(g_rhs), Leaf.of(pred))
        # two equations ('2x+4y-3=0', 'y=-x/2+3/4'; 'a=3', 'b=3'): the symbolic checker compares them whole
        return self._leaf_values_equal(Leaf.of(gold), Leaf.of(pred))

    def _leaf_values_equal(self, g: Leaf, p: Leaf) -> bool:
        if not g.text or not p.text:
            return False
        gt, pt = text_key(g.text), text_key(p.text)
        if gt is not None or pt is not None:
            if gt is not None and pt is not None:
                return gt == pt
            if _squash(unwrap_text(g.text)) == _squash(unwrap_text(p.text)):
                return True
            # one side is words, the other is not: equal only symbolically (e.g. '\text{5}')
            if (gt is not None and len(gt) > 1) or (pt is not None and len(pt) > 1):
                return False
        g_text, p_text = unwrap_text(g.text), unwrap_text(p.text)
        if _squash(g_text) == _squash(p_text):
            return True
        gn, pn = parse_number(g_text), parse_number(p_text)
        if gn is not None and pn is not None:
            return any(
                numbers_equal(Num(gv, gn.quantum and gn.quantum * gs), Num(pv, pn.quantum and pn.quantum * ps), self.tolerance)
                for gv, gs in _scaled(gn.value, g.percent)
                for pv, ps in _scaled(pn.value, p.percent)
            )
        if self.symbolic is None or not (symbolic_safe(g_text) and symbolic_safe(p_text)):
            return False
        return self.symbolic(Leaf(g_text, g.percent, g.degree), Leaf(p_text, p.percent, p.degree), gn, pn)

    # -- trees
    def equal(self, gold: Node, pred: Node) -> bool:
        if _squash(gold.raw) == _squash(pred.raw):
            return True
        gk, pk = gold.kind, pred.kind
        if gk == "leaf" and pk == "leaf":
            return self.leaf_equal(gold.raw, pred.raw)
        if gk == "list" and pk == "leaf" or gk == "leaf" and pk == "list":
            # '1,000' is one number when the other side is one number
            g_num = parse_number(gold.raw) if gk == "list" else None
            p_num = parse_number(pred.raw) if pk == "list" else None
            if (g_num or p_num) is not None:
                return self.leaf_equal(gold.raw, pred.raw)
            if gk == "leaf" and all(self.equal(gold, item) for item in pred.items):
                return True  # one answer written twice: '15\frac{39}{40}, or \frac{639}{40}'
            return self._fallback(gold, pred)
        if gk in ("set", "list"):
            if pk in ("set", "list") or (pk == "seq" and pred.brackets == "()" and gk == "list"):
                return self._unordered(gold.items, pred.items)
            if pk == "seq" and gk == "set":
                return False  # a tuple is not a set
            return self._fallback(gold, pred)
        if gk == "seq":
            if pk == "seq":
                if len(gold.items) != len(pred.items):
                    return False
                if gold.brackets != pred.brackets:
                    # intervals: brackets matter; longer vectors: ( ) [ ] < > are notation
                    if len(gold.items) == 2 or self.answer_type == "interval":
                        return False
                return self._ordered(gold.items, pred.items)
            if pk == "list":  # gold (1, 2), pred "1, 2": the brackets were dropped
                return len(gold.items) == len(pred.items) and self._ordered(gold.items, pred.items)
            if pk == "matrix":
                vec = _vector(pred)
                return vec is not None and self._ordered(gold.items, vec)
            if pk == "set":
                return False
            return self._fallback(gold, pred)
        if gk == "matrix":
            if pk == "matrix":
                if len(gold.rows) != len(pred.rows) or any(len(a) != len(b) for a, b in zip(gold.rows, pred.rows)):
                    return False
                return all(self.equal(a, b) for ra, rb in zip(gold.rows, pred.rows) for a, b in zip(ra, rb))
            vec = _vector(gold)
            if vec is not None and pk in ("seq", "list"):
                return self._ordered(vec, pred.items)
            if pk == "leaf" and "\\begin{" in pred.raw:  # '2\begin{pmatrix}..\end{pmatrix}', 'A + B'
                return self._fallback(gold, pred)
            return False
        if gk == "union":
            if pk == "union" and self._unordered(gold.items, pred.items):
                return True
            return self._fallback(gold, pred)
        return self._fallback(gold, pred)

    def _fallback(self, gold: Node, pred: Node) -> bool:
        """Different shapes (an inequality against an interval, merged unions): the symbolic checker."""
        if self.symbolic is None or not (symbolic_safe(gold.raw) and symbolic_safe(pred.raw)):
            return False
        if gold.kind in ("list", "set") and pred.kind == "leaf" or pred.kind in ("list", "set") and gold.kind == "leaf":
            return False  # a set of answers is never one answer
        return self.symbolic(Leaf(unwrap_text(gold.raw)), Leaf(unwrap_text(pred.raw)), None, None)

    def _ordered(self, gold: list, pred: list) -> bool:
        return len(gold) == len(pred) and all(self.equal(a, b) for a, b in zip(gold, pred))

    def _unordered(self, gold: list, pred: list) -> bool:
        """Multiset equality under `equal` (greedy matching; elements are distinct in practice)."""
        if len(gold) != len(pred):
            # duplicates do not change a set: {1, 1, 2} = {1, 2}
            gold, pred = _dedupe(gold), _dedupe(pred)
            if len(gold) != len(pred):
                return False
        used = [False] * len(pred)
        rest = []
        for a in gold:  # identical elements first: cheap, and keeps the greedy matching sound
            j = next((j for j, b in enumerate(pred) if not used[j] and _squash(a.raw) == _squash(b.raw)), None)
            if j is None:
                rest.append(a)
            else:
                used[j] = True
        for a in rest:
            for j, b in enumerate(pred):
                if not used[j] and self.equal(a, b):
                    used[j] = True
                    break
            else:
                return False
        return True


def _dedupe(nodes: list) -> list:
    seen, out = set(), []
    for n in nodes:
        key = _squash(n.raw)
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out


def _vector(node: Node) -> list | None:
    if node.kind != "matrix":
        return None
    if len(node.rows) == 1:
        return node.rows[0]
    if all(len(r) == 1 for r in node.rows):
        return [r[0] for r in node.rows]
    return None


def _scaled(value: Fraction, percent: bool):
    """A percent answer may be read as its number or as a fraction: 25% is 25 or 0.25."""
    yield value, 1
    if percent:
        yield value / 100, Fraction(1, 100)


def gold_to_text(answer) -> str:
    """Gold answer of any JSON type as text: 27.0 -> '27', ['$1$', '$2$'] -> '1, 2'."""
    if isinstance(answer, bool) or answer is None:
        raise ValueError(f"gold answer must be a string, a number or a list, got {answer!r}")
    if isinstance(answer, (list, tuple)):
        if not answer:
            raise ValueError("gold answer is an empty list")
        return ", ".join(gold_to_text(a) for a in answer)
    if isinstance(answer, float):
        if answer != answer or answer in (float("inf"), float("-inf")):
            raise ValueError(f"gold answer is not finite: {answer!r}")
        return str(int(answer)) if answer.is_integer() else repr(answer)
    if isinstance(answer, int):
        return str(answer)
    if isinstance(answer, str):
        return answer
    raise ValueError(f"gold answer must be a string, a number or a list, got {type(answer).__name__}")


def equivalent(gold: str, pred: str | None, symbolic: SymbolicEq | None = None, tolerance: float | None = None, answer_type: str | None = None) -> bool:
    """Whether the predicted answer string matches the gold answer string."""
    if pred is None:
        return False
    g, p = clean(gold), clean(pred)
    if not g or not p:
        return False
    if g == p:
        return True
    if len(p) > 4 * MAX_LEN:
        return False
    cmp = Comparator(symbolic, tolerance, answer_type)
    return cmp.equal(parse_structure(g), parse_structure(p))
