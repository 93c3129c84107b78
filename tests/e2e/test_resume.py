"""Kill a run after its first checkpoint, rerun the same command: the result equals an uninterrupted run."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# relift: an SFT batch of 3 hardest questions, so the buffer holds rows across checkpoints and SFT steps run
# both before and after the kill (its buffer and its own AdamW's moments are part of the checkpoint)
EXTRA = {"relift": ["method.relift.sft_data_size=3"]}


def cmd(run_dir, method):
    return [sys.executable, str(ROOT / "experiments" / "run.py"), f"method={method}", "preset=smoke",
            "train.steps=6", "checkpoint.every=2", "++train.warmup_steps=3",  # the LR schedule's state matters
            *EXTRA.get(method, []), "progress=false", f"hydra.run.dir={run_dir}"]


def weights_hash(run_dir: Path) -> str:
    final = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return hashlib.sha256((final / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
# trapo and relift (its buffer, extra optimizer and SFT steps across the checkpoint) in CI; sft_rl is the extended
# case (test_reliability.py's in-process crash-and-rerun of sft_rl, inside its RL phase, runs in CI)
@pytest.mark.parametrize("method", ["trapo", pytest.param("sft_rl", marks=pytest.mark.extended), "relift"])
def test_sigkill_then_resume_is_identical(tmp_path, method):
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(cmd(ref_dir, method), cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(cmd(dir_, method), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((dir_ / "checkpoints").glob("step_*")) and time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail("the run ended before its first checkpoint")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (dir_ / "final_metrics.json").exists(), "killed too late to test a resume"
    ckpts = sorted(p.name for p in (dir_ / "checkpoints").glob("step_*"))
    assert ckpts and ckpts[-1] != "step_000006"

    res = subprocess.run(cmd(dir_, method), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert weights_hash(dir_) == weights_hash(ref_dir)
    ref = json.loads((ref_dir / "final_metrics.json").read_text())
    got = json.loads((dir_ / "final_metrics.json").read_text())
    assert got == ref
    rows = [json.loads(line) for line in (dir_ / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # the steps redone after the checkpoint are logged once
    if method == "relift":
        ref_rows = [json.loads(line) for line in (ref_dir / "metrics.jsonl").read_text().splitlines()]
        sft = [r["train/relift_sft_steps"] for r in rows]
        assert sft == [r["train/relift_sft_steps"] for r in ref_rows]
        assert [r["train/relift_buffer_size"] for r in rows] == [r["train/relift_buffer_size"] for r in ref_rows]
        assert sft[-1] >= 2 and max(r["train/relift_buffer_size"] for r in rows) > 0, rows  # the case is exercised

    # the resumed run appended to the same MLflow run
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("trapo")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for r in runs:  # the resumed run holds every step once, the killed part included
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")]
        assert sorted(set(steps)) == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_ctrl_c_says_where_it_stopped_and_the_printed_command_resumes(tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    dir_ = tmp_path / "run"
    # the default dir: the hint must pin it. 30 steps: a loaded machine may not look at the log again before a
    # 6-step smoke run has finished. SIGINT back to its default in the child: a shell that starts a job with `&`
    # (no job control) leaves SIGINT ignored for the whole job, and a child that inherits that never sees the
    # Ctrl-C (a CI run started that way failed here with exit 0); a terminal's foreground run does not ignore it
    c = [a if a != "train.steps=6" else "train.steps=30" for a in cmd(dir_, "grpo")
         if not a.startswith("hydra.run.dir")]
    proc = subprocess.Popen(c, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline, logs, seen = time.time() + 300, [], False
    while time.time() < deadline and proc.poll() is None:
        logs = list(tmp_path.glob("outputs/*/*/run.log"))
        if logs and "step 3/30" in logs[0].read_text():
            seen = True
            break
        time.sleep(0.1)
    assert logs, "the run wrote no run.log"
    assert seen and proc.poll() is None, (f"the run ended (exit {proc.poll()}) or 300 s passed before its log "
                                          "showed step 3: nothing to interrupt")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    line = next(x for x in out.splitlines() if "stopped at step" in x)
    m = re.search(r"stopped at step (\d+)/30, last checkpoint step (\d+); to resume: python experiments/run.py ", line)
    assert m and int(m[2]) >= 2 and int(m[2]) % 2 == 0 and int(m[1]) >= int(m[2]), line
    resume = line.split("to resume: ", 1)[1]
    assert f"hydra.run.dir={logs[0].parent}" in resume

    argv = [sys.executable, *resume.split()[1:]]
    argv[1] = str(ROOT / argv[1])
    res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from step {m[2]}/30" in res.stdout + res.stderr


@pytest.mark.slow
def test_sigterm_checkpoints_ends_the_mlflow_run_as_killed_and_resumes(tmp_path):
    """SLURM preemption, `timeout` and `docker stop` send SIGTERM: the run finishes its (short) step, writes a
    checkpoint, says where it stopped and how to resume, ends its MLflow run as KILLED, and exits 143; the
    printed command resumes from that step in the same MLflow run."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    dir_ = tmp_path / "run"
    c = [a for a in cmd(dir_, "grpo") if a != "checkpoint.every=2"] + ["checkpoint.every=0", "train.steps=8"]
    proc = subprocess.Popen(c, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        log = dir_ / "run.log"
        if log.exists() and "step 2/8" in log.read_text():
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # to the process alone, as `timeout` and `docker stop` do
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    line = next(x for x in out.splitlines() if "stopped by SIGTERM at step" in x)
    m = re.search(r"at step (\d+)/8, last checkpoint step (\d+); to resume: python experiments/run.py ", line)
    assert m and m[1] == m[2] and int(m[1]) >= 2, line  # checkpoint.every=0, yet nothing was lost
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("trapo").experiment_id])
    assert run.info.status == "KILLED"

    res = subprocess.run(c, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from step {m[1]}/8" in res.stdout + res.stderr
    (run,) = client.search_runs([client.get_experiment_by_name("trapo").experiment_id])
    assert run.info.status == "FINISHED"
