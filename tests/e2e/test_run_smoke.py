"""End to end: the Hydra entry point trains TRAPO and the baselines and leaves finished MLflow runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN_METRICS = ["train/reward_mean", "train/entropy", "train/response_length", "train/loss"]
GUIDED_METRICS = [f"train/guidance_level_{i}" for i in range(4)] + ["train/expert_token_prob",
                                                                     "train/expert_low_prob_frac"]
SPLITS = ["steps2", "steps3", "skill2", "skill3", "steps4"]  # conf/data/synthetic.yaml
EVAL_METRICS = [f"eval/{s}/accuracy" for s in SPLITS] + ["eval/avg_accuracy"]


def run_cli(args, tmp_path, check=True):
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), *args,
                           f"hydra.sweep.dir={tmp_path}/multirun", f"hydra.run.dir={tmp_path}/run", "progress=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=600)


METHODS = ["trapo", "grpo", "sft_rl", "sft", "relift"]  # the TRAPO trainer's and the baselines/ runners'
RELIFT_METRICS = ["train/relift_hard_prompts", "train/relift_buffer_size", "train/relift_sft_steps"]


@pytest.mark.slow
def test_multirun_trapo_and_the_baselines(tmp_path):
    """The issue's command: `python experiments/run.py -m method=trapo,grpo,sft_rl,sft,relift preset=smoke`."""
    import time

    t0 = time.monotonic()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = run_cli(["-m", f"method={','.join(METHODS)}", "preset=smoke", "train.lr=0.0001"], tmp_path)
    print(f"five-method smoke multirun: {time.monotonic() - t0:.0f} s")
    assert res.returncode == 0, res.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("trapo")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3's UI: the Runs page
    runs = client.search_runs([exp.experiment_id])
    by_method = {r.data.params["method.name"]: r for r in runs}
    assert sorted(by_method) == sorted(METHODS)
    log = res.stdout + res.stderr
    for name, r in by_method.items():
        assert r.info.status == "FINISHED"
        tags = r.data.tags
        assert tags["method"] == name and tags["seed"] == "0" and tags["preset"] == "smoke"
        assert tags["overrides"] == "train.lr=0.0001"  # what differs; method/preset/seed have their own tags
        assert r.info.run_name.startswith(f"{name} lr=0.0001 s0 smoke "), r.info.run_name
        run_dir = Path(tags["run_dir"])
        assert run_dir.parent == (tmp_path / "multirun").resolve() and run_dir.name.endswith(f"_{name}")
        assert tags["mlflow.source.name"] == "experiments/run.py"
        if commit:
            assert tags["git_commit"] == tags["mlflow.source.git.commit"] == commit
        # the run's log, with one line per step, and the start/end lines naming the outputs and the MLflow run
        text = (run_dir / "run.log").read_text()
        assert all(f"step {i}/4" in text for i in range(1, 5)) and r.info.run_id[:8] in text
        assert log.count(f"{run_dir.name} | MLflow run '{r.info.run_name}' ({r.info.run_id[:8]}") == 2  # start, end
    assert "all outputs in " in log and "multirun" in log.split("all outputs in ")[1].splitlines()[0]
    assert "Loading weights" not in log and "Writing model shards" not in log and "pynvml" not in log
    assert len({r.info.run_name for r in runs}) == len(METHODS)
    for name, r in by_method.items():
        expected = (["train/loss", "train/grad_norm"] if name == "sft" else TRAIN_METRICS) + EVAL_METRICS
        for key in expected + (RELIFT_METRICS if name == "relift" else []):
            assert key in r.data.metrics, (name, key)
        print(f"{name}: eval/avg_accuracy={r.data.metrics['eval/avg_accuracy']:.3f}")
        hist = client.get_metric_history(r.info.run_id, "train/loss")
        assert sorted(m.step for m in hist) == [1, 2, 3, 4]
        assert any(a.path == "config" for a in client.list_artifacts(r.info.run_id))
        # the smoke model answers some prompts: a pipeline that scores 0 everywhere is broken, not "untrained"
        assert r.data.metrics["eval/avg_accuracy"] > 0, (name, r.data.metrics)
    for name in ("trapo", "grpo", "sft_rl", "relift"):
        rewards = [m.value for m in client.get_metric_history(by_method[name].info.run_id, "train/reward_mean")]
        assert max(rewards) > 0, (name, rewards)
    for key in GUIDED_METRICS:
        assert key in by_method["trapo"].data.metrics
    # a comparison at a glance: the multirun ends with a table (one row per job) and writes it as CSV
    import csv

    rows = list(csv.DictReader((tmp_path / "multirun" / "summary.csv").open()))
    assert sorted(r["method"] for r in rows) == sorted(METHODS), rows
    for row in rows:
        r = by_method[row["method"]]
        assert row["settings"] == "lr=0.0001" and row["status"] == "finished" and row["mlflow_run"] == r.info.run_id[:8]
        assert float(row["score"]) == pytest.approx(r.data.metrics["eval/avg_accuracy"]) == r.data.metrics["score"]
    printed = [line.split()[0] for line in log.split("summary (")[1].splitlines()[1:7] if line.strip()]
    assert printed[0] == "method" and sorted(printed[1:]) == sorted(METHODS), printed
    # and the same table from MLflow, for runs made earlier
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "summary.py"), "--experiment", "trapo",
                          "--filter", "tags.preset = 'smoke'", "--csv", str(tmp_path / "t.csv")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    table = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert sorted(r["method"] for r in table) == sorted(METHODS) and all(r["status"] == "finished" for r in table)
    levels = sum(by_method["trapo"].data.metrics[f"train/guidance_level_{i}"] for i in range(4))
    assert levels == pytest.approx(1.0)
    # sft_rl logs RL metrics only in its RL half (steps 3-4)
    hist = client.get_metric_history(by_method["sft_rl"].info.run_id, "train/reward_mean")
    assert sorted(m.step for m in hist) == [3, 4]
    # sft: SFT on every step, no RL metric; relift: its buffer every step, an SFT step once 4 hardest prompts gathered
    assert "train/reward_mean" not in by_method["sft"].data.metrics
    assert by_method["sft"].data.metrics["train/phase_rl"] == 0.0
    sizes = client.get_metric_history(by_method["relift"].info.run_id, "train/relift_buffer_size")
    assert sorted(m.step for m in sizes) == [1, 2, 3, 4]


def test_unknown_method_lists_options(tmp_path):
    res = run_cli(["method=nope", "preset=smoke"], tmp_path)
    assert res.returncode != 0
    assert "Could not find 'method/nope'" in res.stderr
    for name in ("trapo", "grpo", "sft_rl", "sft"):
        assert name in res.stderr


@pytest.mark.parametrize("override, msg", [
    ("method.alpha=-0.1", "method.alpha"),
    ("method.guidance_schedule.thresholds=[0.7,0.5,0.9]", "increasing"),
    ("method.guidance_schedule.group_sizes=[4,2,1]", "guidance"),
    ("train.group_size=6", "group_size"),
])
def test_bad_config_rejected_before_work(tmp_path, override, msg):
    res = run_cli(["preset=smoke", override], tmp_path)
    assert res.returncode != 0
    assert msg in res.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
