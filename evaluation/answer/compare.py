"""Structural comparison of a gold and a predicted answer (`equivalent`); gold answers of any JSON type as text."""

from __future__ import annotations

from fractions import Fraction
from typing import Callable

from evaluation.answer.leaves import (Leaf, has_equals, parse_time, same_unknown, symbolic_safe, text_key, times_equal,
                                      unwrap_text)
from evaluation.answer.numeric import Num, numbers_equal, parse_number
from evaluation.answer.structures import Node, parse_structure, split_assignment
from evaluation.answer.text import MAX_LEN, clean, squash


SymbolicEq = Callable[[Leaf, Leaf, Num | None, Num | None], bool]


class Comparator:
    """Structural comparison; leaves that need algebra go to `symbolic` (None: text and numbers only)."""

    def __init__(self, symbolic: SymbolicEq | None = None, tolerance: float | None = None, answer_type: str | None = None):
        self.symbolic = symbolic
        self.tolerance = tolerance
        self.answer_type = (answer_type or "").lower()

    # -- leaves
    def leaf_equal(self, gold: str, pred: str) -> bool:
        if squash(gold) == squash(pred):
            return True
        g_time, p_time = parse_time(gold), parse_time(pred)
        if g_time is not None and p_time is not None:
            return times_equal(g_time, p_time)
        g_lhs, g_rhs = split_assignment(gold)
        p_lhs, p_rhs = split_assignment(pred)
        if g_lhs is not None and p_lhs is not None:
            if same_unknown(g_lhs, p_lhs):  # 'x = 5', 'x = 10/2'; 'f(x) = 2x', 'y = 2x'
                return self._leaf_values_equal(Leaf.of(g_rhs), Leaf.of(p_rhs))
        elif p_lhs is not None and not has_equals(gold):  # gold '5', pred 'x = 5'
            return self._leaf_values_equal(Leaf.of(gold), Leaf.of(p_rhs))
        elif g_lhs is not None and not has_equals(pred):  # gold 'f(x)=2x', pred '2x'
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
            if squash(unwrap_text(g.text)) == squash(unwrap_text(p.text)):
                return True
            # one side is words, the other is not: equal only symbolically (e.g. '\text{5}')
            if (gt is not None and len(gt) > 1) or (pt is not None and len(pt) > 1):
                return False
        g_text, p_text = unwrap_text(g.text), unwrap_text(p.text)
        if squash(g_text) == squash(p_text):
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
        if squash(gold.raw) == squash(pred.raw):
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
            j = next((j for j, b in enumerate(pred) if not used[j] and squash(a.raw) == squash(b.raw)), None)
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
        key = squash(n.raw)
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
