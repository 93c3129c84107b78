r"""Benchmark registry: where each set lives and how its rows map to (question, gold, solution).

Loading order: ``data_dir`` (argument) > ``$TRAPO_DATA_DIR`` > ``<repo>/../shared/data/benchmarks``; the
Hugging Face hub only when no local file exists and the machine is online (``datasets`` installed,
``HF_HUB_OFFLINE`` unset). Malformed rows raise `BenchmarkError` naming ``file:line: field``.

Names: ``aime24``, ``amc23`` (the shipped 40 problems of AMC 2023), ``amc`` (the paper's 83 problems of
AMC 2022+2023: ``amc.jsonl`` locally or AI-MO/aimo-validation-amc), ``math500``, ``minerva_math``,
``olympiadbench``; common spellings are aliases.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evaluation.answer import gold_to_text
from evaluation.extract import last_boxed_answer
from evaluation.jsonl import iter_jsonl

DEFAULT_BENCHMARKS = ("aime24", "amc23", "math500", "minerva_math", "olympiadbench")
REPO = Path(__file__).resolve().parents[1]


class BenchmarkError(ValueError):
    """A benchmark file or row that cannot be used; the message names file:line: field."""


@dataclass(frozen=True)
class Item:
    """One problem: what a back end is asked, and what the grader checks against."""

    id: str
    question: str
    gold: str
    solution: str | None = None
    answer_type: str | None = None
    tolerance: float | None = None
    meta: dict = field(default_factory=dict)


class _RowError(Exception):
    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field_name = field_name


def _text(row: dict, *names: str, required: bool = True) -> str | None:
    for name in names:
        if name in row and row[name] is not None:
            value = row[name]
            if not isinstance(value, str):
                raise _RowError(name, f"expected a string, got {type(value).__name__}")
            if required and not value.strip():
                raise _RowError(name, "empty")
            return value
    if required:
        raise _RowError("/".join(names), "missing")
    return None


def _gold_field(row: dict, name: str) -> str:
    if name not in row or row[name] is None:
        raise _RowError(name, "missing")
    try:
        gold = gold_to_text(row[name])
    except ValueError as exc:
        raise _RowError(name, str(exc)) from None
    if not gold.strip():
        raise _RowError(name, "empty")
    return gold


def _simple(question=("problem", "question"), gold="answer", solution=("solution",)):
    def convert(row: dict) -> dict:
        return {
            "question": _text(row, *question),
            "gold": _gold_field(row, gold),
            "solution": _text(row, *solution, required=False) if solution else None,
        }

    return convert


def _minerva(row: dict) -> dict:
    question = _text(row, "problem", "question")
    solution = _text(row, "solution", required=False)
    if row.get("answer") not in (None, ""):  # hub variants carry the answer separately
        gold = _gold_field(row, "answer")
    else:
        if solution is None:
            raise _RowError("solution", "missing (Minerva's gold answer is the \\boxed{} of its solution)")
        gold = last_boxed_answer(solution)
        if not gold:
            raise _RowError("solution", "has no \\boxed{} answer (Minerva's gold lives there)")
    return {"question": question, "gold": gold, "solution": solution}


def _olympiad(row: dict) -> dict:
    question = _text(row, "question", "problem")
    if row.get("context"):
        question = f"{row['context']}\n\n{question}"
    answers = row.get("final_answer")
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise _RowError("final_answer", f"expected a non-empty list of strings, got {answers!r:.80}")
    solutions = row.get("solution")
    if isinstance(solutions, list):
        solution = solutions[0] if solutions and isinstance(solutions[0], str) else None
    else:
        solution = solutions if isinstance(solutions, str) else None
    tolerance = None
    if row.get("error") not in (None, ""):
        try:
            tolerance = float(row["error"])
        except (TypeError, ValueError):
            raise _RowError("error", f"not a number: {row['error']!r}") from None
    answer_type = row.get("answer_type")
    if answer_type is not None and not isinstance(answer_type, str):
        raise _RowError("answer_type", f"expected a string, got {answer_type!r}")
    return {
        "question": question,
        "gold": ", ".join(a.strip() for a in answers),
        "solution": solution,
        "answer_type": answer_type,
        "tolerance": tolerance,
        "meta": {k: row[k] for k in ("subfield", "unit", "is_multiple_answer") if k in row},
    }


@dataclass(frozen=True)
class BenchmarkSpec:
    """Registry entry. `paper_samples`: samples per problem in the paper (avg@32 for AIME and AMC)."""

    name: str
    file: str
    hub_id: str
    hub_split: str
    convert: Callable[[dict], dict]
    expected_rows: int | None = None
    hub_config: str | None = None
    paper_samples: int = 1
    id_fields: tuple = ("id", "unique_id", "idx")
    meta_fields: tuple = ()


REGISTRY: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in [
        BenchmarkSpec("aime24", "aime24.jsonl", "math-ai/aime24", "test", _simple(), 30, paper_samples=32),
        BenchmarkSpec("amc23", "amc23.jsonl", "math-ai/amc23", "test", _simple(solution=()), 40, paper_samples=32),
        BenchmarkSpec("amc", "amc.jsonl", "AI-MO/aimo-validation-amc", "train", _simple(solution=()), 83, paper_samples=32),
        BenchmarkSpec(
            "math500", "math500.jsonl", "HuggingFaceH4/MATH-500", "test", _simple(), 500, meta_fields=("subject", "level")
        ),
        BenchmarkSpec("minerva_math", "minerva_math.jsonl", "math-ai/minervamath", "test", _minerva, 272, meta_fields=("type",)),
        BenchmarkSpec(
            "olympiadbench", "olympiadbench.jsonl", "Hothan/OlympiadBench", "train", _olympiad, 675, hub_config="OE_TO_maths_en_COMP"
        ),
    ]
}
ALIASES = {
    "aime": "aime24", "aime2024": "aime24", "aime_2024": "aime24",
    "amc2023": "amc23", "amc_23": "amc23", "amc22_23": "amc", "amc_2022_2023": "amc",
    "math": "math500", "math-500": "math500", "math_500": "math500",
    "minerva": "minerva_math", "minervamath": "minerva_math", "minerva-math": "minerva_math",
    "olympiad": "olympiadbench", "olympiad_bench": "olympiadbench",
}


def resolve_name(name: str) -> str:
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(sorted(REGISTRY))} (aliases: {', '.join(sorted(ALIASES))})")
    return key


def default_data_dir() -> Path | None:
    """$TRAPO_DATA_DIR, else <repo>/../shared/data/benchmarks when it exists."""
    env = os.environ.get("TRAPO_DATA_DIR")
    if env:
        return Path(env)
    shared = REPO.parent / "shared" / "data" / "benchmarks"
    return shared if shared.is_dir() else None


def _row_id(spec: BenchmarkSpec, row: dict, index: int) -> str:
    for name in spec.id_fields:
        if row.get(name) not in (None, ""):
            return str(row[name])
    return str(index)


def _to_item(spec: BenchmarkSpec, row: Any, where: str, index: int) -> Item:
    if not isinstance(row, dict):
        raise BenchmarkError(f"{where}: row: expected a JSON object, got {type(row).__name__}")
    try:
        fields = spec.convert(row)
    except _RowError as exc:
        raise BenchmarkError(f"{where}: field '{exc.field_name}': {exc}") from None
    meta = {k: row[k] for k in spec.meta_fields if k in row}
    meta.update(fields.pop("meta", {}))
    return Item(id=_row_id(spec, row, index), meta=meta, **fields)


def read_jsonl(spec: BenchmarkSpec, path: Path, limit: int | None = None) -> list[Item]:
    items: list[Item] = []
    for lineno, row, error in iter_jsonl(path):
        if error:
            raise BenchmarkError(f"{path}:{lineno}: row: {error}")
        items.append(_to_item(spec, row, f"{path}:{lineno}", len(items)))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise BenchmarkError(f"{path}: no rows")
    return items


def _online() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        import datasets  # noqa: F401
    except ImportError:
        return False
    return True


def load_from_hub(spec: BenchmarkSpec, limit: int | None = None) -> list[Item]:
    from datasets import load_dataset

    ds = load_dataset(spec.hub_id, spec.hub_config, split=spec.hub_split)
    items = []
    for i, row in enumerate(ds):
        items.append(_to_item(spec, dict(row), f"{spec.hub_id}[{spec.hub_split}]:{i}", i))
        if limit is not None and len(items) >= limit:
            break
    return items


def local_path(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    spec = REGISTRY[resolve_name(name)]
    base = Path(data_dir) if data_dir else default_data_dir()
    if base is None:
        return None
    for candidate in (base / spec.file, base / spec.name / "test.jsonl"):
        if candidate.is_file():
            return candidate
    return None


def load_benchmark(name: str, data_dir: str | os.PathLike | None = None, limit: int | None = None, allow_hub: bool = True) -> list[Item]:
    """Items of benchmark `name` (first `limit` rows), from a local file or, when online, the hub."""
    spec = REGISTRY[resolve_name(name)]
    path = local_path(spec.name, data_dir)
    if path is not None:
        return read_jsonl(spec, path, limit)
    base = Path(data_dir) if data_dir else default_data_dir()
    where = f"{base / spec.file}" if base else f"(no data_dir; set data_dir= or $TRAPO_DATA_DIR)"
    if allow_hub and _online():
        try:
            return load_from_hub(spec, limit)
        except Exception as exc:  # offline machines fail here: say where the file should be
            raise FileNotFoundError(f"{spec.name}: no local file {where}, and the hub ({spec.hub_id}) failed: {exc}") from exc
    raise FileNotFoundError(f"{spec.name}: no local file {where}; the hub ({spec.hub_id}) needs internet and `datasets`")


def benchmark_names(names) -> list[str]:
    """Canonical names from a list or a comma-separated string (None/'all': the default five)."""
    if names is None or names == "all":
        return list(DEFAULT_BENCHMARKS)
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    return [resolve_name(n) for n in names]


def reference_response(item: Item) -> str:
    r"""The reference solution as a response; ``\boxed{gold}`` is appended when it has no box."""
    if item.solution and last_boxed_answer(item.solution) is not None:
        return item.solution
    if item.solution:
        return f"{item.solution.rstrip()}\n\nThe final answer is $\\boxed{{{item.gold}}}$."
    return f"\\boxed{{{item.gold}}}"
