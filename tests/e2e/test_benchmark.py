"""experiments/benchmark.py in its quickest mode: every system runs, the last line is the JSON summary.

About 20 s with the smoke preset's tiny model cached (it is built on first use, as for the other tests).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"ours_grpo_step_s", "ours_trapo_step_s", "trl_grpo_step_s", "trapo_over_grpo", "ours_over_trl",
        "ours_over_trl_real", "grade_items_per_s"}


@pytest.mark.slow
def test_quick_benchmark_prints_the_summary(tmp_path):
    try:
        import trl  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"trl is not importable ({exc}); it comes with the dev extra: pip install -e '.[dev]'")
    report = tmp_path / "benchmarks.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "benchmark.py"), "--quick", "--threads", "1", "--rss-probe",
         "--ratio-processes", "2", "--out", str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=580,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == KEYS
    for key in KEYS - {"grade_items_per_s"}:
        assert isinstance(result[key], float) and result[key] > 0, (key, result[key])
    grading = result["grade_items_per_s"]
    assert set(grading) == {"grader", "math_verify"} and all(v > 0 for v in grading.values())
    text = report.read_text()
    assert "python experiments/benchmark.py --quick" in text and ", trl " in text
    assert "peak RSS" in text and "| ours_trapo |" in text and "| trl_grpo |" in text
    # the headline ratio is the median over this process and a fresh one, both listed
    assert "[fixed] fresh process 1: trapo_over_grpo" in proc.stdout
    for key in ("trapo_over_grpo", "ours_over_trl"):  # each the median over this process and a fresh one
        line = next(x for x in text.splitlines() if f"`{key}` is the median of its ratio on `fixed` in 2 processes" in x)
        listed = [float(r) for r in line.split("alone): ")[1].split(". ")[0].split(", ")]
        assert len(listed) == 2 and result[key] == round(sum(listed) / 2, 3), (key, listed, result[key])


@pytest.mark.slow
def test_quick_memory_benchmark_prints_a_row_per_budget():
    """experiments/benchmark_memory.py --quick: one fresh process per token budget, each with its peak RSS."""
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "benchmark_memory.py"), "--quick",
                           "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["budget"] for r in rows] == [16, None]
    for r in rows:
        assert "error" not in r, r
        assert r["peak_rss_mb"] >= r["loaded_mb"] > 0 and r["update_s"] > 0
