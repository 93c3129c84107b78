r"""The grader: final-answer extraction + equivalence, each item in a worker process under a time limit.

    grader = Grader()                                   # workers = cores, 3 s per item
    preds, correct = grader.grade_responses(responses, golds)

Extraction (linear scans) runs in the calling process; the comparison of each distinct
(gold, prediction) pair runs in a worker that is killed when it overruns (a timeout or a crashed worker
counts as wrong). Verdicts are cached, so repeated pairs (RL groups, avg@32) cost nothing.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections import OrderedDict
from typing import Any, Sequence

from evaluation.answer import equivalent, gold_to_text
from evaluation.extract import extract_answer
from evaluation.pool import TimeoutPool

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3.0


def grade_pair(gold: str, pred: str, tolerance: float | None = None, answer_type: str | None = None) -> bool:
    """Whether `pred` matches `gold` (both answer strings). Runs in a worker: imports sympy lazily."""
    from evaluation.symbolic import symbolic_equal

    return bool(equivalent(gold, pred, symbolic_equal, tolerance=tolerance, answer_type=answer_type))


def _as_tolerance(value) -> float | None:
    if value in (None, ""):
        return None
    try:
        tol = float(value)
    except (TypeError, ValueError):
        return None
    return tol if tol >= 0 and tol == tol else None


class Grader:
    """Batch grading with a worker pool, a per-item time limit and an LRU cache of verdicts.

    workers=0 grades in this process with no time limit (debugging only).
    """

    def __init__(self, workers: int | None = None, timeout: float = DEFAULT_TIMEOUT, cache_size: int = 500_000,
                 progress: bool = False, target: str = "evaluation.grader:grade_pair",
                 preload: Sequence[str] = ("evaluation.symbolic",)):
        """`target` ("module:function", run in the workers on each key's tuple) decides a verdict: `grade_pair`
        for extracted answers; the training reward math-verify's (trapo.rewards) reuses the pool and cache."""
        self.target, self.preload = target, list(preload)
        self.workers = (os.cpu_count() or 1) if workers is None else int(workers)
        self.timeout = float(timeout)
        self.cache_size = int(cache_size)
        self.progress = progress
        self._cache: OrderedDict = OrderedDict()
        self._pool: TimeoutPool | None = None
        self._lock = threading.Lock()  # the cache and the counters
        self._pool_lock = threading.Lock()  # creating and closing the pool
        self.stats = {"graded": 0, "computed": 0, "cache_hits": 0, "timeouts": 0, "crashes": 0, "errors": 0}

    # -- pool
    def _get_pool(self) -> TimeoutPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = TimeoutPool(self.target, workers=self.workers, timeout=self.timeout,
                                         preload=self.preload)
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- grading
    def grade(
        self,
        golds: Sequence[Any],
        preds: Sequence[str | None],
        tolerances: Sequence[Any] | None = None,
        answer_types: Sequence[str | None] | None = None,
    ) -> list[bool]:
        """Verdicts for extracted predictions (None = no answer = wrong)."""
        n = len(preds)
        if len(golds) != n:
            raise ValueError(f"{len(golds)} golds for {n} predictions")
        tolerances = tolerances or [None] * n
        answer_types = answer_types or [None] * n
        keys = []
        for g, p, tol, at in zip(golds, preds, tolerances, answer_types):
            keys.append(None if p is None else (gold_to_text(g), str(p), _as_tolerance(tol), at or None))
        return self.verdicts(keys)

    def verdicts(self, keys: Sequence[tuple | None]) -> list[bool]:
        """The target's verdict on each key (an argument tuple; None = wrong), cached.

        The lock guards the cache and the counters only: the pool runs outside it, so threads that share this
        grader (a rollout engine's agents) wait for their own items, never for another thread's slow one."""
        with self._lock:
            todo, seen = [], set()
            for k in keys:
                if k is None or k in seen:
                    continue
                if k in self._cache:
                    self._cache.move_to_end(k)
                    self.stats["cache_hits"] += 1
                else:
                    seen.add(k)
                    todo.append(k)
        fresh = self._run(todo) if todo else {}
        with self._lock:
            for k, verdict in fresh.items():
                self._store(k, verdict)
            self.stats["graded"] += len(keys)
            return [False if k is None else fresh[k] if k in fresh else bool(self._cache.get(k, False))
                    for k in keys]

    def _run(self, todo: list[tuple]) -> dict[tuple, bool]:
        """Verdicts of `todo`, computed (in the pool unless workers=0); the caller stores them."""
        out: dict[tuple, bool] = {}
        counts = dict.fromkeys(("timeouts", "crashes", "errors"), 0)
        if self.workers == 0:
            module, name = self.target.split(":")
            fn = getattr(importlib.import_module(module), name)
            for k in todo:
                try:
                    out[k] = bool(fn(*k))
                except Exception:
                    counts["errors"] += 1
                    out[k] = False
        else:
            bar = None
            if self.progress and len(todo) >= 200:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(todo), desc="grading", leave=False)
            try:
                results = self._get_pool().map(todo, progress=bar)
            finally:
                if bar is not None:
                    bar.close()
            for k, (ok, value) in zip(todo, results):
                if not ok:
                    counts["timeouts" if value == "timeout" else "crashes" if value == "crash" else "errors"] += 1
                out[k] = bool(value) if ok else False
        with self._lock:
            self.stats["computed"] += len(todo)
            for name, c in counts.items():
                self.stats[name] += c
        return out

    def _store(self, key, verdict: bool) -> None:
        self._cache[key] = verdict
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def grade_responses(self, responses: Sequence[str | None], golds: Sequence[Any], **meta) -> tuple[list[str | None], list[bool]]:
        """(extracted predictions, verdicts) for raw model responses."""
        preds = [extract_answer(r) if isinstance(r, str) else None for r in responses]
        return preds, self.grade(golds, preds, **meta)

