"""The grader CLI, the worker pool's time limit, the cache and the RL reward."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluation.extract import extract_answer
from evaluation.grader import Grader
from evaluation.pool import TimeoutPool

ROOT = Path(__file__).resolve().parents[2]


def run_cli(tmp_path, rows_or_text, *extra):
    src = tmp_path / "in.jsonl"
    if isinstance(rows_or_text, str):
        src.write_text(rows_or_text)
    else:
        src.write_text("".join(json.dumps(r) + "\n" for r in rows_or_text))
    dst = tmp_path / "out.jsonl"
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation.grade", "--input", str(src), "--output", str(dst), *extra],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )
    out = [json.loads(line) for line in dst.read_text().splitlines()] if dst.exists() else []
    return proc, out, time.monotonic() - start


def test_cli_rows_in_order_with_pred_and_correct(tmp_path):
    rows = [
        {"id": 1, "response": "so $\\boxed{\\frac{1}{2}}$", "answer": "0.5"},
        {"id": 2, "response": "The answer is 7.", "answer": 8},
        {"id": 3, "response": "no idea", "answer": "3"},
        {"id": 4, "response": "\\boxed{27}", "answer": 27.0},
        {"id": 5, "response": None, "answer": "1"},
        {"id": 6, "response": "\\boxed{(1,8,19), (2,7,13)}", "answer": ["$(2,7,13), (1,8,19)$"], "extra": {"k": [1]}},
    ]
    proc, out, _ = run_cli(tmp_path, rows)
    assert proc.returncode == 0, proc.stderr
    assert [r["id"] for r in out] == [1, 2, 3, 4, 5, 6]
    assert [r["correct"] for r in out] == [True, False, False, True, False, True]
    assert [r["pred"] for r in out] == ["\\frac{1}{2}", "7", None, "27", None, "(1,8,19), (2,7,13)"]
    assert out[5]["extra"] == {"k": [1]} and out[5]["answer"] == ["$(2,7,13), (1,8,19)$"]


def test_cli_reports_bad_rows_by_line(tmp_path):
    text = (
        json.dumps({"response": "\\boxed{1}", "answer": "1"}) + "\n"
        "{not json\n"
        "\n"
        + json.dumps({"answer": "1"}) + "\n"
        + json.dumps([1, 2]) + "\n"
        + json.dumps({"response": 5, "answer": "1"}) + "\n"
        + json.dumps({"response": "\\boxed{1}"}) + "\n"
        + json.dumps({"response": "\\boxed{2}", "answer": "2"}) + "\n"
    )
    proc, out, _ = run_cli(tmp_path, text)
    assert proc.returncode == 0
    err = proc.stderr
    assert "in.jsonl:2: row: invalid JSON" in err
    assert "in.jsonl:4: field 'response': missing" in err
    assert "in.jsonl:5: row: expected a JSON object" in err
    assert "in.jsonl:6: field 'response': expected a string" in err
    assert "in.jsonl:7: field 'answer' (or 'gold'): missing" in err
    assert len(out) == 7  # the blank line is not a row
    assert [r["correct"] for r in out] == [True, False, False, False, False, False, True]
    assert all("error" in r for r in out[1:6]) and "error" not in out[0]
    proc, _, _ = run_cli(tmp_path, text, "--strict")
    assert proc.returncode == 1
    assert "7 rows: 2 graded, 5 bad" in err
    assert "2 of 2 graded correct (100.0%)" in err


def test_cli_reports_the_real_column_of_invalid_json(tmp_path):
    cut = '{"response": "\\boxed{1}", "answer": '  # a line cut short: the value is missing at its end
    text = cut + "\n" + '{"response": "x" "answer": "1"}' + "\n"
    proc, _, _ = run_cli(tmp_path, text)
    assert f"in.jsonl:1: row: invalid JSON (Expecting value at column {len(cut) + 1})" in proc.stderr
    assert "in.jsonl:2: row: invalid JSON (Expecting ',' delimiter at column 18)" in proc.stderr


def test_cli_exits_nonzero_when_no_row_is_good(tmp_path):
    proc, out, _ = run_cli(tmp_path, "{bad\n" + json.dumps({"response": "\\boxed{1}"}) + "\n")
    assert proc.returncode == 1
    assert "no row could be graded" in proc.stderr and "2 rows: 0 graded, 2 bad" in proc.stderr
    assert [r["correct"] for r in out] == [False, False]
    proc, _, _ = run_cli(tmp_path, "")
    assert proc.returncode == 1
    proc, _, _ = run_cli(tmp_path, [{"response": "\\boxed{2}", "answer": "1"}])
    assert proc.returncode == 0  # graded and wrong is not an error


def test_cli_reads_evaluate_output_and_its_own_output(tmp_path):
    """experiments/evaluate.py writes `gold`; the CLI takes it like `answer`, and its output grades again."""
    rows = [
        {"id": "a", "question": "q", "response": "\\boxed{\\frac12}", "pred": "\\frac12", "gold": "0.5", "correct": True},
        {"id": "b", "question": "q", "response": "\\boxed{3}", "pred": "3", "gold": "4", "correct": False},
        {"response": "\\boxed{3}", "answer": "3", "gold": "4"},
    ]
    proc, out, _ = run_cli(tmp_path, rows)
    assert [r["correct"] for r in out] == [True, False, False]
    assert "in.jsonl:3: fields 'answer' and 'gold': differ" in proc.stderr
    again = tmp_path / "again"
    again.mkdir()
    proc2, out2, _ = run_cli(again, [{k: v for k, v in r.items() if k != "error"} for r in out[:2]])
    assert proc2.returncode == 0 and [r["correct"] for r in out2] == [True, False]


def test_cli_pathological_rows_are_false_fast_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    rows = [
        {"response": "\\boxed{9^{9^{9^{9^{9}}}}}", "answer": "5"},
        {"response": "(" * 5000, "answer": "5"},
        {"response": "\\boxed{" + "(" * 5000 + "}", "answer": "5"},
        {"response": f"\\boxed{{__import__('os').system('touch {marker}')}}", "answer": "0"},
        {"response": f"\\boxed{{exec(\"open('{marker}','w')\")}}", "answer": "5"},
        {"response": "\\boxed{5}", "answer": "5"},
    ]
    proc, out, seconds = run_cli(tmp_path, rows, "--timeout", "2")
    assert proc.returncode == 0, proc.stderr
    assert [r["correct"] for r in out] == [False] * 5 + [True]
    assert seconds < 30
    assert not marker.exists()


def test_pool_kills_overrunning_and_crashing_workers():
    pool = TimeoutPool("time:sleep", workers=2, timeout=0.5)
    try:
        start = time.monotonic()
        res = pool.map([(0.01,), (30,), (0.01,), (30,), (0.01,)])
        assert time.monotonic() - start < 15
        assert [r[0] for r in res] == [True, False, True, False, True]
        assert res[1] == (False, "timeout") and pool.restarts == 2
    finally:
        pool.close()
    pool = TimeoutPool("os:_exit", workers=1, timeout=5)
    try:
        assert pool.map([(3,), (4,)]) == [(False, "crash"), (False, "crash")]
    finally:
        pool.close()


def test_grader_caches_repeated_pairs():
    with Grader(workers=1) as g:
        golds = ["\\frac{1}{2}"] * 50
        preds = ["0.5", "1/2"] * 25
        assert g.grade(golds, preds) == [True] * 50
        assert g.stats["computed"] == 2  # duplicates inside one batch are graded once
        start = time.monotonic()
        assert g.grade(golds, preds) == [True] * 50
        assert time.monotonic() - start < 0.1
        assert g.stats["computed"] == 2 and g.stats["cache_hits"] == 50


def test_grader_in_process_mode_matches_workers():
    pairs = [("4", "2^2"), ("(1,2)", "(2,1)"), ("25\\%", "0.25"), ("\\text{(B)}", "B")]
    with Grader(workers=0) as a, Grader(workers=1) as b:
        golds, preds = zip(*pairs)
        assert a.grade(golds, preds) == b.grade(golds, preds) == [True, False, True, True]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{1}, \\boxed{2}", "1, 2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\boxed{5", None),
        ("The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("Answer: 12 apples", "12 apples"),
        ("#### 42", "42"),
        ("blah blah", None),
        ("$-3$", "-3"),
        ("\\framebox{204}", "204"),
        ("", None),
    ],
)
def test_extraction(text, expected):
    assert extract_answer(text) == expected


def test_extraction_is_linear():
    start = time.monotonic()
    extract_answer("\\boxed{" * 20000)
    extract_answer("(" * 100000)
    extract_answer("answer is " * 20000)
    extract_answer("$" * 100000)
    extract_answer("<|im_end|>" * 20000 + "x")
    extract_answer("\\boxed{1} and " * 20000)
    extract_answer("is 1. " * 20000)
    extract_answer("Final answer: " + "A. " * 30000)
    assert time.monotonic() - start < 2.0
