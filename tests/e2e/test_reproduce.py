"""experiments/reproduce.py: config hash, plan, tables, the paper's dry run, and the smoke must-shows
(tables + figures in minutes; a second call reuses every run and trains nothing)."""

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from experiments.report import paper_numbers as paper
from experiments.report import readme
from experiments.report import tables as tab
from experiments.report.plan import build_jobs, compose_run, config_hash, plan_specs

ROOT = Path(__file__).resolve().parents[2]


def rcfg(**kw):
    base = dict(preset="smoke", seeds=[0, 1], methods=["base", "sft", "grpo", "trapo"], ablation=["grpo", "trapo"],
                alphas=[0.1, 1.0], passk={"split": "steps3", "n_samples": 2, "temperature": 0.6, "methods": ["trapo"]},
                run_overrides=[], overrides=[], experiment="x", run_root="runs", reuse=True)
    base.update(kw)
    return OmegaConf.create(base)


# ---- hash and plan ------------------------------------------------------------------------------------
def test_config_hash_ignores_volatile_keys_only():
    a = compose_run(["preset=smoke", "method=trapo"])
    same = compose_run(["preset=smoke", "method=trapo", "method.alpha=0.1", "progress=false", "tracking.experiment=e",
                        "checkpoint.every=3", "resume=never", "engine.num_threads=1"])
    assert config_hash(a) == config_hash(same)
    for change in ("method.alpha=0.3", "seed=1", "train.steps=5", "method=grpo", "eval.max_new_tokens=20"):
        assert config_hash(compose_run(["preset=smoke", "method=trapo", change])) != config_hash(a), change


def test_plan_dedupes_identical_runs_and_indexes_every_cell():
    r = rcfg()
    specs = plan_specs(r)
    # rows: base sft grpo trapo (ablation repeats grpo, trapo) + 2 alphas, for 2 seeds
    assert len(specs) == 2 * 6
    jobs, index = build_jobs(r, specs)
    # trapo@alpha=0.1 is the trapo run
    assert len(jobs) == 2 * 5
    assert index[("trapo@alpha=0.1", 0)] is index[("trapo", 0)]
    assert index[("trapo@alpha=1", 1)] is not index[("trapo", 1)]
    assert index[("trapo", 0)].passk and not index[("grpo", 0)].passk
    assert index[("base", 0)].kind == "base" and index[("base", 0)].hash != index[("base", 1)].hash
    assert all(j.run_dir.parent == Path("runs") and j.hash[:12] in j.run_dir.name for j in jobs)


# ---- tables ---------------------------------------------------------------------------------------
def test_aggregate_mean_and_bootstrap_interval_over_seeds():
    m, lo, hi, n = tab.aggregate([10.0, 20.0, 30.0])
    assert (m, n) == (20.0, 3) and 10.0 <= lo <= m <= hi <= 30.0
    m, lo, hi, n = tab.aggregate([12.5])
    assert m == 12.5 and n == 1 and np.isnan(lo) and np.isnan(hi)
    assert tab.cell(m, lo, hi) == "12.5"
    assert tab.cell(20.0, 13.3, 26.7) == "20.0 [13.3, 26.7]"


def test_table_main_columns_and_paper_numbers():
    per_seed = {"trapo": [{"a": 50.0, "b": 30.0, "avg": 40.0}] * 3, "base": [{"a": 10.0, "b": 10.0, "avg": 10.0}]}
    df = tab.table_main(per_seed, ["a", "b"])
    assert list(df.columns[:4]) == ["method", "a", "b", "avg"]
    assert df.set_index("method").loc["trapo", "paper_avg"] == paper.TABLE1_AVG["trapo"]
    real = tab.table_main({"trapo": [{"amc23": 60.0, "avg": 60.0}]}, ["amc23"], real_benchmarks=True)
    assert real.loc[0, "paper_amc23"] == 66.2  # the paper's AMC column
    shown = tab.display(df, ["a", "b", "avg"], tab.LABELS, [("paper_avg", "paper avg")])
    md = tab.markdown(shown)
    assert "| TRAPO | 50.0 [50.0, 50.0] | 30.0 [30.0, 30.0] | 40.0 [40.0, 40.0] | 56.6 |" in md
    tex = tab.latex(shown, "x_y 5%")
    assert r"x\_y 5\%" in tex and r"\toprule" in tex


def test_comparison_sentences_state_ordering_and_collapse():
    def frame(avgs):
        return pd.DataFrame([{"method": m, "avg": v, "avg_lo": np.nan, "avg_hi": np.nan} for m, v in avgs.items()])

    main = readme.compare_main(frame({"base": 20, "sft": 30, "grpo": 25, "sft_rl": 32, "luffy": 33, "trapo": 40}))
    assert any("TRAPO has the highest average" in s for s in main)
    assert any("Pairs ordered as in the paper: 14 of 15" in s for s in main)  # grpo > sft in the paper
    worse = readme.compare_main(frame({"base": 20, "sft": 45, "trapo": 40}))
    assert any("does **not** have the highest" in s for s in worse)
    collapse = readme.compare_ablation(frame({"grpo": 30, "mg_prefix": 32, "mg_sft": 10, "mg_luffy": 33, "trapo": 36}))
    assert any("the collapse is reproduced" in s for s in collapse)
    none = readme.compare_ablation(frame({"grpo": 30, "mg_prefix": 32, "mg_sft": 31, "mg_luffy": 33, "trapo": 36}))
    assert any("does **not** collapse" in s for s in none)


def test_table_dynamics_first_and_last_steps_of_rl_mean_over_seeds():
    steps = np.arange(1, 31)

    def hist(ent_end, phase_sft=0):
        return pd.DataFrame({"step": steps, "train/phase_rl": (steps > phase_sft).astype(float),
                             "train/entropy": np.where(steps > 20, ent_end, 0.1),
                             "train/reward_mean": np.where(steps > phase_sft, 0.5, np.nan),
                             "train/grad_norm": np.linspace(1.0, 3.0, 30)})

    df = tab.table_dynamics({"mg_sft": [hist(0.5), hist(0.3)], "sft_rl": [hist(0.2, phase_sft=10)], "none": []})
    d = df.set_index("method")
    assert list(d.index) == ["mg_sft", "sft_rl"] and d.loc["mg_sft", "n_seeds"] == 2
    assert d.loc["mg_sft", "entropy_first"] == pytest.approx(0.1) and d.loc["mg_sft", "entropy_last"] == pytest.approx(0.4)
    assert d.loc["mg_sft", "entropy_max"] == pytest.approx(0.4)  # the mean over seeds of each run's maximum
    assert d.loc["sft_rl", "entropy_first"] == pytest.approx(0.1)  # steps 11-20: the RL phase's first ten
    assert d.loc["sft_rl", "grad norm_first"] == pytest.approx(np.linspace(1.0, 3.0, 30)[10:20].mean())
    assert np.isnan(d.loc["mg_sft", "expert p < α_first"])  # not logged
    shown = tab.display_dynamics(df, tab.ABLATION_LABELS).set_index("method")
    assert shown.loc["+ plain SFT loss on prefixes", "entropy"] == "0.1 → 0.4 (0.4)"
    assert shown.loc["sft_rl", "expert p < α"] == ""


# ---- command line --------------------------------------------------------------------------------
def cli(args, cwd: Path, timeout=600):
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{cwd}/mlflow.db", PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, str(ROOT / "experiments" / "reproduce.py"), *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout)
    return res, time.monotonic() - t0


def test_paper_dry_run_prints_launches_and_starts_nothing(tmp_path):
    res, _ = cli(["preset=paper", "dry_run=true", "seeds=[0]", f"run_root={tmp_path}/runs"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "13 distinct runs" in out and "nothing was started" in out  # Table 1 has ReLIFT's row
    assert "preset=paper method=trapo seed=0" in out and "OpenRLHF (Ray job" in out
    # every baseline on OpenRLHF (baselines/): no run falls back to the local engine
    assert "engine=local" not in out and "local engine" not in out
    for method, what in (("sft", "OpenRLHF's SFT trainer"), ("sft_rl", "then the RL launch"),
                         ("relift", "ReLIFT's SFT step")):
        block = next(b for b in out.split("## ") if b.startswith(f"{method} seed 0"))
        assert f"preset=paper method={method} seed=0" in block and what in block, block
    assert "openrlhf/sft/final" not in out.split("## sft seed 0")[1].split("## ")[0]  # sft's model: openrlhf/final
    assert "experiments/evaluate.py model=qwen2.5-math-7b backend=vllm" in out  # the base model
    assert "benchmarks=[aime24,amc23,math500,minerva_math,olympiadbench]" in out
    assert "'benchmarks=[aime24]' n_samples=256" in out  # pass@k on AIME24 up to k=256
    assert not (tmp_path / "runs").exists() or not any(p.name != "_logs" for p in (tmp_path / "runs").iterdir())


def test_a_table_whose_rows_are_not_asked_for_is_not_written(tmp_path):
    """One ablation run made alone (`methods=[] ablation=[mg_sft]`, as the SmolLM2 runs are made) wrote an empty
    Table 1 (`|  |` and `||`) into its README; a table with no rows asked for is left out."""
    res, _ = cli(["preset=smoke", "missing=skip", "methods=[]", "ablation=[grpo]", "alphas=[]", "seeds=[0]",
                  "figures=false", "index=null", f"output_dir={tmp_path}/out", f"run_root={tmp_path}/runs"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "out"
    assert not list(out.glob("table_main.*")) and (out / "table_ablation.md").exists()
    text = (out / "README.md").read_text()
    assert "### Table 1" not in text and "### Ablation chain" in text and "\n||\n" not in text


def test_smollm2_reproduce_plans_two_seeds_of_every_table(tmp_path):
    """`python experiments/reproduce.py preset=smollm2` exists (issue 27): its dry run lists the main, ablation and
    alpha tables' runs for two seeds, on 1,000 problems a word-problem split, and trains nothing."""
    res, _ = cli(["preset=smollm2", "dry_run=true", f"run_root={tmp_path}/runs"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "seeds [0, 1]" in out and "24 (row, seed) cells -> 22 distinct runs" in out, out[:2000]
    assert "benchmarks steps1, steps2)" in out, out[:2000]  # the task's splits, not the five all-zero benchmarks
    for method in ("grpo", "mg_prefix", "mg_sft", "mg_luffy", "trapo", "sft", "sft_rl", "relift", "luffy"):
        assert f"method={method} seed=1" in out, method
    assert "data.eval_n=1000" in out and "method.alpha=1.0" in out
    assert not (tmp_path / "runs").exists() or not any(p.name != "_logs" for p in (tmp_path / "runs").iterdir())


def test_method_and_seed_overrides_are_refused(tmp_path):
    res, _ = cli(["preset=smoke", "method=grpo", "dry_run=true"], tmp_path)
    assert res.returncode != 0 and "chooses methods and seeds itself" in res.stderr + res.stdout


@pytest.mark.slow
def test_smoke_tables_figures_then_reuse(tmp_path):
    out = tmp_path / "out"
    args = ["preset=smoke", f"output_dir={out}", "seeds=[0]", f"run_root={tmp_path}/runs"]
    res, first = cli(args, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    print(f"first smoke call: {first:.0f} s")  # a speed goal, reported, not asserted (loaded CI machines vary)
    main = pd.read_csv(out / "table_main.csv")
    assert {"trapo", "grpo", "sft", "sft_rl", "luffy", "base"} <= set(main["method"])
    assert {"method", "avg", "steps2", "skill3", "steps4", "paper_avg"} <= set(main.columns)
    abl = pd.read_csv(out / "table_ablation.csv")
    assert list(abl["method"]) == ["grpo", "mg_prefix", "mg_sft", "mg_luffy", "trapo"]
    assert list(abl["paper_avg"]) == [50.4, 52.7, 32.3, 53.6, 56.6]
    assert (out / "table_alpha.csv").exists() and (out / "table_main.tex").exists()
    dyn = pd.read_csv(out / "table_dynamics.csv").set_index("method")  # every trained row, from its metrics.jsonl
    assert set(dyn.index) == {"sft", "grpo", "sft_rl", "relift", "luffy", "trapo", "mg_prefix", "mg_sft", "mg_luffy"}
    assert dyn.drop("sft")["entropy_first"].notna().all() and dyn.loc["trapo", "expert p < α_last"] >= 0  # RL's
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) >= 3 and {"fig_reward.png", "fig_response_length.png", "fig_entropy.png"} <= set(pngs)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == shlex.join(["python", "experiments/reproduce.py", *args])
    assert manifest["git"]["commit"] and manifest["machine"]["cores"]
    assert manifest["eval_n"] == 16  # preset=smoke's data.eval_n: the problems of each evaluation split
    text = (out / "README.md").read_text()
    assert manifest["command"] in text and "table_main" in text and "fig_reward.png" in text
    assert "16 problems an evaluation split" in text  # the README says how many problems each interval rests on
    # a smoke reproduce says first that it is a pipeline check, not a comparison (its verdicts would alarm)
    assert manifest["comparison"][0].startswith("preset=smoke is a check that every path runs")
    assert "not a comparison" in res.stdout + res.stderr
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["status"]) <= {"trained", "evaluated"}
    # every ordering the tables state, with its intervals over problems and over seeds (one seed: no seed interval,
    # so nothing holds), named in the README
    orders = pd.read_csv(out / "orderings.csv")
    assert ("trapo", "grpo") in set(zip(orders["a"], orders["b"])) and (orders["n_problems"] == 16).all()
    assert orders["problems_lo"].notna().all() and set(orders["verdict"]) == {"not resolved"}
    assert "Which orderings hold" in text and manifest["orderings"]
    # every run is a FINISHED MLflow run tagged with its config hash
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("trapo-reproduce")
    tagged = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
    assert {r.data.tags["config_hash"] for r in tagged} == set(runs["config_hash"])
    # relift trained with its step hook (ReLIFT's buffer and SFT step), not as plain GRPO
    (relift,) = [r for r in tagged if r.data.tags.get("method") == "relift"]
    assert "train/relift_hard_prompts" in relift.data.metrics, sorted(relift.data.metrics)

    # the same call again: nothing is trained
    res, second = cli(args, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    print(f"second (reusing) call: {second:.0f} s")
    runs2 = pd.read_csv(out / "runs.csv")
    assert runs2["status"].str.startswith("reused (MLflow run").all()
    assert len(client.search_runs([exp.experiment_id], "")) == len(tagged)  # no new MLflow run
    assert pd.read_csv(out / "table_main.csv").equals(main)

    # without the MLflow store (moved away), the run dirs are found by their hash: still no training
    (tmp_path / "mlflow.db").rename(tmp_path / "mlflow.db.bak")
    res, third = cli(args, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert pd.read_csv(out / "runs.csv")["status"].eq("reused (run dir)").all()
    assert pd.read_csv(out / "table_main.csv").equals(main)

    # missing=skip: a seed nobody trained stays empty instead of being trained
    res, _ = cli([*args[:2], "seeds=[0,1]", args[3], "missing=skip"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    runs3 = pd.read_csv(out / "runs.csv")
    assert runs3.loc[runs3["seed"] == 1, "status"].str.startswith("missing").all()
    assert runs3.loc[runs3["seed"] == 0, "status"].eq("reused (run dir)").all()
    main3 = pd.read_csv(out / "table_main.csv")
    assert (main3["n_seeds"] == 1).all()
    assert main3.set_index("method")["avg"].equals(main.set_index("method")["avg"])
    assert not list((tmp_path / "runs").glob("*_s1_*"))  # nothing was trained for seed 1

    # only evaluation settings change (more problems a split): every trained run is evaluated again from its final
    # weights, none is trained again; the new runs are MLflow runs of their own, found by hash on the next call
    (tmp_path / "mlflow.db.bak").rename(tmp_path / "mlflow.db")
    more = [*args, "data.eval_n=24"]
    res, _ = cli(more, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    runs4 = pd.read_csv(out / "runs.csv")
    trained_rows = runs4[runs4["method"] != "base"]
    assert trained_rows["status"].str.startswith("re-evaluated (trained in MLflow run").all(), runs4["status"]
    manifest4 = json.loads((out / "manifest.json").read_text())
    assert manifest4["eval_n"] == 24 and manifest4["n_reevaluated"] == trained_rows["config_hash"].nunique()
    assert not set(runs4["config_hash"]) & set(runs["config_hash"])  # new hashes, yet no training
    for d in trained_rows["run_dir"]:
        d = Path(d) if Path(d).is_absolute() else ROOT / d
        assert (d / "checkpoints").is_symlink() and (d / "metrics.jsonl").exists()
        summary = json.loads((d / "eval" / "summary.json").read_text())
        assert {s["n"] for name, s in summary.items() if name != "valid"} == {24}, summary
    exp_runs = client.search_runs([exp.experiment_id], "tags.reevaluated_from != ''")
    assert len(exp_runs) == manifest4["n_reevaluated"]
    for r in exp_runs:  # the training curve travels with it: every step of the training run's metrics.jsonl
        trained_steps = [json.loads(x)["step"] for x in
                         (Path(r.data.tags["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        logged = [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")]
        assert sorted(logged) == sorted(trained_steps) and logged, (r.data.tags["method"], logged)
    res, _ = cli(more, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert pd.read_csv(out / "runs.csv")["status"].str.startswith("reused (MLflow run").all()


def test_table_columns_are_the_tasks_splits_then_its_benchmarks():
    """A word-problem run config's tables had no split columns (only `eval_benchmarks`, all 0 on SmolLM2)."""
    from omegaconf import OmegaConf

    from experiments.report.pipeline import benchmarks_of

    none = OmegaConf.create({"benchmarks": None})
    words = compose_run(["preset=smollm2", "method=grpo"])
    assert benchmarks_of(none, words) == ["steps1", "steps2", "aime24", "amc23", "math500", "minerva_math",
                                          "olympiadbench"]
    assert benchmarks_of(none, compose_run(["preset=mini", "method=grpo"])) == ["steps2", "steps3", "skill2", "skill3",
                                                                               "steps4"]
    assert benchmarks_of(OmegaConf.create({"benchmarks": ["steps1"]}), words) == ["steps1"]
