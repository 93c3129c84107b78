"""Exact numbers in answers: integers, decimals with their precision, fractions, mixed and repeating
decimals, scientific notation; and when a gold number and a predicted one are equal."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from evaluation.answer.text import balanced


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
    while t.startswith("{") and t.endswith("}") and balanced(t[1:-1]):
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
