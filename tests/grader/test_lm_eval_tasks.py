"""lm-eval task definitions over the local benchmark files, graded by our grader (offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import benchmarks as bm

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install 'lm-eval[hf]')")

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "evaluation" / "lm_eval_tasks"
DATA = bm.default_data_dir()
pytestmark = pytest.mark.skipif(
    DATA is None or not (DATA / "math500.jsonl").exists(), reason="benchmark files not found (set TRAPO_DATA_DIR)"
)


def _oracle_lm(answer_of):
    from lm_eval.api.model import LM

    class Oracle(LM):
        """Answers from the doc itself: checks task wiring, data and grading end to end."""

        def generate_until(self, requests, disable_tqdm=False):
            return [answer_of(r.doc) for r in requests]

        def loglikelihood(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

    return Oracle()


def _run(lm, tasks, limit):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(model=lm, tasks=tasks, task_manager=TaskManager(include_path=str(TASKS)), limit=limit)
    return {t: out["results"][t]["exact_match,none"] for t in tasks}


def test_tasks_grade_with_our_grader():
    tasks = ["trapo_aime24", "trapo_amc23", "trapo_math500", "trapo_minerva_math", "trapo_olympiadbench"]
    right = _run(_oracle_lm(lambda doc: f"Thus the answer is $\\boxed{{{doc['gold']}}}$."), tasks, limit=6)
    assert right == {t: 1.0 for t in tasks}
    wrong = _run(_oracle_lm(lambda doc: "\\boxed{-12345}"), ["trapo_amc23"], limit=6)
    assert wrong == {"trapo_amc23": 0.0}


def test_prompt_is_the_qwen_math_instruction():
    sys.path.insert(0, str(TASKS))
    try:
        import utils  # the task folder's utils.py
    finally:
        sys.path.remove(str(TASKS))
    text = utils.doc_to_text({"question": "What is 1+1?"})
    assert text == "What is 1+1?\nPlease reason step by step, and put your final answer within \\boxed{}."
    assert utils.process_results({"gold": "025", "tolerance": -1.0, "answer_type": ""}, ["\\boxed{25}"]) == {"exact_match": 1.0}


def test_cli_runs_offline_with_a_tiny_local_model(tmp_path):
    from test_eval_pipeline import _tiny_model

    model = _tiny_model(tmp_path / "tiny")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRAPO_DATA_DIR": str(DATA)}
    cli = [sys.executable, "-m", "lm_eval"]
    proc = subprocess.run(
        [*cli, "--model", "hf", "--model_args", f"pretrained={model},max_length=2048", "--device", "cpu",
         "--include_path", str(TASKS), "--tasks", "trapo_math500", "--limit", "2", "--gen_kwargs", "max_gen_toks=8",
         "--output_path", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results*.json")).read_text())
    assert results["results"]["trapo_math500"]["exact_match,none"] == 0.0  # a random model
    assert results["n-samples"]["trapo_math500"]["effective"] == 2
