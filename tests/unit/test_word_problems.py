"""The word-problem task (trapo/data/word_problems.py, conf/data/word_problems.yaml)."""

import random
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from trapo.data import word_problems as wp
from trapo.data.loading import Item, load_dataset
from trapo.prefix import PARAGRAPH_BREAK
from trapo.rewards import last_boxed

ROOT = Path(__file__).resolve().parents[2]
EQ = re.compile(r"(\d+) ([-+×÷]) (\d+) = (\d+)")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b, "÷": lambda a, b: a / b}
NUMBER_WORDS = {"twice": 2, "three times": 3, "four times": 4, "five times": 5}


def _problems(n=300, seed=0):
    rng = random.Random(seed)
    return [wp.make_problem(rng, rng.randint(2, 4)) for _ in range(n)]


def test_deterministic_by_seed():
    a = wp.make_split(200, 2, 4, seed=7)
    assert a == wp.make_split(200, 2, 4, seed=7)
    assert [p.question for p in a] != [p.question for p in wp.make_split(200, 2, 4, seed=8)]


def test_gold_is_the_structure_recomputed_and_values_stay_integers():
    for p in _problems():
        x = p.start
        for op in p.ops:
            kind, *args = op
            if kind == "div":
                assert x % args[0] == 0, (p.question, op)
            x = {"add": lambda: x + args[0], "sub": lambda: x - args[0], "mul": lambda: x * args[0],
                 "div": lambda: x // args[0], "packs_add": lambda: x + args[0] * args[1],
                 "packs_sub": lambda: x - args[0] * args[1]}[kind]()
            assert 0 <= x <= wp.MAX_VALUE, (p.question, op)
        assert p.answer == str(x) == str(wp.evaluate_ops(p.start, p.ops))


def test_question_states_each_step_and_solution_equations_check():
    for p in _problems():
        q = p.question
        assert re.search(rf"\b{p.start}\b", q) and q.endswith("?")
        x = p.start
        paragraphs = p.solution.split(PARAGRAPH_BREAK)
        assert len(paragraphs) == p.steps + 1
        for i, (op, para) in enumerate(zip(p.ops, paragraphs)):
            assert para.startswith(f"Step {i + 1}: ")
            for a in op[1:]:  # every number of the step is in the question, in words for "twice" etc.
                assert re.search(rf"\b{a}\b", q) or (op[0] == "mul" and any(
                    v == a and w in q for w, v in NUMBER_WORDS.items())), (q, op)
            eqs = EQ.findall(para)
            assert eqs and all(OPS[o](int(a), int(b)) == int(r) for a, o, b, r in eqs), para
            assert int(eqs[-1][0]) == x
            x = int(eqs[-1][3])
        assert str(x) == p.answer


@pytest.mark.parametrize("lo,hi", [(2, 2), (3, 3), (4, 4), (2, 4)])
def test_steps_in_range(lo, hi):
    ps = wp.make_split(150, lo, hi, seed=3)
    assert {p.steps for p in ps} == set(range(lo, hi + 1))
    assert all(len(p.ops) == p.steps for p in ps)


def test_solutions_end_in_the_boxed_gold():
    for p in _problems():
        last = p.solution.split(PARAGRAPH_BREAK)[-1]
        assert last == f"The answer is \\boxed{{{p.answer}}}."
        assert last_boxed(p.solution) == p.answer and p.solution.count("\\boxed") == 1


def test_wording_varies():
    ps = _problems(400)
    assert len({p.question.split()[0] for p in ps}) > 5
    assert len({re.search(r"How many (.+?) does", p.question).group(1) for p in ps}) > 5  # the thing counted
    assert {op[0] for p in ps for op in p.ops} == set(wp.KINDS)
    assert len({p.question for p in ps}) == len(ps)


def test_make_split_excludes():
    a = wp.make_split(100, 2, 3, seed=1)
    b = wp.make_split(100, 2, 3, seed=1, exclude={p.question for p in a[:50]})
    assert not {p.question for p in b} & {p.question for p in a[:50]}


def test_loader_branch_and_no_overlap():
    cfg = OmegaConf.load(ROOT / "conf/data/word_problems.yaml")
    cfg.train.n, cfg.valid.n, cfg.eval_n = 500, 50, 40
    ds = load_dataset(cfg)
    assert len(ds.train) == 500 and len(ds.valid) == 50 and set(ds.eval_splits) == {"steps2", "steps3", "steps4"}
    assert all(isinstance(it, Item) and it.solution and it.solution.endswith(f"\\boxed{{{it.answer}}}.")
               for it in ds.train + ds.valid)
    for name, items in ds.eval_splits.items():
        assert len(items) == 40
        steps = int(name[-1])
        assert all(it.solution.count("Step ") == steps for it in items), name
    sets = [{it.question for it in ds.train}, {it.question for it in ds.valid},
            *({it.question for it in v} for v in ds.eval_splits.values())]
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            assert not sets[i] & sets[j], (i, j)
    assert load_dataset(cfg).train == ds.train  # deterministic


def test_run_config_accepts_word_problems():
    from hydra import compose, initialize_config_dir

    from trapo.config import validate_config

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=word_problems", "model=smollm2"])
    assert cfg.data.kind == "word_problems" and cfg.data.reward == "boxed"
    validate_config(cfg)
