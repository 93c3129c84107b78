import random
import re

import pytest

from trapo.data.synthetic import make_problem, make_split, pretraining_corpus
from trapo.rewards import BoxedExactMatch, last_boxed


EQ = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
TERSE_EQ = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


def _check_working(paragraphs, eq, start):
    value = start
    for line in paragraphs:
        eqs = eq.findall(line)
        assert 1 <= len(eqs) <= 2, line
        for a, op, b, result in eqs:
            assert OPS[op](int(a), int(b)) == int(result), line
        if len(eqs) == 2:  # a packs step: b * a = total, then value + total
            assert int(eqs[1][0]) == value and eqs[1][1] == "+" and int(eqs[1][2]) == int(eqs[0][3])
        else:
            assert int(eqs[0][0]) == value
        value = int(eqs[-1][3])
        assert 0 <= value <= 99
    return value


@pytest.mark.parametrize("skill", [False, True])
def test_solutions_are_correct_and_structured(skill):
    rng = random.Random(0)
    for steps in range(1, 8):
        for _ in range(50):
            p = make_problem(rng, steps, skill=skill)
            start = int(re.match(r"\w+ has (\d+)", p.question).group(1))
            for text, eq in ((p.solution, EQ), (p.base_solution, TERSE_EQ)):
                paras = text.split("\n\n")
                assert len(paras) == steps + 1 and p.steps == steps and p.skill == skill
                assert _check_working(paras[:-1], eq, start) == int(p.answer)
                assert last_boxed(text) == p.answer
            assert ("packs of" in p.question) == skill
            assert p.solution.endswith(f"\n\n\\boxed{{{p.answer}}}")
            assert p.base_solution.endswith(f"\\boxed{{{p.answer}}}") and " = " not in p.base_solution


def test_folded_solution_writes_the_skill_step_as_a_known_step():
    rng = random.Random(3)
    for skill in (False, True):
        for _ in range(50):
            p = make_problem(rng, 3, skill=skill)
            base, folded = p.base_solution.split("\n\n"), p.folded_solution.split("\n\n")
            assert folded[1:] == base[1:] and last_boxed(p.folded_solution) == p.answer
            if not skill:
                assert folded == base
                continue
            (_, _, _, total), (x, _, _, value) = TERSE_EQ.findall(base[0])  # b*a=total, x+total=value
            m = re.fullmatch(r"Gets (\d+) more: (\d+)\+(\d+)=(\d+)", folded[0])
            assert m, folded[0]
            assert m.groups() == (total, x, total, value)


def test_pretraining_corpus_has_direct_answers_and_no_skill():
    corpus = pretraining_corpus(2000, 1, 3, seed=0, direct_frac=0.3)
    direct = [r for _, r in corpus if r.startswith("\\boxed")]
    assert 0.25 < len(direct) / len(corpus) < 0.35
    assert not any("packs of" in q for q, _ in corpus)
    assert all(" = " not in r for _, r in corpus)  # the base never sees the reference style
    assert pretraining_corpus(50, 1, 2, seed=0, direct_frac=0.0) == [
        (p.question, p.base_solution) for p in make_split(50, 1, 2, seed=0)]
    with pytest.raises(ValueError, match="direct_frac"):
        pretraining_corpus(5, 1, 2, seed=0, direct_frac=1.5)


def test_careless_direct_answers_are_wrong_and_leave_the_rest_alone():
    clean = pretraining_corpus(2000, 1, 3, seed=0, direct_frac=0.5)
    noisy = pretraining_corpus(2000, 1, 3, seed=0, direct_frac=0.5, direct_error_frac=0.75)
    answers = {p.question: int(p.answer) for p in make_split(2000, 1, 3, seed=0)}
    wrong = 0
    for (q, r), (q2, r2) in zip(clean, noisy):
        assert q == q2
        if not r.startswith("\\boxed"):
            assert r2 == r  # working is never touched
            continue
        given = int(re.fullmatch(r"\\boxed\{(\d+)\}", r2).group(1))
        assert 0 < abs(given - answers[q]) <= 5 or given == answers[q]
        wrong += given != answers[q]
    assert 0.70 < wrong / sum(r.startswith("\\boxed") for _, r in clean) < 0.80
    assert pretraining_corpus(300, 1, 2, seed=3, direct_frac=0.5, direct_error_frac=0.0) == \
        pretraining_corpus(300, 1, 2, seed=3, direct_frac=0.5)  # the knob at 0 leaves the corpus as it was
    with pytest.raises(ValueError, match="direct_error_frac"):
        pretraining_corpus(5, 1, 2, seed=0, direct_frac=0.5, direct_error_frac=-0.1)


def test_skill_fraction():
    s = make_split(400, 2, 3, seed=4, skill_frac=0.4)
    frac = sum(p.skill for p in s) / len(s)
    assert 0.33 < frac < 0.47
    assert all(p.skill for p in make_split(20, 2, 2, seed=4, skill_frac=1.0))
    assert not any(p.skill for p in make_split(20, 2, 2, seed=4))


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
