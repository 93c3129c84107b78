r"""Symbolic leaf comparison with sympy, through math-verify's LaTeX parser (latex2sympy2_extended).

Imported only inside the grader's worker processes, which run each item under a hard time limit.
Text never reaches ``eval``/``exec``/``sympify``: LaTeX is parsed by the ANTLR grammar, and the parser's
number tokens (which sympy would otherwise ``sympify`` from a string) are built here from ints.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

import sympy
from latex2sympy2_extended import latex2sympy2 as _l2s
from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, latex2sympy, normalize_latex
import math_verify.grader as _mv_grader
from math_verify.grader import should_treat_as_complex, verify

from evaluation.answer import Leaf, Num, numbers_equal

_NUMBER_TOKEN = re.compile(r"^(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$")
_NORMALIZE = NormalizationConfig(basic_latex=True, units=True, malformed_operators=True, nits=False, boxed="none", equations=False)


def safe_number(text: str) -> sympy.Number:
    """A sympy number from a numeric token without sympify: '025' -> 25, '1.50' -> 1.50, '4.5e3'."""
    t = text.replace(",", "").replace(" ", "")
    m = _NUMBER_TOKEN.match(t)
    if not m or not (m.group(1) or m.group(2)):
        raise ValueError(f"not a number token: {text[:40]!r}")
    whole, frac, exp = m.group(1) or "0", m.group(2), m.group(3)
    if frac is None and exp is None:
        return sympy.Integer(int(whole))
    if exp is not None and abs(int(exp)) > 400:
        raise ValueError("exponent too large")
    digits = len(whole.lstrip("0")) + len(frac or "")
    return sympy.Float(f"{whole}.{frac or '0'}e{exp or 0}", max(15, digits + 2))  # mpmath string parser


def _parse_number(self, text):  # replaces _Latex2Sympy.parse_number (sympy.Number(str) sympifies)
    return safe_number(text)


def _convert_number(number: str):  # replaces latex2sympy2.convert_number ('1,000' -> 1000)
    return safe_number(number)


_mv_grader.TIMEOUT_WARNING_SHOWN = True  # the worker process enforces the time limit
_l2s._Latex2Sympy.parse_number = _parse_number
_l2s.convert_number = _convert_number

_PY_FUNCS = re.compile(r"\bnp\.|\bmath\.|\bsympy\.")


def _latexish(s: str) -> str:
    """Python-flavoured gold answers (Minerva: 'np.arcsin(10/13)', '-1./3', 'exp{a*t}') as LaTeX."""
    s = _PY_FUNCS.sub("\\\\", s)
    s = s.replace("**", "^")
    s = re.sub(r"(?<![\\A-Za-z])(arcsin|arccos|arctan|sin|cos|tan|exp|log|ln|sqrt)(?=\s*[({])", r"\\\1", s)
    s = re.sub(r"(\d)\.(?!\d)", r"\1", s)  # '1./3'
    return s


_IMAGINARY = re.compile(r"(?<![A-Za-z\\])i(?![A-Za-z])")


def looks_complex(s: str) -> bool:
    """'1+2i', '2i\\sqrt{3}': an imaginary unit (math-verify's check misses '2i')."""
    return should_treat_as_complex(s) or bool(_IMAGINARY.search(s))


@lru_cache(maxsize=8192)
def to_sympy(s: str, complex_numbers: bool = False):
    """Parsed sympy object of a cleaned answer, or None."""
    text = normalize_latex(_latexish(s), _NORMALIZE)
    if not text:
        return None
    try:
        return latex2sympy(text, is_real=not complex_numbers, convert_degrees=False, normalization_config=None)
    except Exception:
        return None


def _as_number(expr) -> Fraction | None:
    """Exact or 40-digit value of a closed-form real expression, as a Fraction."""
    try:
        if not isinstance(expr, sympy.Expr) or expr.free_symbols:
            return None
        if isinstance(expr, sympy.Rational):
            return Fraction(int(expr.p), int(expr.q))
        val = sympy.N(expr, 40)
        if not val.is_real or not val.is_finite:
            return None
        return Fraction(str(val.evalf(40)))  # a decimal literal; Fraction parses it, no eval
    except Exception:
        return None


def _variants(expr, leaf: Leaf):
    yield expr
    try:
        if leaf.percent:
            yield expr / 100
        if leaf.degree:
            yield expr * sympy.pi / 180
    except Exception:
        return


RELATIVE_EXACT = sympy.Float("1e-20")  # closed forms equal to 30 digits up to this relative gap are equal
IRRATIONAL_DIGITS = Fraction(1, 10**5)  # a decimal for an irrational gold: rounding step <= 1e-5 of its size


def _with_imaginary_unit(expr):
    """The parser keeps `i` a symbol; in a complex answer it is sympy's I ('i(2-i)' is 1+2i)."""
    try:
        unit = {s: sympy.I for s in expr.free_symbols if s.name == "i"}
        return expr.xreplace(unit) if unit else expr
    except Exception:
        return expr


def _closed_form(expr) -> bool:
    return isinstance(expr, sympy.Expr) and not expr.free_symbols and not expr.has(sympy.Float)


def values_differ(g, p) -> bool:
    """Two exact closed-form numbers that differ beyond float precision (1/2004! and 1/2006!, or 10^20 and
    10^20 + 1/6), which verify's floating-point comparison takes as equal."""
    if not (_closed_form(g) and _closed_form(p)):
        return False
    if g.is_Rational and p.is_Rational:
        return g != p
    try:
        diff = sympy.Abs(sympy.N(g - p, 30))
        scale = sympy.Max(sympy.Abs(sympy.N(g, 30)), sympy.Abs(sympy.N(p, 30)))
        return bool(diff > 0) if scale == 0 else bool(diff > RELATIVE_EXACT * scale)
    except Exception:
        return False



def equations_equal(g, p) -> bool:
    """Equations equal up to rearrangement: lhs - rhs proportional ('2x+4y-3=0', 'y=-x/2+3/4')."""
    if not (isinstance(g, sympy.Equality) and isinstance(p, sympy.Equality)):
        return False
    a, b = g.lhs - g.rhs, p.lhs - p.rhs
    if a == 0 or b == 0 or not a.free_symbols:
        return False
    ratio = sympy.simplify(a / b)
    return bool(ratio.is_number and ratio.is_finite and ratio != 0)


def _has_branch(expr) -> bool:
    """Roots, fractional powers or logs: values that depend on the sign of the unknowns."""
    return expr.has(sympy.log) or any(isinstance(e, sympy.Pow) and not e.exp.is_integer for e in sympy.preorder_traversal(expr))


_NEGATIVE_POINTS = (sympy.Rational(-7, 10), sympy.Rational(-19, 10))


def positive_equal(g, p) -> bool:
    """Equal when every unknown is positive ('\\sqrt{1/n}' and '1/\\sqrt n'), and at negative points wherever
    both sides are real they agree (so '\\sqrt{x^2}' is not 'x')."""
    if not (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr)):
        return False
    unknowns = g.free_symbols | p.free_symbols
    if not unknowns or len(unknowns) > 3 or not (_has_branch(g) or _has_branch(p)):
        return False
    positive = {s: sympy.Dummy(s.name, positive=True) for s in unknowns}
    if sympy.simplify(g.xreplace(positive) - p.xreplace(positive)) != 0:
        return False
    for value in _NEGATIVE_POINTS:
        point = {s: value for s in unknowns}
        try:
            gv, pv = complex(g.evalf(20, subs=point)), complex(p.evalf(20, subs=point))
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        if abs(gv.imag) < 1e-12 and abs(pv.imag) < 1e-12 and abs(gv - pv) > 1e-9 * max(1.0, abs(gv)):
            return False
    return True


def symbolic_equal(gold: Leaf, pred: Leaf, gold_num: Num | None, pred_num: Num | None) -> bool:
    """sympy equivalence of two leaves, with the decimal rounding rules of `numbers_equal`."""
    cplx = looks_complex(gold.text) or looks_complex(pred.text)  # parse both alike: i is I or a symbol
    G, P = to_sympy(gold.text, cplx), to_sympy(pred.text, cplx)
    if G is None or P is None:
        return False
    if cplx:
        G, P = _with_imaginary_unit(G), _with_imaginary_unit(P)
    try:
        if positive_equal(G, P):  # before verify, which can take seconds on roots of several unknowns
            return True
    except Exception:
        pass
    for g in _variants(G, gold):
        for p in _variants(P, pred):
            try:
                if verify(g, p, timeout_seconds=None, allow_set_relation_comp=True) and not values_differ(g, p):
                    return True
            except Exception:
                pass
    try:
        if equations_equal(G, P):
            return True
    except Exception:
        pass
    # A decimal literal on one side, a closed form on the other: the literal's exact value and
    # precision (not a binary float) decide. An irrational gold is matched only by a decimal of six or
    # more significant digits (1.41421 for \\sqrt2), never by a short rounding (1.732 for \\sqrt3).
    if gold_num is not None and gold_num.quantum is not None and not P.has(sympy.Float):
        pv = _as_number(P)
        if pv is not None and numbers_equal(gold_num, Num(pv)):
            return True
    if pred_num is not None and pred_num.quantum is not None:
        gv = _as_number(G)
        precise = isinstance(G, sympy.Rational) or (gv is not None and pred_num.quantum <= IRRATIONAL_DIGITS * abs(gv))
        if gv is not None and precise and numbers_equal(Num(gv), pred_num):
            return True
    return False
