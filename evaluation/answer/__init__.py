r"""Answer normalisation, exact numbers and answer structures, in pure Python (no sympy, no eval).
The layers below are one module each: `text`, `structures`, `numeric`, `leaves`, `compare`.

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

from evaluation.answer.compare import Comparator, SymbolicEq, equivalent, gold_to_text
from evaluation.answer.leaves import Leaf
from evaluation.answer.numeric import Num, numbers_equal, parse_number
from evaluation.answer.structures import Node, parse_structure
from evaluation.answer.text import clean

__all__ = ["Comparator", "Leaf", "Node", "Num", "SymbolicEq", "clean", "equivalent", "gold_to_text", "numbers_equal",
           "parse_number", "parse_structure"]
