"""Answer text: cleaning (LaTeX noise removed; degrees, percents and "and"/"or" made uniform) and bracket
scanning, which every later layer uses."""

from __future__ import annotations

import re
from functools import lru_cache

MAX_LEN = 2000  # longer answers are only compared as text
MAX_ITEMS = 64  # larger collections are only compared as text


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


# brackets: `\{ \}` are braces, `\langle \rangle` parentheses


def scan(s: str):
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


def balanced(s: str) -> bool:
    depth = 0
    for _, c, _, _ in scan(s):
        if c in ("(", "[", "{", "\\{"):
            depth += 1
        elif c in (")", "]", "}", "\\}"):
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def squash(s: str) -> str:
    return re.sub(r"\s+", "", s)
