"""The evaluation loop as pure functions (no MLflow, no files): generate, grade, summarise.

    summary, rows = evaluate_items(items, backend, grader, n_samples=4)

`items` are plain objects with ``question`` and ``gold`` (and optionally ``solution``, ``id``,
``answer_type``, ``tolerance``): `evaluation.benchmarks.Item`, or the training loop's own problems, so
training validates its synthetic splits with the same code that scores the benchmarks.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np

from evaluation.benchmarks import REGISTRY, Item, benchmark_names, load_benchmark
from evaluation.grader import Grader
from evaluation.metrics import sampling_metrics
from evaluation.prompts import build_prompt


def as_item(obj: Any, index: int = 0) -> Item:
    """An `Item` from an Item, a dict or any object with question/gold attributes."""
    if isinstance(obj, Item):
        return obj
    get = obj.get if isinstance(obj, dict) else lambda k, d=None: getattr(obj, k, d)
    question = get("question") if get("question") is not None else get("prompt")
    gold = get("gold") if get("gold") is not None else get("answer")
    if question is None or gold is None:
        raise ValueError(f"item {index}: needs 'question' and 'gold' (or 'answer')")
    return Item(
        id=str(get("id", index)), question=str(question), gold=str(gold), solution=get("solution"),
        answer_type=get("answer_type"), tolerance=get("tolerance"),
    )


def evaluate_items(
    items: Sequence[Any],
    backend,
    grader: Grader,
    n_samples: int = 1,
    *,
    temperature: float = 0.6,
    max_new_tokens: int = 1024,
    seed: int = 0,
    ks: Sequence[int] | None = None,
    n_boot: int = 1000,
    name: str | None = None,
) -> tuple[dict, list[dict]]:
    """(summary, rows): summary has accuracy (avg@n), its 95% interval, pass@k, counts and timings;
    rows has one record per sample (id, question, response, pred, gold, correct, sample; answer_type and
    tolerance when the item has them): a valid input of `python -m evaluation.grade`."""
    items = [as_item(it, i) for i, it in enumerate(items)]
    if not items:
        raise ValueError("no items to evaluate")
    n = int(n_samples)
    if n < 1:
        raise ValueError(f"n_samples must be >= 1, got {n}")
    tok = getattr(backend, "tokenizer", None)
    template = getattr(backend, "prompt_template", None)
    prompts = [build_prompt(it.question, tokenizer=tok, template=template) for it in items]
    if hasattr(backend, "prepare"):
        backend.prepare(items, prompts)

    t0 = time.monotonic()
    outputs = backend.generate(prompts, n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    t_gen = time.monotonic() - t0
    if len(outputs) != len(items) or any(len(o) != n for o in outputs):
        raise RuntimeError(f"back end returned {len(outputs)} lists for {len(items)} prompts (want {n} samples each)")

    flat = [(i, j) for i in range(len(items)) for j in range(n)]
    t1 = time.monotonic()
    preds, ok = grader.grade_responses(
        [outputs[i][j] for i, j in flat],
        [items[i].gold for i, _ in flat],
        tolerances=[items[i].tolerance for i, _ in flat],
        answer_types=[items[i].answer_type for i, _ in flat],
    )
    t_grade = time.monotonic() - t1

    table = [[False] * n for _ in items]
    rows = []
    for (i, j), pred, c in zip(flat, preds, ok):
        table[i][j] = bool(c)
        row = {
            "id": items[i].id, "sample": j, "question": items[i].question, "response": outputs[i][j],
            "pred": pred, "gold": items[i].gold, "correct": bool(c),
        }
        # what the grader used besides the gold, so `python -m evaluation.grade` regrades the row alike
        row.update({k: v for k in ("answer_type", "tolerance") if (v := getattr(items[i], k)) is not None})
        rows.append(row)
    summary = sampling_metrics(table, ks=ks, n_boot=n_boot, seed=seed)
    summary.update(
        no_answer=sum(p is None for p in preds) / len(preds),
        temperature=float(temperature),
        max_new_tokens=int(max_new_tokens),
        seconds_generate=round(t_gen, 3),
        seconds_grade=round(t_grade, 3),
    )
    if name:
        summary["benchmark"] = name
    return summary, rows


def resolve_samples(n_samples, benchmark: str) -> int:
    """An int, or 'paper': the paper's setting (32 for AIME and AMC, else 1)."""
    if isinstance(n_samples, str) and n_samples.strip().lower() == "paper":
        from evaluation.benchmarks import REGISTRY

        return REGISTRY[benchmark].paper_samples
    return int(n_samples)


def evaluate_benchmarks(
    benchmarks,
    backend,
    grader: Grader,
    *,
    data_dir=None,
    n_samples="paper",
    limit: int | None = None,
    temperature: float = 0.6,
    max_new_tokens: int = 1024,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, tuple[dict, list[dict]]]:
    """{benchmark: (summary, rows)} for each benchmark name (None: the default five)."""
    results = {}
    for name in benchmark_names(benchmarks):
        items = load_benchmark(name, data_dir=data_dir, limit=limit)
        results[name] = evaluate_items(
            items, backend, grader, resolve_samples(n_samples, name), temperature=temperature,
            max_new_tokens=max_new_tokens, seed=seed, n_boot=n_boot, name=name,
        )
    return results


def write_results(results: dict[str, tuple[dict, list[dict]]], out_dir) -> dict:
    """Write ``summary.json`` ({benchmark: summary}) and ``<benchmark>.jsonl`` (one row per sample)."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {name: s for name, (s, _) in results.items()}
    for name, (_, rows) in results.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def eval_metrics(results: Mapping[str, tuple[dict, list[dict]]]) -> dict[str, float]:
    """A run's final metrics from `evaluation.runner.evaluate_items` results per split: valid/accuracy,
    eval/<split>/accuracy and their mean eval/avg_accuracy (the evaluation splits, not valid). Where the task's own
    splits sit beside math benchmarks (`data.eval_benchmarks` on a generated task), eval/avg_accuracy is the task's
    and eval/benchmark_avg_accuracy the benchmarks' mean."""
    out = {f"{'valid' if n == 'valid' else 'eval/' + n}/accuracy": float(r[0]["accuracy"]) for n, r in results.items()}
    task = [float(r[0]["accuracy"]) for n, r in results.items() if n != "valid" and n not in REGISTRY]
    bench = [float(r[0]["accuracy"]) for n, r in results.items() if n in REGISTRY]
    if task or bench:
        out["eval/avg_accuracy"] = float(np.mean(task or bench))
    if task and bench:
        out["eval/benchmark_avg_accuracy"] = float(np.mean(bench))
    return out
