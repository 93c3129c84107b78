"""scripts/prepare_openr1.py: hub-shaped rows of OpenR1-Math-46k-8192 -> the flat JSONL data=openr1-math-46k reads."""

import importlib.util
import json
from pathlib import Path

from trapo.data.loading import load_jsonl_items

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prepare_openr1.py"
spec = importlib.util.spec_from_file_location("prepare_openr1", SCRIPT)
prep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prep)


def test_hub_rows_become_question_solution_answer(tmp_path):
    rows = [
        {"data_source": "openr1", "prompt": [{"role": "system", "content": "sys"},
                                             {"role": "user", "content": "What is 1+1?\nPlease reason step by step, "
                                              "and put your final answer within \\boxed{}."}],
         "target": [{"role": "assistant", "content": "1+1=2\n\n\\boxed{2}"}],
         "reward_model": {"ground_truth": "2", "style": "rule"}},
        {"question": "Flat?", "solution": "yes \\boxed{1}", "answer": 1},
        {"prompt": [{"role": "user", "content": "no target"}], "reward_model": {"ground_truth": "3"}},
    ]
    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    assert prep.main(["--source", str(src), "--out", str(out)]) == 0
    items = load_jsonl_items(out, {"question": "question", "solution": "solution", "answer": "answer"})
    assert [(i.question, i.answer) for i in items] == [("What is 1+1?", "2"), ("Flat?", "1")]
    assert items[0].solution == "1+1=2\n\n\\boxed{2}"
