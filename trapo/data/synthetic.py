"""The embedded task: multi-step arithmetic word problems with integer answers.

Each problem starts a count and applies `steps` operations to it. Three kinds of text exist for a problem,
and the miniature's behaviour comes from the differences between them (docs/miniature.md says why):

- the **reference solution** (`Problem.solution`), the "expert" the post-training data carries: one
  sentence per step, separated by blank lines (the paragraph breaks expert prefixes snap to), in its own
  style (spaces around operators):

      Q: Mia has 7 eggs. Buys 2 packs of 4. Gives away 3. How many eggs?
      A: Buys 2 packs of 4: 4 * 2 = 8, 7 + 8 = 15

         Gives away 3: 15 - 3 = 12

         \\boxed{12}

- the **base model's own style** (`Problem.base_solution`), what the tiny base model is pretrained on:
  terse equations (``Gives away 3: 15-3=12``) and a bare ``\\boxed{12}``;
- a **direct answer** (``\\boxed{12}`` alone): part of the pretraining corpus answers without working,
  as web text often does. The base model therefore often guesses, and its guesses are right on 1-step
  problems only: working step by step is a behaviour RL can select.

A **skill** problem (`skill=True`) begins with a "packs" step (``Buys 2 packs of 4.``) that never occurs in
pretraining: the base model cannot solve it, the reference solutions show how, and an expert prefix that
covers the first paragraph makes the rest of the problem routine. Difficulty is the number of steps.
Everything is deterministic given the seed.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

GENERATOR_VERSION = 4  # bump when the text format changes: it is part of the tiny model's cache key

NAMES = ["Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Ben", "Eva", "Tom", "Amy", "Dan"]
ITEMS = ["eggs", "pens", "coins", "cards", "books", "shells", "apples", "stamps", "marbles", "cups"]
MAX_VALUE = 99  # default: every intermediate value stays in [0, max_value], two-digit arithmetic


@dataclass(frozen=True)
class Problem:
    question: str
    solution: str        # the reference ("expert") solution, in the reference style
    answer: str
    steps: int
    skill: bool = False  # starts with a packs step, a skill absent from pretraining
    base_solution: str = ""  # the same working in the base model's own style
    folded_solution: str = ""  # the base's style, with the skill step folded into one it knows ("Gets 8 more")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Step:
    sentence: str   # in the question: "Gives away 3."
    terse: str      # base style: "Gives away 3: 12-3=9"
    spelled: str    # reference style: "Gives away 3: 12 - 3 = 9"
    value: int
    folded: str = ""  # the skill step written as a step the base knows, "Gets 8 more: 7+8=15" ("" = terse)


def _step(sentence: str, x: int, op: str, k: int, value: int) -> Step:
    return Step(sentence, f"{sentence[:-1]}: {x}{op}{k}={value}", f"{sentence[:-1]}: {x} {op} {k} = {value}", value)


def _operation(rng: random.Random, x: int, max_value: int) -> Step:
    """One ordinary step, chosen among the operations valid for x."""
    ops = []
    k = rng.randint(2, 9)
    if x + k <= max_value:
        ops.append((f"Gets {k} more.", "+", k, x + k))
    if x - k >= 0:
        ops.append((f"Gives away {k}.", "-", k, x - k))
    if 2 * x <= max_value:
        ops.append(("Doubles them.", "*", 2, 2 * x))
    if 3 * x <= max_value and x > 0:
        ops.append(("Triples them.", "*", 3, 3 * x))
    if x % 2 == 0 and x > 0:
        ops.append(("Halves them.", "/", 2, x // 2))
    sentence, op, k, value = rng.choice(ops)
    return _step(sentence, x, op, k, value)


def _packs(rng: random.Random, x: int, max_value: int) -> Step:
    """The skill step: "Buys a packs of b." adds a*b (a in 2..3), which the working writes as two equations."""
    a, b = rng.randint(2, 3), rng.randint(2, 9)
    while x + a * b > max_value and b > 1:
        a, b = 2, b - 1
    sentence = f"Buys {a} packs of {b}."
    total, value = a * b, x + a * b
    return Step(sentence, f"{sentence[:-1]}: {b}*{a}={total}, {x}+{total}={value}",
                f"{sentence[:-1]}: {b} * {a} = {total}, {x} + {total} = {value}", value,
                f"Gets {total} more: {x}+{total}={value}")


def make_problem(rng: random.Random, steps: int, skill: bool = False, max_value: int = MAX_VALUE) -> Problem:
    if steps < 1:
        raise ValueError(f"a problem needs at least one step, got {steps}")
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    x = rng.randint(2, min(20, max_value // 2))
    sentences, done = [f"{name} has {x} {item}."], []
    for i in range(steps):
        st = _packs(rng, x, max_value) if skill and i == 0 else _operation(rng, x, max_value)
        x = st.value
        sentences.append(st.sentence)
        done.append(st)
    sentences.append(f"How many {item}?")
    solution = "\n\n".join([s.spelled for s in done] + [f"\\boxed{{{x}}}"])
    base_solution = "\n\n".join([s.terse for s in done] + [f"\\boxed{{{x}}}"])
    folded_solution = "\n\n".join([s.folded or s.terse for s in done] + [f"\\boxed{{{x}}}"])
    return Problem(" ".join(sentences), solution, str(x), steps, skill, base_solution, folded_solution)


def direct_answer(p: Problem) -> str:
    """The answer without working, as a share of the pretraining corpus gives it."""
    return f"\\boxed{{{p.answer}}}"


def careless_answer(p: Problem, rng: random.Random, max_value: int = MAX_VALUE) -> str:
    """A bare answer that is off by 1-5, as unchecked answers often are (never the right one, never < 0)."""
    x, d = int(p.answer), rng.randint(1, 5)
    wrong = x + d if x - d < 0 or (x + d <= max_value and rng.random() < 0.5) else x - d
    return f"\\boxed{{{wrong}}}"


def make_split(n: int, min_steps: int, max_steps: int, seed: int, exclude: set[str] | None = None,
               weights: list[float] | None = None, skill_frac: float = 0.0, max_value: int = MAX_VALUE) -> list[Problem]:
    """`n` distinct problems with difficulty drawn from [min_steps, max_steps] (uniformly, or by `weights`);
    a share `skill_frac` of them are skill problems (a packs first step).

    Questions in `exclude` (e.g. the training set's) are skipped, so evaluation never sees a training prompt.
    """
    if n < 0 or min_steps < 1 or max_steps < min_steps:
        raise ValueError(f"bad split spec: n={n}, steps=[{min_steps}, {max_steps}]")
    if weights is not None and len(weights) != max_steps - min_steps + 1:
        raise ValueError(f"weights needs one entry per difficulty {min_steps}..{max_steps}, got {weights}")
    if not 0.0 <= skill_frac <= 1.0:
        raise ValueError(f"skill_frac must lie in [0, 1], got {skill_frac}")
    rng = random.Random(seed)

    def draw():
        steps = (rng.choices(range(min_steps, max_steps + 1), weights=weights)[0] if weights
                 else rng.randint(min_steps, max_steps))
        skill = skill_frac > 0 and rng.random() < skill_frac
        return make_problem(rng, steps, skill=skill, max_value=max_value)

    return draw_distinct(draw, n, exclude, f"{min_steps}-{max_steps} steps")


def draw_distinct(draw, n: int, exclude: set[str] | None, what: str) -> list:
    """`n` problems from `draw()` with distinct questions, none in `exclude` (an evaluation split skips the
    training questions); gives up with an error naming `what` after 50 n + 1000 draws."""
    exclude = exclude or set()
    seen: set[str] = set()
    out = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"could not draw {n} distinct problems with {what}")
        p = draw()
        if p.question in seen or p.question in exclude:
            continue
        seen.add(p.question)
        out.append(p)
    return out


def pretraining_corpus(n: int, min_steps: int, max_steps: int, seed: int, weights: list[float] | None = None,
                       direct_frac: float = 0.0, reference_frac: float = 0.0,
                       max_value: int = MAX_VALUE, direct_error_frac: float = 0.0) -> list[tuple[str, str]]:
    """(question, response) pairs for the base model: ordinary problems only (no skill step). A share
    `direct_frac` is answered with the bare answer and no working, a share `reference_frac` in the reference
    style (rare in pretraining: the base can read and continue it, but gives its tokens low probability), the
    rest in the base's own terse style. A share `direct_error_frac` of the bare answers is careless (off by
    1-5): the base's guesses are then worse than its working, by construction (docs/miniature.md)."""
    if not (0.0 <= direct_frac <= 1.0 and 0.0 <= reference_frac <= 1.0 and direct_frac + reference_frac <= 1.0):
        raise ValueError(f"direct_frac and reference_frac must lie in [0, 1] and sum to at most 1, got "
                         f"{direct_frac} and {reference_frac}")
    if not 0.0 <= direct_error_frac <= 1.0:
        raise ValueError(f"direct_error_frac must lie in [0, 1], got {direct_error_frac}")
    rng = random.Random(seed + 7)
    errors = random.Random(seed + 11)  # its own stream: direct_error_frac = 0 leaves the corpus as it was
    out = []
    for p in make_split(n, min_steps, max_steps, seed=seed, weights=weights, max_value=max_value):
        u = rng.random()
        if u < direct_frac:
            careless = direct_error_frac > 0 and errors.random() < direct_error_frac
            response = careless_answer(p, errors, max_value) if careless else direct_answer(p)
        else:
            response = p.solution if u < direct_frac + reference_frac else p.base_solution
        out.append((p.question, response))
    return out
