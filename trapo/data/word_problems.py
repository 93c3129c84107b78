r"""Grade-school word problems in natural English, for a small real LM (issue 26, item 2).

GSM8K-like wording: a person, a thing counted in some unit, and 2-4 steps that change the amount (add,
subtract, multiply, divide, and "packs" steps that multiply then add or subtract), each step one sentence of the
question. Every intermediate value is a non-negative integer and every division is exact. The gold answer is the
final amount.

The reference solution is written in a fixed **teacher style** that differs from what an instruct model writes
on its own: numbered steps, one paragraph each (separated by "\n\n", where expert prefixes snap,
trapo/prefix.py), the equation written with the signs × and ÷, and a fixed last line:

    Step 1: Maya starts with 24 stickers and buys 3 packs of 6 stickers. 3 × 6 = 18 and 24 + 18 = 42.
    Maya now has 42 stickers.

    Step 2: Maya shares them equally among 7 albums and keeps one album. 42 ÷ 7 = 6. Maya now has 6 stickers.

    The answer is \boxed{6}.

`Problem.ops` keeps each step's structure (kind and numbers), so the gold can be recomputed without parsing text
(`evaluate_ops`). Everything is deterministic given the seed; no downloads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from trapo.data.synthetic import draw_distinct

GENERATOR_VERSION = 1

# name, subject pronoun, possessive
PEOPLE = [
    ("Maya", "she", "her"), ("Liam", "he", "his"), ("Olivia", "she", "her"), ("Noah", "he", "his"),
    ("Emma", "she", "her"), ("Lucas", "he", "his"), ("Sofia", "she", "her"), ("Ethan", "he", "his"),
    ("Chloe", "she", "her"), ("Mason", "he", "his"), ("Priya", "she", "her"), ("Diego", "he", "his"),
    ("Hannah", "she", "her"), ("Omar", "he", "his"), ("Grace", "she", "her"), ("Jamal", "he", "his"),
    ("Aisha", "she", "her"), ("Carlos", "he", "his"), ("Nora", "she", "her"), ("Kenji", "he", "his"),
    ("Lily", "she", "her"), ("Samuel", "he", "his"), ("Zara", "she", "her"), ("Henry", "he", "his"),
]
FRIENDS = ["her brother", "his sister", "a neighbor", "a classmate", "her cousin", "his cousin", "a friend",
           "the teacher", "her aunt", "his uncle"]
# (what is counted, the container for packs steps, where things are shared)
THINGS = [
    ("stickers", "packs", "albums"), ("marbles", "bags", "jars"), ("cookies", "boxes", "plates"),
    ("pencils", "boxes", "cups"), ("apples", "baskets", "bowls"), ("seashells", "buckets", "boxes"),
    ("stamps", "sheets", "folders"), ("beads", "bags", "necklaces"), ("cupcakes", "trays", "tables"),
    ("trading cards", "packs", "binders"), ("eggs", "cartons", "bowls"), ("crayons", "boxes", "cups"),
    ("dollars", "envelopes", "piggy banks"), ("meters of ribbon", "rolls", "gift bags"),
    ("liters of juice", "bottles", "pitchers"), ("pages of notes", "notebooks", "folders"),
]
MAX_VALUE = 500
MIN_MAX_VALUE = 60   # starts are drawn from [5, 60]
KINDS = ("add", "sub", "mul", "div", "packs_add", "packs_sub")


@dataclass(frozen=True)
class Problem:
    question: str
    solution: str   # the teacher-style reference solution, ending in "The answer is \boxed{N}."
    answer: str
    steps: int
    start: int
    ops: tuple      # ((kind, a) or (kind, a, b), ...) per step: evaluate_ops(start, ops) is the answer


def apply_op(x: int, op: tuple) -> int:
    kind = op[0]
    if kind == "add":
        return x + op[1]
    if kind == "sub":
        return x - op[1]
    if kind == "mul":
        return x * op[1]
    if kind == "div":
        if x % op[1]:
            raise ValueError(f"{x} is not divisible by {op[1]}")
        return x // op[1]
    if kind == "packs_add":
        return x + op[1] * op[2]
    if kind == "packs_sub":
        return x - op[1] * op[2]
    raise ValueError(f"unknown operation {kind!r}")


def evaluate_ops(start: int, ops) -> int:
    x = start
    for op in ops:
        x = apply_op(x, op)
    return x


def _choose_op(rng: random.Random, x: int, max_value: int) -> tuple:
    """One operation valid for x: the result is an integer in [0, max_value], divisions exact."""
    options = []
    k = rng.randint(2, 30)
    if x + k <= max_value:
        options.append(("add", k))
    if k < x:
        options.append(("sub", k))
    m = rng.randint(2, 5)
    if 0 < x * m <= max_value:
        options.append(("mul", m))
    divisors = [d for d in range(2, 10) if x % d == 0 and x // d >= 2]
    if divisors:
        options.append(("div", rng.choice(divisors)))
        options.append(("div", rng.choice(divisors)))  # as likely as the others together with its twin
    a, b = rng.randint(2, 6), rng.randint(2, 12)
    if x + a * b <= max_value:
        options.append(("packs_add", a, b))
    if a * b < x:
        options.append(("packs_sub", a, b))
    return rng.choice(options)


def _sentence(rng: random.Random, op: tuple, who: tuple, thing: tuple, friend: str) -> str:
    name, he, his = who
    noun, pack, place = thing
    then = rng.choice(["", "Then ", "After that, ", "Later, ", "Next, "])
    subj = rng.choice([name, he])
    subj = subj if then else subj[0].upper() + subj[1:]
    kind = op[0]
    if kind == "add":
        return rng.choice([f"{then}{subj} gets {op[1]} more {noun} from {friend}.",
                           f"{then}{subj} buys {op[1]} more {noun}.",
                           f"{then}{subj} finds {op[1]} more {noun}."])
    if kind == "sub":
        return rng.choice([f"{then}{subj} gives {op[1]} {noun} to {friend}.",
                           f"{then}{subj} uses {op[1]} {noun}.",
                           f"{then}{subj} loses {op[1]} {noun}."])
    if kind == "mul":
        times = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}[op[1]]
        return rng.choice([f"{then}{subj} ends up with {times} as many {noun} as before.",
                           f"{then}the number of {noun} {he} has grows to {times} what it was."
                           if then else f"The number of {noun} {he} has grows to {times} what it was."])
    if kind == "div":
        return rng.choice([f"{then}{subj} shares the {noun} equally among {op[1]} {place} and keeps one of "
                           f"the {place}.",
                           f"{then}{subj} splits {his} {noun} into {op[1]} equal groups and keeps only one group."])
    if kind == "packs_add":
        return f"{then}{subj} buys {op[1]} {pack} with {op[2]} {noun} in each."
    if kind == "packs_sub":
        return f"{then}{subj} gives away {op[1]} {pack} with {op[2]} {noun} in each."
    raise ValueError(kind)


def _working(op: tuple, x: int, y: int, who: tuple, thing: tuple, friend: str) -> str:
    """The teacher's sentence and equation(s) for one step that takes x to y."""
    name, _, his = who
    noun, pack, place = thing
    kind = op[0]
    if kind == "add":
        return f"{name} adds the {op[1]} new {noun}. {x} + {op[1]} = {y}."
    if kind == "sub":
        return f"{name} takes away the {op[1]} {noun}. {x} - {op[1]} = {y}."
    if kind == "mul":
        return f"{name} multiplies the amount by {op[1]}. {x} × {op[1]} = {y}."
    if kind == "div":
        return f"{name} divides the {noun} into {op[1]} equal parts. {x} ÷ {op[1]} = {y}."
    if kind == "packs_add":
        return (f"{name} gets {op[1]} {pack} of {op[2]} {noun}. {op[1]} × {op[2]} = {op[1] * op[2]} and "
                f"{x} + {op[1] * op[2]} = {y}.")
    if kind == "packs_sub":
        return (f"{name} gives away {op[1]} {pack} of {op[2]} {noun}. {op[1]} × {op[2]} = {op[1] * op[2]} and "
                f"{x} - {op[1] * op[2]} = {y}.")
    raise ValueError(kind)


def make_problem(rng: random.Random, steps: int, max_value: int = MAX_VALUE) -> Problem:
    """One problem of `steps` operations (each one sentence of the question and one paragraph of the solution)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if max_value < MIN_MAX_VALUE:  # a start amount up to 60 must leave some step possible
        raise ValueError(f"max_value must be >= {MIN_MAX_VALUE}, got {max_value}")
    who = rng.choice(PEOPLE)
    thing = rng.choice(THINGS)
    friend = rng.choice([f for f in FRIENDS if not f.startswith(("her ", "his ")) or f.startswith(who[2] + " ")])
    name, he, his = who
    noun = thing[0]
    start = rng.randint(5, 60)
    x, ops, sentences, paragraphs = start, [], [], []
    opening = rng.choice([f"{name} has {start} {noun}.", f"{name} starts the week with {start} {noun}.",
                          f"At the start of the day, {name} has {start} {noun}."])
    for i in range(steps):
        op = _choose_op(rng, x, max_value)
        y = apply_op(x, op)
        ops.append(op)
        sentences.append(_sentence(rng, op, who, thing, friend))
        paragraphs.append(f"Step {i + 1}: {_working(op, x, y, who, thing, friend)} {name} now has {y} {noun}.")
        x = y
    ask = rng.choice([f"How many {noun} does {name} have now?", f"How many {noun} does {name} have at the end?",
                      f"How many {noun} does {name} have left?"])
    question = " ".join([opening, *sentences, ask])
    solution = "\n\n".join([*paragraphs, f"The answer is \\boxed{{{x}}}."])
    return Problem(question, solution, str(x), steps, start, tuple(ops))


def make_split(n: int, min_steps: int, max_steps: int, seed: int, exclude: set[str] | None = None,
               max_value: int = MAX_VALUE) -> list[Problem]:
    """`n` distinct problems with steps drawn uniformly from [min_steps, max_steps]; questions in `exclude`
    (e.g. the training set's) are skipped, so no evaluation prompt is a training prompt."""
    if n < 0 or min_steps < 1 or max_steps < min_steps:
        raise ValueError(f"bad split spec: n={n}, steps=[{min_steps}, {max_steps}]")
    rng = random.Random(seed)
    return draw_distinct(lambda: make_problem(rng, rng.randint(min_steps, max_steps), max_value=max_value), n,
                         exclude, f"{min_steps}-{max_steps} steps")
