"""lm-eval hooks for the trapo math tasks: data from our benchmark registry, grading by our grader.

Data comes from `evaluation.benchmarks.load_benchmark` (``$TRAPO_DATA_DIR``, else the repo's
``../shared/data/benchmarks``; ``--metadata '{"data_dir": "/abs/path"}'`` overrides), so no relative
``data_files`` path depends on the working directory and nothing is downloaded.
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # lm-eval imports this file by path; make the repo importable
    sys.path.insert(0, str(_ROOT))

from evaluation.benchmarks import load_benchmark  # noqa: E402
from evaluation.prompts import build_prompt  # noqa: E402

_GRADER = None


def _grader():
    global _GRADER
    if _GRADER is None:
        from evaluation.grader import Grader

        _GRADER = Grader()
        atexit.register(_GRADER.close)
    return _GRADER


def _dataset(name: str, data_dir=None, **_):
    import datasets

    items = load_benchmark(name, data_dir=data_dir, allow_hub=False)
    rows = [
        {"id": it.id, "question": it.question, "gold": it.gold, "answer_type": it.answer_type or "", "tolerance": it.tolerance if it.tolerance is not None else -1.0}
        for it in items
    ]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_aime24(**kw):
    return _dataset("aime24", **kw)


def load_amc23(**kw):
    return _dataset("amc23", **kw)


def load_amc(**kw):
    return _dataset("amc", **kw)


def load_math500(**kw):
    return _dataset("math500", **kw)


def load_minerva_math(**kw):
    return _dataset("minerva_math", **kw)


def load_olympiadbench(**kw):
    return _dataset("olympiadbench", **kw)


def doc_to_text(doc: dict) -> str:
    # The plain Qwen2.5-Math prompt; lm-eval's --apply_chat_template wraps it in the chat template.
    return build_prompt(doc["question"]).rstrip("\n")


def process_results(doc: dict, results: list[str]) -> dict:
    tol = doc.get("tolerance")
    _, ok = _grader().grade_responses(
        [results[0]], [doc["gold"]],
        tolerances=[tol if tol is not None and tol >= 0 else None],
        answer_types=[doc.get("answer_type") or None],
    )
    return {"exact_match": 1.0 if ok[0] else 0.0}
