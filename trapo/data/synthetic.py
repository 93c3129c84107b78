"""The embedded task: multi-step arithmetic word problems with integer answers.

Each problem starts a count and applies `steps` operations to it; the reference solution writes one
equation per step, separated by blank lines (the paragraph breaks expert prefixes snap to), and ends in
\\boxed{answer}. Difficulty is the number of steps. Everything is deterministic given the seed.

    Q: Mia has 7 eggs. Gets 5 more. Gives away 3. Doubles them. How many eggs?
    A: Gets 5 more: 7+5=12

       Gives away 3: 12-3=9

       Doubles them: 9*2=18

       \\boxed{18}
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

GENERATOR_VERSION = 3  # bump when the text format changes: it is part of the tiny model's cache key

NAMES = ["Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Ben", "Eva", "Tom", "Amy", "Dan"]
ITEMS = ["eggs", "pens", "coins", "cards", "books", "shells", "apples", "stamps", "marbles", "cups"]
MAX_VALUE = 99  # every intermediate value stays in [0, MAX_VALUE]: two-digit arithmetic


@dataclass(frozen=True)
class Problem:
    question: str
    solution: str
    answer: str
    steps: int

    def to_dict(self) -> dict:
        return asdict(self)


def _operation(rng: random.Random, x: int) -> tuple[str, str, int]:
    """One step: (sentence, equation, new value), chosen among the operations valid for x."""
    ops = []
    k = rng.randint(2, 9)
    if x + k <= MAX_VALUE:
        ops.append((f"Gets {k} more.", f"{x}+{k}", x + k))
    if x - k >= 0:
        ops.append((f"Gives away {k}.", f"{x}-{k}", x - k))
    if 2 * x <= MAX_VALUE:
        ops.append(("Doubles them.", f"{x}*2", 2 * x))
    if 3 * x <= MAX_VALUE and x > 0:
        ops.append(("Triples them.", f"{x}*3", 3 * x))
    if x % 2 == 0 and x > 0:
        ops.append(("Halves them.", f"{x}/2", x // 2))
    sentence, expr, value = rng.choice(ops)
    return sentence, f"{expr}={value}", value


def make_problem(rng: random.Random, steps: int) -> Problem:
    if steps < 1:
        raise ValueError(f"a problem needs at least one step, got {steps}")
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    x = rng.randint(2, 20)
    sentences, lines = [f"{name} has {x} {item}."], []
    for _ in range(steps):
        sentence, line, x = _operation(rng, x)
        sentences.append(sentence)
        lines.append(f"{sentence[:-1]}: {line}")
    sentences.append(f"How many {item}?")
    solution = "\n\n".join(lines + [f"\\boxed{{{x}}}"])
    return Problem(" ".join(sentences), solution, str(x), steps)


def make_split(n: int, min_steps: int, max_steps: int, seed: int, exclude: set[str] | None = None,
               weights: list[float] | None = None) -> list[Problem]:
    """`n` distinct problems with difficulty drawn from [min_steps, max_steps] (uniformly, or by `weights`).

    Questions in `exclude` (e.g. the training set's) are skipped, so evaluation never sees a training prompt.
    """
    if n < 0 or min_steps < 1 or max_steps < min_steps:
        raise ValueError(f"bad split spec: n={n}, steps=[{min_steps}, {max_steps}]")
    if weights is not None and len(weights) != max_steps - min_steps + 1:
        raise ValueError(f"weights needs one entry per difficulty {min_steps}..{max_steps}, got {weights}")
    rng = random.Random(seed)
    exclude = exclude or set()
    seen: set[str] = set()
    out: list[Problem] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"could not draw {n} distinct problems with {min_steps}-{max_steps} steps")
        steps = (rng.choices(range(min_steps, max_steps + 1), weights=weights)[0] if weights
                 else rng.randint(min_steps, max_steps))
        p = make_problem(rng, steps)
        if p.question in seen or p.question in exclude:
            continue
        seen.add(p.question)
        out.append(p)
    return out
