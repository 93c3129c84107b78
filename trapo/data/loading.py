"""Training and evaluation data for the trainer: synthetic by default, JSONL for real data."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from trapo.data import synthetic
from evaluation.jsonl import iter_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    question: str
    answer: str
    solution: str | None = None


@dataclass
class Dataset:
    train: list[Item]
    valid: list[Item]
    eval_splits: dict[str, list[Item]]


def to_items(problems, reference_style: str) -> list[Item]:
    """Items with the reference solution written in `reference_style`: "spaced", the base model's own ("base"), or
    the base's own with the skill step folded into a step it knows ("folded"; conf/data/synthetic.yaml)."""
    texts = {"spaced": lambda p: p.solution, "base": lambda p: p.base_solution, "folded": lambda p: p.folded_solution}
    if reference_style not in texts:
        raise ValueError(f"data.reference_style must be one of {sorted(texts)}, got {reference_style!r}")
    return [Item(p.question, p.answer, texts[reference_style](p)) for p in problems]


def load_jsonl_items(path: str | Path, fields: Mapping[str, str]) -> list[Item]:
    """Rows with a question, a reference solution and a gold answer; bad rows fail with file:line:field."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: training data file not found")
    items = []
    for lineno, row, error in iter_jsonl(path):
        if error:
            raise ValueError(f"{path}:{lineno}: {error}")
        vals = {}
        for role in ("question", "solution", "answer"):
            key = fields[role]
            if key not in row:
                raise ValueError(f"{path}:{lineno}:{key}: missing field")
            v = row[key]
            if isinstance(v, (int, float)) and role == "answer":
                v = str(v)
            if not isinstance(v, str):
                raise ValueError(f"{path}:{lineno}:{key}: expected a string, got {type(v).__name__}")
            if not v.strip():
                raise ValueError(f"{path}:{lineno}:{key}: empty")
            vals[role] = v
        items.append(Item(vals["question"], vals["answer"], vals["solution"]))
    if not items:
        raise ValueError(f"{path}: dataset is empty")
    return items


def check_alphabet(path: str | Path, fields: Mapping[str, str], alphabet: str, model: str) -> None:
    """Refuse a JSONL whose question, solution or answer holds characters outside `alphabet` (a character-level
    model's vocabulary): they would silently become <unk>. The error names the file, the first such line and
    field, and every character outside the alphabet in the file."""
    allowed = set(alphabet)
    first, bad = None, set()
    for lineno, row, error in iter_jsonl(Path(path)):
        if error:
            continue  # load_jsonl_items reports it
        for role in ("question", "solution", "answer"):
            v = row.get(fields[role])
            chars = set(str(v)) - allowed if v is not None else set()
            if chars:
                bad |= chars
                first = first or (lineno, fields[role], "".join(sorted(chars)))
    if first:
        lineno, field, chars = first
        raise ValueError(f"{path}:{lineno}:{field}: characters {chars!r} are not in model={model}'s vocabulary "
                         f"(all such in the file: {''.join(sorted(bad))!r}); they would become <unk>. The tiny model "
                         f"is the embedded task's character model: train on your own data with a real tokenizer, "
                         f"e.g. model=smollm2 or model=hf model.path=... (docs/data.md)")


def _synthetic_split(spec: Mapping[str, Any], seed: int, max_value: int, exclude: set[str] | None = None):
    return synthetic.make_split(int(spec["n"]), int(spec["min_steps"]), int(spec["max_steps"]), seed=seed,
                                exclude=exclude, skill_frac=float(spec.get("skill_frac", 0.0) or 0.0),
                                max_value=max_value)


def benchmark_splits(cfg) -> dict[str, list[Item]]:
    """The math benchmarks named in `data.eval_benchmarks`, each an evaluation split of its own: the first
    `data.eval_benchmark_n` rows of each (null: all), so a subset is the same rows every time."""
    names = cfg.get("eval_benchmarks") or []
    if not names:
        return {}
    from evaluation.benchmarks import load_benchmark

    limit = cfg.get("eval_benchmark_n")
    return {name: [Item(x.question, x.gold, x.solution) for x in
                   load_benchmark(name, data_dir=cfg.get("eval_data_dir"), limit=int(limit) if limit else None)]
            for name in names}


def load_dataset(cfg: Mapping[str, Any]) -> Dataset:
    kind = cfg["kind"]
    if kind == "synthetic":
        seed, max_value = int(cfg["seed"]), int(cfg.get("max_value") or synthetic.MAX_VALUE)
        train = _synthetic_split(cfg["train"], seed=seed, max_value=max_value)
        seen = {p.question for p in train}
        valid = _synthetic_split(cfg["valid"], seed=seed + 1, max_value=max_value, exclude=seen)
        seen |= {p.question for p in valid}
        splits = {}
        for i, (name, spec) in enumerate(cfg["eval_splits"].items()):
            spec = {"steps": spec} if isinstance(spec, int) else spec
            split = {"n": cfg["eval_n"], "min_steps": spec["steps"], "max_steps": spec["steps"],
                     "skill_frac": 1.0 if spec.get("skill") else 0.0}
            splits[name] = to_items(_synthetic_split(split, seed=seed + 100 + i, max_value=max_value, exclude=seen),
                                    "spaced")
        style = str(cfg["reference_style"])  # its default lives in conf/data/synthetic.yaml
        return Dataset(to_items(train, style), to_items(valid, style), splits)
    if kind == "word_problems":  # natural-language grade-school problems, teacher-style solutions (issue 26)
        from trapo.data import word_problems as wp

        seed, max_value = int(cfg["seed"]), int(cfg.get("max_value") or wp.MAX_VALUE)

        def split(spec, seed, exclude):
            return [Item(p.question, p.answer, p.solution) for p in
                    wp.make_split(int(spec["n"]), int(spec["min_steps"]), int(spec["max_steps"]), seed=seed,
                                  exclude=exclude, max_value=max_value)]

        train = split(cfg["train"], seed, None)
        seen = {it.question for it in train}
        valid = split(cfg["valid"], seed + 1, seen)
        seen |= {it.question for it in valid}
        splits = {}
        for i, (name, steps) in enumerate(cfg["eval_splits"].items()):
            steps = int(steps["steps"] if hasattr(steps, "get") else steps)
            splits[name] = split({"n": cfg["eval_n"], "min_steps": steps, "max_steps": steps}, seed + 100 + i, seen)
        return Dataset(train, valid, {**splits, **benchmark_splits(cfg)})
    if kind == "jsonl":
        items = load_jsonl_items(cfg["path"], cfg["fields"])
        n_valid = int(cfg.get("valid_n", 0) or 0)
        if not 0 <= n_valid < len(items):
            raise ValueError(f"data.valid_n={n_valid}: must be >= 0 and leave training rows "
                             f"({cfg['path']} has {len(items)})")
        splits = benchmark_splits(cfg)
        if not n_valid and not splits:
            log.warning("data=%s: no validation rows (data.valid_n=0) and no benchmarks (data.eval_benchmarks=[]): "
                        "the run trains and never evaluates; set data.valid_n=N to hold out the first N rows, or "
                        "data.eval_benchmarks=[math500] (any of aime24, amc23, math500, minerva_math, olympiadbench)",
                        cfg.get("name", kind))
        return Dataset(items[n_valid:], items[:n_valid], splits)
    raise ValueError(f"data.kind must be 'synthetic', 'word_problems' or 'jsonl', got {kind!r}")
