import random
import re

import pytest

from trapo.data.synthetic import make_problem, make_split
from trapo.rewards import BoxedExactMatch, last_boxed


def test_solution_is_correct_and_structured():
    rng = random.Random(0)
    for steps in range(1, 8):
        for _ in range(50):
            p = make_problem(rng, steps)
            paras = p.solution.split("\n\n")
            assert len(paras) == steps + 1 and p.steps == steps
            value = int(re.match(r"\w+ has (\d+)", p.question).group(1))
            for line in paras[:-1]:
                expr, result = line.split(": ")[1].split("=")
                a, op, b = re.fullmatch(r"(\d+)([-+*/])(\d+)", expr).groups()
                assert int(a) == value
                value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b), "/": int(a) // int(b)}[op]
                assert value == int(result) and 0 <= value <= 99
            assert last_boxed(p.solution) == p.answer == str(value)


def test_split_is_deterministic_distinct_and_excludes():
    a = make_split(200, 3, 4, seed=5)
    b = make_split(200, 3, 4, seed=5)
    assert a == b
    assert len({p.question for p in a}) == 200
    c = make_split(50, 3, 4, seed=6, exclude={p.question for p in a})
    assert not {p.question for p in c} & {p.question for p in a}
    assert {p.steps for p in a} == {3, 4}


def test_weights_bias_difficulty():
    s = make_split(400, 1, 3, seed=1, weights=[0.0, 0.0, 1.0])
    assert {p.steps for p in s} == {3}
    with pytest.raises(ValueError, match="weights"):
        make_split(10, 1, 3, seed=1, weights=[1.0])


def test_reference_solutions_get_full_reward():
    s = make_split(100, 1, 6, seed=2)
    assert BoxedExactMatch()([p.solution for p in s], [p.answer for p in s]) == [1.0] * 100
    assert BoxedExactMatch()(["\\boxed{3}", "no box", "\\boxed{4} then \\boxed{5}"], ["3", "3", "4"]) == [1.0, 0.0, 0.0]
