"""experiments/crosscheck_trl.py: ours, ours at lr ~ 0 and TRL's GRPOTrainer on the same prompts, side by side."""

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))


@pytest.mark.slow
def test_crosscheck_smoke_writes_three_curves(tmp_path, monkeypatch, capsys):
    pytest.importorskip("trl", reason="trl is not installed (pip install -e '.[dev]')")
    import crosscheck_trl

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    out = tmp_path / "cc.md"
    assert crosscheck_trl.main(["preset=smoke", "train.steps=3", "--out", str(out), "--window", "2"]) == 0
    printed = capsys.readouterr().out
    assert "[trl] step 1/3: reward" in printed and "[trl] step 3/3: reward" in printed  # TRL's run shows progress
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert sorted(runs) == ["ours", "ours_lr0", "trl"]
    for name, r in runs.items():
        assert len(r["reward"]) == 3, name  # one mean reward per step, for TRL too
        assert all(0.0 <= x <= 1.0 for x in r["reward"]), (name, r["reward"])
        assert math.isfinite(r["eval"]["eval/avg_accuracy"])
    # the same prompts in the same order: before any update, ours and the lr~0 control sample alike
    assert runs["ours"]["reward"][0] == runs["ours_lr0"]["reward"][0]
    text = out.read_text()
    assert "| 1-2 | " in text and "| rise |" in text and "trl" in text


def test_crosscheck_with_a_work_folder_reuses_finished_runs(tmp_path, monkeypatch, capsys):
    # --work: the hours-long real-LM cross-check can be stopped and run again; a finished run is not redone
    import crosscheck_trl

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    work, out = tmp_path / "work", tmp_path / "cc.md"
    args = ["preset=smoke", "train.steps=2", "--skip", "trl", "--work", str(work), "--out", str(out)]
    assert crosscheck_trl.main(args) == 0
    first = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert (work / "ours.json").exists() and (work / "ours" / "metrics.jsonl").exists()
    capsys.readouterr()
    assert crosscheck_trl.main(args) == 0
    assert capsys.readouterr().out.count("finished before") == 2
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == first


def test_report_gives_each_accuracy_its_interval_and_plots_the_curves(tmp_path):
    import crosscheck_trl
    from hydra import compose, initialize_config_dir
    from scipy.stats import binomtest

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["preset=smoke", "method=grpo"])
    n = cfg.data.eval_n
    results = {"ours": {"reward": [0.1, 0.2, 0.3, 0.4], "eval": {"eval/steps1/accuracy": 4 / n,
                                                                    "eval/avg_accuracy": 4 / n}, "seconds": 1.0},
               "ours_lr0": {"reward": [0.1, 0.1, 0.1, 0.1], "eval": {"eval/steps1/accuracy": 0.0,
                                                                      "eval/avg_accuracy": 0.0}, "seconds": 1.0}}
    text = crosscheck_trl.report(results, cfg, window=2, command="x")
    ci = binomtest(4, n).proportion_ci(method="wilson")
    assert f"| eval/steps1/accuracy | {n} | {4 / n:.3f} [{ci.low:.2f}, {ci.high:.2f}] | 0.000 [0.00," in text
    crosscheck_trl.plot(results, tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").stat().st_size > 1000
    # the paired difference against the control: steps 3-4 differ by 0.2 and 0.3 -> mean 0.25, t interval
    # 0.25 +- 12.706 x 0.0707 / sqrt(2) = +-0.635
    assert "| 3-4 | +0.250 [-0.385, +0.885] |" in text, text
    assert "| 1-4 (all) | +0.150 [" in text


def test_work_folder_reuses_a_run_only_under_the_config_it_ran_with(tmp_path):
    """--work reuses a finished run's result and resumes a stopped one: only for the same config, less the
    learning rate and thread count (the lr ~ 0 control serves every lr); another config is refused by name."""
    from experiments.crosscheck_trl import claim_run_folder, compose, fingerprint

    base = fingerprint(compose(["preset=smoke", "seed=0"]))
    assert fingerprint(compose(["preset=smoke", "seed=0", "train.lr=3e-6", "engine.num_threads=2"])) == base
    assert fingerprint(compose(["preset=smoke", "seed=1"])) != base
    assert fingerprint(compose(["preset=smoke", "seed=0", "train.prompts_per_step=8"])) != base
    claim_run_folder(tmp_path / "ours", base, 2e-5)
    claim_run_folder(tmp_path / "ours", base, 2e-5)  # the same run, started again: resumes
    with pytest.raises(SystemExit, match="another config"):
        claim_run_folder(tmp_path / "ours", base, 3e-6)


def test_reuse_reads_finished_runs_from_a_report_only_under_the_same_config(tmp_path, monkeypatch, capsys):
    """--reuse: a committed report's runs are not run again on a fresh clone (adding TRL to a real-LM report
    costs TRL's hour, not three), and a report made under another config is refused by name."""
    import crosscheck_trl

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    first_out, out = tmp_path / "first.md", tmp_path / "cc.md"
    assert crosscheck_trl.main(["preset=smoke", "train.steps=2", "--skip", "ours_lr0,trl", "--out", str(first_out)]) == 0
    first = json.loads(first_out.with_suffix(".json").read_text())["runs"]
    capsys.readouterr()
    args = ["preset=smoke", "train.steps=2", "--skip", "ours_lr0,trl", "--reuse", str(first_out.with_suffix(".json"))]
    assert crosscheck_trl.main([*args, "--out", str(out)]) == 0
    assert "ours: finished before, read from" in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == first
    with pytest.raises(SystemExit, match="run ours was made under another config"):
        crosscheck_trl.main(["preset=smoke", "train.steps=3", *args[2:], "--out", str(out)])
