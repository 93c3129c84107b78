r"""Training rewards (trapo/rewards.py; the table of cases is docs/rewards.md).

`math_verify` must give math-verify's own verdict, `verify(parse(\boxed{gold}), parse(response))` on the whole
response (the authors' reward), case by case; `boxed` reads the last box only and refuses boxes that differ.
The evaluation grader's lenient extraction (a later sentence overrides a box) is not a training reward."""

from __future__ import annotations

import time

import pytest
from math_verify import parse, verify

from trapo.rewards import BoxedExactMatch, MathVerifyReward, StrictBoxedReward, all_boxed, build_reward

# (gold, response, strict last-box verdict)
CASES = [
    ("42", r"The answer is \boxed{42}.", 1.0),
    ("42", "So the answer is 42.", 0.0),
    ("42", "42", 0.0),
    ("42", r"\boxed{41} wait, so the answer is 42.", 0.0),  # a later sentence does not override the box
    ("42", r"\boxed{42} Wait, that is wrong. The answer is 41.", 1.0),  # boxed, then retracted in prose
    ("42", r"\boxed{41} \boxed{42}", 0.0),  # box spam
    ("42", r"\boxed{40} \boxed{41} \boxed{42} \boxed{43}", 0.0),
    ("42", r"\boxed{42} \boxed{42}", 1.0),
    ("42", r"\boxed{\frac{84}{2}}", 1.0),
    (r"\frac{1}{2}", r"so the answer is \boxed{0.5}", 1.0),
    ("42", "I don't know.", 0.0),
]


@pytest.fixture(scope="module")
def rewards():
    mv, bx = build_reward("math_verify"), build_reward("boxed")
    yield mv, bx
    mv.close()
    bx.close()


def test_math_verify_reward_is_math_verify_on_the_whole_response(rewards):
    mv, _ = rewards
    golds, responses = [c[0] for c in CASES], [c[1] for c in CASES]
    expected = [1.0 if verify(parse("\\boxed{" + g + "}"), parse(r)) else 0.0 for g, r in zip(golds, responses)]
    assert mv(responses, golds) == expected
    # the cases the review ran against math-verify 0.9.0 (TRAPO-SPEC.md): gold 42
    assert mv(["So the answer is 42.", "42", r"\boxed{41} wait, so the answer is 42.", r"\boxed{41} \boxed{42}"],
              ["42"] * 4) == [1.0, 1.0, 0.0, 0.0]


def test_strict_boxed_reward_reads_the_last_box_and_refuses_box_spam(rewards):
    _, bx = rewards
    assert bx([c[1] for c in CASES], [c[0] for c in CASES]) == [c[2] for c in CASES]


def test_reward_names():
    assert isinstance(build_reward("math"), MathVerifyReward)  # the name older configs use for real data
    assert isinstance(build_reward("boxed"), StrictBoxedReward)
    assert isinstance(build_reward("exact"), BoxedExactMatch)
    with pytest.raises(ValueError, match="data.reward.*math_verify, boxed, exact"):
        build_reward("lenient")


def test_real_data_configs_train_on_the_authors_reward():
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for data in ("jsonl", "openr1-math-46k"):
            cfg = compose(config_name="config", overrides=[f"data={data}"])
            assert isinstance(build_reward(cfg.data.reward), MathVerifyReward), data
        assert compose(config_name="config", overrides=["preset=paper"]).data.reward == "math_verify"


def test_all_boxed_balances_braces():
    assert all_boxed(r"a \boxed{\frac{1}{2}} b \boxed {3} \boxed{4") == [r"\frac{1}{2}", "3"]


def test_math_verify_reward_is_cached_and_checks_lengths(rewards):
    mv, _ = rewards
    assert mv([r"\boxed{4}"], ["4"]) == [1.0]
    start = time.monotonic()
    for _ in range(20):  # RL groups repeat the same golds and responses: cached
        assert mv([r"\boxed{4}"] * 8, ["4"] * 8) == [1.0] * 8
    assert time.monotonic() - start < 1.0
    with pytest.raises(ValueError):
        mv(["a"], ["1", "2"])


def test_reward_survives_a_dead_pool():
    reward = MathVerifyReward(workers=1)
    try:
        assert reward([r"\boxed{1}"], ["1"]) == [1.0]
        for w in reward.grader._pool.workers:  # simulate an OOM kill of every worker
            w.proc.kill()
        assert reward([r"\boxed{3}", r"\boxed{2}"], ["3", "3"]) == [1.0, 0.0]
    finally:
        reward.close()


# ---- your own reward, by name --------------------------------------------------------------------------------
@pytest.fixture
def tests_on_path(monkeypatch):
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    yield
    sys.modules.pop("custom_reward", None)


def test_a_reward_function_by_target(tests_on_path):
    r = build_reward({"_target_": "custom_reward.contains_gold"})
    assert r(["x = 42", "x = 41"], ["42", "42"]) == [1.0, 0.0]
    assert build_reward({"_target_": "custom_reward.scaled", "scale": 0.5})(["42"], ["42"]) == [0.5]
    assert build_reward({"_target_": "custom_reward.LengthPenalty", "per_char": 0.1})(["abcd"], ["1"]) == [-0.4]


def test_a_bad_reward_target_fails_clearly(tests_on_path):
    with pytest.raises(ValueError, match=r"data.reward._target_='custom_reward.nope' cannot be imported"):
        build_reward({"_target_": "custom_reward.nope"})
    with pytest.raises(ValueError, match="returned 1 rewards for 2 responses"):
        build_reward({"_target_": "custom_reward.wrong_length"})(["a", "b"], ["1", "2"])
    with pytest.raises(ValueError, match="needs _target_"):
        build_reward({"name": "x"})


def test_a_run_trains_on_a_reward_named_on_the_command_line(tmp_path, monkeypatch):
    """`data.reward={_target_: ...}` from the command line reaches the trainer (smoke preset, 1 step)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
               PYTHONPATH=os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(tests.parents[1] / "experiments" / "run.py"), "method=grpo", "preset=smoke",
           "train.steps=1", "progress=false", "++data.eval_splits={}", "++data.valid.n=2", "eval.max_new_tokens=4",
           "data.reward={_target_: custom_reward.LengthPenalty, per_char: 0.01}", f"hydra.run.dir={tmp_path}/run"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (row,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert row["train/reward_all_mean"] < 0  # every response pays for its length: only this reward goes negative
