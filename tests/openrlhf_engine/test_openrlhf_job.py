"""The whole OpenRLHF job on CPU (`engine.rollout=cpu`), from the command line to the MLflow store.

    python experiments/run.py engine=openrlhf engine.rollout=cpu preset=smoke method=M train.steps=2

runs as a user runs it (a subprocess), joining one Ray cluster this module starts and stops: OpenRLHF's own loop
(its controller, DeepSpeed actor on gloo, trapo's CPU rollout engine in vLLM's place, or OpenRLHF's SFT trainer),
then the final evaluation. The test reads the MLflow store: every run FINISHED, the local engine's metric names at
every training step, the evaluation metrics (non-zero on smoke: the smoke model answers some problems at T=0).

CI runs `CI_METHODS` (sft: OpenRLHF's SFT trainer, about one minute) and the agreement test (a TRAPO job of one step
against the local engine: the rollout with guidance, weight sync, the TRAPO loss, the same checks of the store, about
two and a half minutes), most of it process start-up, to keep the suite within its CI budget;
TRAPO_OPENRLHF_JOB=all runs all six methods at the smoke budget (sft_rl: the SFT job, then an RL job from its model,
under one parent run), TRAPO on ZeRO-3 and the kill test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openrlhf_support import REPO, require_openrlhf

require_openrlhf()
pytestmark = [pytest.mark.openrlhf, pytest.mark.slow]

STEPS = 2
ALL_METHODS = ("trapo", "grpo", "luffy", "relift", "sft", "sft_rl", "trapo@zero3")  # @zero3: engine.zero_stage=3
CI_METHODS = ("sft",)
METHODS = ALL_METHODS if os.environ.get("TRAPO_OPENRLHF_JOB") == "all" else CI_METHODS

RL_METRICS = ("train/loss", "train/pg_loss", "train/prefix_loss", "train/reward_mean", "train/reward_all_mean",
              "train/entropy", "train/response_length", "train/zero_signal_frac", "train/grad_norm",
              "time/rollout_s", "time/update_s")
GUIDED_METRICS = tuple(f"train/guidance_level_{i}" for i in range(4)) + ("train/expert_token_prob",
                                                                         "train/expert_low_prob_frac")
SFT_METRICS = ("train/loss", "train/lr", "train/grad_norm", "train/phase_rl")
RELIFT_METRICS = ("train/relift_hard_prompts", "train/relift_buffer_size", "train/relift_sft_steps")
EVAL_SPLITS = ("valid", "steps1", "steps2", "steps3", "steps4", "skill2", "skill3")  # preset=smoke's


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for every job of this module (each job's driver joins it through RAY_ADDRESS)."""
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray session is already open in this process")
    info = ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        yield info.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("mlflow") / "mlflow.db"


def run_job(name: str, run_dir: Path, address: str, store: Path) -> tuple[float, str]:
    env = {**os.environ, "RAY_ADDRESS": address, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}
    method, _, zero = name.partition("@zero")
    cmd = [sys.executable, "experiments/run.py", "engine=openrlhf", "engine.rollout=cpu", "preset=smoke",
           f"method={method}", f"train.steps={STEPS}", f"tracking.experiment=job-{name}", "progress=false",
           f"hydra.run.dir={run_dir}", *([f"engine.zero_stage={zero}"] if zero else [])]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    log = r.stdout + r.stderr
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{log[-6000:]}"
    return time.perf_counter() - t0, log


def runs_of(store: Path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment}"
    return client, client.search_runs([exp.experiment_id])


def steps_of(client, run, name: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, name))


def check_training(client, run, names, steps) -> None:
    for name in names:
        assert steps_of(client, run, name) == list(steps), (run.info.run_name, name)


def check_eval(run) -> None:
    m = run.data.metrics
    for split in EVAL_SPLITS:
        key = "valid/accuracy" if split == "valid" else f"eval/{split}/accuracy"
        assert key in m, (run.info.run_name, key)
    assert m["score"] == m["eval/avg_accuracy"] > 0  # some smoke problems are answered right at T=0


@pytest.mark.parametrize("name", METHODS)
def test_job_ends_finished_with_the_local_metric_names(name, cluster, store, tmp_path):
    seconds, log = run_job(name, tmp_path / "run", cluster, store)
    print(f"{name}: {seconds:.0f} s")
    assert "final: " in log
    method = name.partition("@")[0]
    client, runs = runs_of(store, f"job-{name}")
    assert runs and all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(top) == 1, [r.info.run_name for r in runs]
    check_eval(top[0])
    assert (tmp_path / "run" / "final_metrics.json").is_file()
    steps = range(1, STEPS + 1)
    if method == "sft":
        check_training(client, top[0], SFT_METRICS, steps)
    elif method == "sft_rl":  # one SFT step, then one RL step from its model: two child runs of the parent
        children = {r.data.tags.get("phase", "rl"): r for r in runs if r is not top[0]}
        assert set(children) == {"sft", "rl"}, [r.info.run_name for r in runs]
        check_training(client, children["sft"], SFT_METRICS, [1])
        check_training(client, children["rl"], RL_METRICS, [1])
    else:
        names = RL_METRICS + (GUIDED_METRICS if method in ("trapo", "luffy") else ())
        names += RELIFT_METRICS if method == "relift" else ()
        check_training(client, top[0], names, steps)
        if method == "grpo":
            assert not any(k.startswith("train/guidance_level") for k in top[0].data.metrics)


# ---- agreement with the local engine ------------------------------------------------------------------------------
AGREE = ("method=trapo", "preset=smoke", "train.steps=1", "train.prompts_per_step=1", "progress=false")
EXACT = ("train/reward_mean", "train/reward_all_mean", "train/response_length", "train/zero_signal_frac",
         *(f"train/guidance_level_{i}" for i in range(4)))
CLOSE = ("train/loss", "train/pg_loss", "train/prefix_loss", "train/entropy", "train/expert_token_prob",
         "train/grad_norm")


def test_first_step_agrees_with_the_local_engine(cluster, store, tmp_path):
    """One prompt per step, same seed: the CPU rollout engine draws the step's samples from the local trainer's step
    generator in the same order, so the first step's samples (their rewards, lengths, guidance levels) are the
    local engine's, and the update (OpenRLHF's DeepSpeed actor against the local engine) agrees to summation order."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "RAY_ADDRESS": cluster}
    for engine, extra in (("local", ()), ("openrlhf", ("engine.rollout=cpu",))):
        cmd = [sys.executable, "experiments/run.py", *AGREE, f"engine={engine}", *extra,
               f"tracking.experiment=agree-{engine}", f"hydra.run.dir={tmp_path / engine}"]
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{(r.stdout + r.stderr)[-6000:]}"
    (local,) = runs_of(store, "agree-local")[1]
    client, (job,) = runs_of(store, "agree-openrlhf")
    assert job.info.status == "FINISHED"
    check_training(client, job, RL_METRICS + GUIDED_METRICS, [1])
    check_eval(job)
    a, b = local.data.metrics, job.data.metrics
    print({k: (a[k], b[k]) for k in EXACT + CLOSE + ("eval/avg_accuracy",)})
    for k in EXACT:
        assert a[k] == b[k], (k, a[k], b[k])
    for k in CLOSE:
        assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), (k, a[k], b[k])
    assert b["eval/avg_accuracy"] == pytest.approx(a["eval/avg_accuracy"], abs=1e-9)


# ---- inputs that fail before any job starts ------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["row", "model"])
def test_bad_input_fails_before_ray_starts(bad, tmp_path, monkeypatch):
    """A malformed data row or a missing model stops the launch before it writes its prompt file or starts the
    driver (which starts Ray), with the file, line and field (or the config field) named."""
    from openrlhf_support import compose
    from trapo.engines.openrlhf import launch

    data = tmp_path / "train.jsonl"
    good = '{"question": "Mia has 2 eggs. Gets 3 more. How many eggs?", "solution": "2+3=5", "answer": "5"}\n'
    data.write_text(good + ('{"question": "q", "answer": "1"}\n' if bad == "row" else good))
    overrides = ["engine=openrlhf", "engine.rollout=cpu", "method=trapo", "data=jsonl", f"data.path={data}"]
    if bad == "model":
        overrides += ["model=hf", f"model.path={tmp_path / 'no-model'}"]
    started = []
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: started.append(a) or 0)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        launch.main(compose(*overrides), tmp_path / "run")
    want = f"{data}:2:solution" if bad == "row" else f"model.path {tmp_path / 'no-model'}"
    assert want in str(err.value)
    assert not started and not (tmp_path / "run" / "openrlhf" / "data" / "prompts.jsonl").exists()


# ---- kill -9 after the first checkpoint, then the same command ----------------------------------------------------
@pytest.mark.skipif(os.environ.get("TRAPO_OPENRLHF_JOB") != "all", reason="about 4 min: TRAPO_OPENRLHF_JOB=all")
def test_kill_after_first_checkpoint_then_the_same_command_resumes(cluster, store, tmp_path):
    """The job is killed (SIGKILL to the command and its driver) once OpenRLHF's first checkpoint (step 2 of 4) is
    on disk; the same command then resumes from it and continues the same MLflow run to FINISHED."""
    import signal

    run_dir = tmp_path / "run"
    env = {**os.environ, "RAY_ADDRESS": cluster, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "experiments/run.py", "engine=openrlhf", "engine.rollout=cpu", "preset=smoke",
           "method=trapo", "train.steps=4", "checkpoint.every=2", "tracking.experiment=job-resume", "progress=false",
           f"hydra.run.dir={run_dir}"]
    latest = run_dir / "openrlhf" / "checkpoints" / "_actor" / "latest"  # DeepSpeed writes it after the states
    with open(tmp_path / "first.log", "w") as log:
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while not latest.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert latest.exists(), (tmp_path / "first.log").read_text()[-4000:]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    client, (killed,) = runs_of(store, "job-resume")
    assert killed.info.status == "RUNNING" and "score" not in killed.data.metrics
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-6000:]
    assert "Loading the checkpoint" in log  # OpenRLHF's own message when it resumes from --ckpt.path
    client, (run,) = runs_of(store, "job-resume")
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert set(steps_of(client, run, "train/loss")) == {1, 2, 3, 4}
    check_eval(run)
