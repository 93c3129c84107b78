"""Threads that share one grader (a rollout engine's agents do) wait for their own items only.

A pair that runs into the per-item time limit holds one worker for that long; before, it also held the grader's
lock, so every other thread's rewards waited behind it (64 agents behind one sympy timeout)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from evaluation.grader import Grader

TESTS = Path(__file__).resolve().parent


def test_a_slow_item_does_not_hold_the_other_threads(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the workers import tests/grader/grader_faults.py
    limit = 6.0
    with Grader(workers=2, timeout=limit, target="grader_faults:grade_or_fault") as g:
        assert g.grade(["4"], ["4"]) == [True]  # workers started and warm
        slow_started, slow_done = threading.Event(), threading.Event()

        def slow():
            slow_started.set()
            assert g.grade(["4"], ["HANG"]) == [False]  # sleeps until the time limit: scored wrong
            slow_done.set()

        t = threading.Thread(target=slow)
        t.start()
        slow_started.wait()
        time.sleep(0.3)  # the slow item is in its worker
        t0 = time.monotonic()
        ok = g.grade(["4", "5", "9"], ["2^2", "5", "8"])
        waited = time.monotonic() - t0
        assert ok == [True, True, False]
        assert not slow_done.is_set(), "the slow item should still be running"
        assert waited < limit / 3, f"another thread's grading waited {waited:.1f} s behind the slow item"
        t.join()
        assert g.stats["timeouts"] == 1 and g.stats["graded"] == 5


def test_concurrent_callers_get_their_own_results():
    with Grader(workers=2) as g:
        out: dict[int, list[bool]] = {}

        def work(i: int):
            golds = [str(i + j) for j in range(20)]
            preds = [str(i + j) if j % 3 else str(i + j + 1) for j in range(20)]
            out[i] = g.grade(golds, preds)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(8):
            assert out[i] == [bool(j % 3) for j in range(20)]
