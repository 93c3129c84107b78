"""Answer structures as a tree: sets (order free), bare lists (order free), bracketed sequences (tuples and
intervals), matrices, unions, and leaves; `x = 5` style assignments."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from evaluation.answer.text import MAX_ITEMS, MAX_LEN, balanced, scan


_MATRIX_RE = re.compile(r"^\\begin\{([pbBvV]?matrix|smallmatrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.S)


def _split_top(s: str, seps: str = ",;") -> list[str]:
    parts, last = [], 0
    for i, c, d, _ in scan(s):
        if d == 0 and c in seps and len(c) == 1:
            parts.append(s[last:i])
            last = i + 1
    parts.append(s[last:])
    return [p.strip() for p in parts]


def _split_top_word(s: str, word: str) -> list[str]:
    parts, last = [], 0
    for i, c, d, _ in scan(s):
        if d == 0 and c == "\\" and s.startswith(word, i) and not s[i + len(word) : i + len(word) + 1].isalpha():
            parts.append(s[last:i])
            last = i + len(word)
    parts.append(s[last:])
    return [p.strip() for p in parts]


def _outer(s: str) -> tuple[str, str, str] | None:
    """(open, inner, close) when one bracket pair encloses all of `s`; \\langle..\\rangle reads as (..)."""
    first = None
    for i, c, d, n in scan(s):
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
    if depth > 8 or len(s) > MAX_LEN or not balanced(s):
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
    pm = [i for i, c, d, _ in scan(s) if c == "\\" and (s.startswith("\\pm", i) or s.startswith("\\mp", i))]
    if len(pm) == 1 and not s[pm[0] + 3 : pm[0] + 4].isalpha():
        i = pm[0]
        a, b = ("+", "-") if s.startswith("\\pm", i) else ("-", "+")
        plus, minus = s[:i] + a + s[i + 3 :], s[:i] + b + s[i + 3 :]
        return Node("list", s, [parse_structure(plus.strip(), depth + 1), parse_structure(minus.strip(), depth + 1)])
    return Node("leaf", s)


_ASSIGN_LHS = re.compile(
    r"^(?:[A-Za-z](?:_(?:\{[^{}]*\}|[A-Za-z0-9]))?'*|\\[A-Za-z]+(?:_(?:\{[^{}]*\}|[A-Za-z0-9]))?"
    r"|[A-Za-z]+\s*\(\s*[A-Za-z](?:\s*,\s*[A-Za-z])*\s*\)|\(\s*[A-Za-z](?:\s*,\s*[A-Za-z])+\s*\))$"
)


def split_assignment(s: str) -> tuple[str | None, str]:
    """('x', '5') for 'x = 5' and 'f(x)=2x'; (None, s) when `s` is not a simple assignment."""
    eqs = [i for i, c, d, _ in scan(s) if c == "=" and d == 0]
    if len(eqs) == 0:
        return None, s
    lhs = s[: eqs[0]].strip()
    rhs = s[eqs[-1] + 1 :].strip()
    if lhs and rhs and _ASSIGN_LHS.match(lhs) and s[eqs[0] - 1 : eqs[0]] not in "<>!":
        return re.sub(r"\s+", "", lhs), rhs
    return None, s
