"""Issue 8, reliability: bad input is rejected before any work, faults during a run are contained, and
checkpoints restore bit-exactly without unpickling anything. (SIGKILL + rerun: tests/test_resume.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1] / "grader"  # grader_faults.py, which the grader's workers import
# a smoke run with a small final evaluation (valid split only); one thread: the machine may be busy
FAST = ["preset=smoke", "progress=false", "++data.eval_splits={}", "++data.valid.n=4", "eval.max_new_tokens=8",
        "engine.num_threads=1"]


def compose(*overrides: str):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return _compose(config_name="config", overrides=[*FAST, *overrides])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def client(store, monkeypatch):
    """A per-module MLflow store; the working directory is its folder (the artifact root)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{store}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(store)
    return MlflowClient(uri)


def runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def run_trainer(out: Path, *overrides: str, experiment: str):
    from baselines import hooks_for
    from trapo.trainer import Trainer

    cfg = compose(f"tracking.experiment={experiment}", *overrides)
    return Trainer(cfg, out, hooks=hooks_for(cfg)).run()  # a method's step hooks, as its runner adds them


# ---- bad input: a clear error naming the place, before any work ------------------------------------------
ROWS_OK = {"question": "What is 2+2?", "solution": "2+2 = 4.\n\n\\boxed{4}", "answer": "4"}


@pytest.mark.parametrize("line, where", [
    (b'{"question": "q", "solution": "s", "answer": ', "bad.jsonl:2: invalid JSON"),
    (b'["not", "an", "object"]', "bad.jsonl:2: expected a JSON object"),
    (b'{"question": "q", "answer": "4"}', "bad.jsonl:2:solution: missing field"),
    (b'{"question": "  ", "solution": "s", "answer": "4"}', "bad.jsonl:2:question: empty"),
    (b'{"question": "q", "solution": ["s"], "answer": "4"}', "bad.jsonl:2:solution: expected a string, got list"),
    (b'{"question": "q", "solution": "s", "answer": null}', "bad.jsonl:2:answer: expected a string, got NoneType"),
    (b'{"question": "caf\xe9", "solution": "s", "answer": "4"}', "bad.jsonl:2: not valid UTF-8"),
])
def test_malformed_jsonl_row_names_file_line_field(tmp_path, line, where):
    from trapo.data.loading import load_jsonl_items

    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(ROWS_OK).encode() + b"\n" + line + b"\n" + json.dumps(ROWS_OK).encode() + b"\n")
    with pytest.raises(ValueError) as e:
        load_jsonl_items(path, {"question": "question", "solution": "solution", "answer": "answer"})
    assert where in str(e.value) and str(path) in str(e.value)


def test_jsonl_accepts_bom_numbers_and_blank_lines(tmp_path):
    from trapo.data.loading import load_jsonl_items

    path = tmp_path / "ok.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({**ROWS_OK, "answer": 4}).encode() + b"\n\n"
                     + json.dumps(ROWS_OK).encode() + b"\n")
    items = load_jsonl_items(path, {"question": "question", "solution": "solution", "answer": "answer"})
    assert [it.answer for it in items] == ["4", "4"]


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_empty_jsonl_dataset_rejected(tmp_path, content):
    from trapo.data.loading import load_jsonl_items

    (tmp_path / "empty.jsonl").write_bytes(content)
    with pytest.raises(ValueError, match=r"empty\.jsonl: dataset is empty"):
        load_jsonl_items(tmp_path / "empty.jsonl", {"question": "question", "solution": "solution",
                                                    "answer": "answer"})


def _fail_if_called(*a, **k):
    raise AssertionError("the model was loaded: the bad input was not rejected first")


@pytest.mark.parametrize("overrides, message", [
    (["method.alpha=-0.1"], "config method.alpha: the trust region alpha must be >= 0"),
    (["method.guidance_schedule.thresholds=[0.7,0.5,0.9]"], "method.guidance_schedule.thresholds must be strictly increasing"),
    (["method.guidance_schedule.group_sizes=[4,2,1,2]", "train.group_size=8"],  # a guided group size set against its schedule
     "config method.guidance_schedule.group_sizes: [4, 2, 1, 2] sum to 9, but train.group_size is 8"),
    (["method=grpo", "train.group_size=0"], "config train.group_size: must be >= 1"),
    (["++train.warmup_steps=-1"], "config train.warmup_steps: must be >= 0"),
    (["checkpoint.keep=0"], "config checkpoint.keep: must be >= 1"),
    (["data.train.n=0"], "config data.train.n: the training set would be empty"),
    (["data=jsonl"], "config data.path: set the JSON-lines file"),
    (["model.trust_remote_code=yes"], "config model.trust_remote_code: must be true or false"),
    (["data=jsonl", "data.path={tmp}/bad.jsonl"], "bad.jsonl:3:answer: missing field"),
    (["data=jsonl", "data.path={tmp}/empty.jsonl"], "empty.jsonl: dataset is empty"),
    (["data=jsonl", "data.path={tmp}/nope.jsonl"], "nope.jsonl: training data file not found"),
    (["data=jsonl", "data.path={tmp}/bad.jsonl", "data.valid_n=5"], "bad.jsonl:3:answer"),  # rows checked first
    (["model=hf", "model.path=/nonexistent/model"], "model.path /nonexistent/model: no such model directory"),
    (["model=hf", "model.path={tmp}"], "not a Hugging Face model directory (no config.json)"),
])
def test_bad_input_rejected_before_any_work(tmp_path, client, monkeypatch, overrides, message):
    """Config, data and model errors name their key or file:line:field; no model, run or file is made."""
    import trapo.trainer
    from trapo.trainer import Trainer

    (tmp_path / "bad.jsonl").write_text(json.dumps(ROWS_OK) + "\n" + json.dumps(ROWS_OK) + "\n"
                                        + json.dumps({k: v for k, v in ROWS_OK.items() if k != "answer"}) + "\n")
    (tmp_path / "empty.jsonl").write_text("\n")
    monkeypatch.setattr(trapo.trainer, "load_model_and_tokenizer", _fail_if_called)
    out = tmp_path / "run"
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        Trainer(compose(f"tracking.experiment=bad-input", *[o.format(tmp=tmp_path) for o in overrides]), out).run()
    assert message in str(e.value)
    assert not out.exists()
    assert runs(client, "bad-input") == []


def test_jsonl_valid_n_leaving_no_training_rows(tmp_path):
    from trapo.data.loading import load_dataset

    (tmp_path / "d.jsonl").write_text((json.dumps(ROWS_OK) + "\n") * 3)
    cfg = compose("data=jsonl", f"data.path={tmp_path}/d.jsonl", "data.valid_n=3").data
    with pytest.raises(ValueError, match=r"data.valid_n=3: must be >= 0 and leave training rows .*d\.jsonl has 3"):
        load_dataset(cfg)
    data = load_dataset(compose("data=jsonl", f"data.path={tmp_path}/d.jsonl", "data.valid_n=1").data)
    assert (len(data.train), len(data.valid), data.eval_splits) == (2, 1, {})


def test_jsonl_without_any_evaluation_warns(tmp_path, caplog):
    from trapo.data.loading import load_dataset

    (tmp_path / "d.jsonl").write_text((json.dumps(ROWS_OK) + "\n") * 3)
    with caplog.at_level("WARNING", logger="trapo.data.loading"):
        load_dataset(compose("data=jsonl", f"data.path={tmp_path}/d.jsonl").data)
    assert "never evaluates" in caplog.text and "data.valid_n=N" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="trapo.data.loading"):
        load_dataset(compose("data=jsonl", f"data.path={tmp_path}/d.jsonl", "data.valid_n=1").data)
    assert "never evaluates" not in caplog.text


def test_jsonl_data_trains_end_to_end(tmp_path, client):
    """conf/data/jsonl.yaml: any JSONL file of question/solution/answer rows, graded by the math reward."""
    from trapo.data.synthetic import make_split

    rows = [{"question": p.question, "solution": p.solution, "answer": p.answer} for p in make_split(12, 3, 4, seed=5)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    final = run_trainer(out, "data=jsonl", f"data.path={tmp_path}/train.jsonl", "data.valid_n=4", "train.steps=2",
                        "checkpoint.every=1", experiment="jsonl")
    assert set(final) == {"valid/accuracy"}
    state = json.loads((out / "checkpoints" / "step_000002" / "state.json").read_text())
    assert state["data"]["n_train"] == 8 and state["data"]["position"] == 8 and state["data"]["epoch"] == 1
    (run,) = runs(client, "jsonl")
    assert run.info.status == "FINISHED" and run.data.params["data.reward"] == "math_verify"


def cli(args: list[str], cwd: Path, uri: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), *args, "progress=false",
                           f"hydra.run.dir={cwd}/run"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["jsonl_row", "model_dir", "alpha", "mlflow_down"])
def test_cli_rejects_bad_input_before_any_work(tmp_path, case):
    """End to end: exit code != 0, the message names the place, no checkpoint, metrics or MLflow store."""
    (tmp_path / "train.jsonl").write_bytes(json.dumps(ROWS_OK).encode() + b"\n"
                                           + b'{"question": "q", "solution": 5, "answer": "4"}\n')
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args, message = {
        "jsonl_row": (["data=jsonl", f"data.path={tmp_path}/train.jsonl"], "train.jsonl:2:solution: expected a string"),
        "model_dir": (["model=hf", "model.path=/nonexistent/model"], "model.path /nonexistent/model: no such model"),
        "alpha": (["method.alpha=-1"], "config method.alpha"),
        "mlflow_down": ([], "MLflow tracking server http://127.0.0.1:9 is unreachable"),
    }[case]
    if case == "mlflow_down":
        uri = "http://127.0.0.1:9"  # loopback, a closed port
    start = time.monotonic()
    res = cli(["preset=smoke", *args], tmp_path, uri)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr[-2000:]
    assert time.monotonic() - start < 90
    run_dir = tmp_path / "run"
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.jsonl").exists()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


# ---- MLflow: unreachable at start is an error; mid-run failures are retried, then logged locally ----------
def test_mlflow_unreachable_at_start_fails_fast(tmp_path, monkeypatch):
    import trapo.trainer

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setattr(trapo.trainer, "load_model_and_tokenizer", _fail_if_called)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"MLflow tracking server http://127\.0\.0\.1:9 is unreachable"):
        trapo.trainer.Trainer(compose(), tmp_path / "run").run()
    assert time.monotonic() - start < 30
    assert not (tmp_path / "run").exists()


def test_mlflow_failing_mid_run_is_retried_then_logged_locally(tmp_path, client, monkeypatch):
    from mlflow.tracking import MlflowClient

    import trapo.tracking

    monkeypatch.setattr(trapo.tracking, "BACKOFF_S", 0.01)
    real = MlflowClient.log_batch
    calls: dict[int, int] = {}

    def flaky(self, run_id, metrics=(), params=(), tags=(), **kw):
        step = metrics[0].step if metrics else None
        calls[step] = calls.get(step, 0) + 1
        if step == 2 or (step == 3 and calls[step] == 1):  # step 2: down for good; step 3: one blip
            raise ConnectionError("tracking server went away")
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    out = tmp_path / "run"
    run_trainer(out, "method=sft", "train.steps=4", "checkpoint.every=0", experiment="mlflow-flaky")
    assert calls[2] == trapo.tracking.RETRIES and calls[3] == 2
    fallback = [json.loads(line) for line in (out / "mlflow_fallback.jsonl").read_text().splitlines()]
    assert [(r["call"], r["step"]) for r in fallback] == [("log_metrics", 2)]
    assert "train/loss" in fallback[0]["metrics"] and "ConnectionError" in fallback[0]["error"]
    (run,) = runs(client, "mlflow-flaky")
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [1, 3, 4]
    assert (out / "final_metrics.json").exists()


# ---- NaN / inf: no update is applied; stop keeps the last good checkpoint, skip goes on -------------------
@pytest.fixture
def nan_at_step(monkeypatch):
    """The loss of the given 1-based steps becomes NaN (inside the engine, before backward)."""
    import trapo.engines.local as local
    import trapo.trainer

    bad: set[int] = set()
    current = {"step": None}
    real_loss, real_sft, real_rl = local.batch_loss, trapo.trainer.Trainer._sft_step, trapo.trainer.Trainer._rl_step

    def loss(*a, **k):
        out = real_loss(*a, **k)
        if current["step"] in bad:
            out.loss = out.loss * float("nan")
        return out

    def sft_step(self, step):
        current["step"] = step + 1
        return real_sft(self, step)

    def rl_step(self, step):
        current["step"] = step + 1
        return real_rl(self, step)

    monkeypatch.setattr(local, "batch_loss", loss)
    monkeypatch.setattr(trapo.trainer.Trainer, "_sft_step", sft_step)
    monkeypatch.setattr(trapo.trainer.Trainer, "_rl_step", rl_step)
    return bad


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, client, nan_at_step):
    nan_at_step.add(3)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"non-finite loss or gradient at step 3 .*step_000002"):
        run_trainer(out, "method=sft", "train.steps=4", "checkpoint.every=2", experiment="nan-stop")
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_000002"]
    assert not (out / "final_metrics.json").exists()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    (run,) = runs(client, "nan-stop")
    assert run.info.status == "FAILED"
    # the kept checkpoint is complete: it restores into a fresh engine, finite weights included
    from trapo.checkpoint import Checkpointer
    from trapo.engines.local import LocalEngine
    from trapo.models.loading import load_model_and_tokenizer

    model, tok, _ = load_model_and_tokenizer(compose().model)
    engine = LocalEngine(model, tok, lr=1e-4)
    ck = Checkpointer(out / "checkpoints")
    assert ck.restore(ck.latest(), engine) == 2
    assert all(torch.isfinite(p).all() for p in engine.model.parameters())
    # and the same command resumes from it (with the fault gone) to the end
    nan_at_step.clear()
    run_trainer(out, "method=sft", "train.steps=4", "checkpoint.every=2", experiment="nan-stop")
    (run,) = runs(client, "nan-stop")
    assert run.info.status == "FINISHED"


def test_nan_skip_drops_the_batch_and_applies_nothing(tmp_path, client, nan_at_step):
    nan_at_step.add(3)
    out = tmp_path / "run"
    run_trainer(out, "method=sft", "train.steps=4", "checkpoint.every=1", "checkpoint.keep=10",
                "train.on_nonfinite=skip", experiment="nan-skip")
    rows = {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[3]["train/skipped_nonfinite"] == 1.0 and "train/skipped_nonfinite" not in rows[4]
    ck = out / "checkpoints"
    # step 3 changed nothing: same weights, same optimizer moments and LR schedule as after step 2
    assert sha(ck / "step_000003" / "model.safetensors") == sha(ck / "step_000002" / "model.safetensors")
    from safetensors.torch import load_file

    s2, s3 = (load_file(str(ck / f"step_00000{i}" / "trainer_state.safetensors")) for i in (2, 3))
    assert all(torch.equal(s2[k], s3[k]) for k in s2 if k.startswith("optimizer."))
    st2, st3 = (json.loads((ck / f"step_00000{i}" / "state.json").read_text()) for i in (2, 3))
    assert st2["lr_schedule"]["last_epoch"] == st3["lr_schedule"]["last_epoch"] == 2
    assert sha(ck / "step_000004" / "model.safetensors") != sha(ck / "step_000003" / "model.safetensors")
    (run,) = runs(client, "nan-skip")
    assert run.info.status == "FINISHED"
    hist = client.get_metric_history(run.info.run_id, "train/skipped_nonfinite")
    assert [(m.step, m.value) for m in hist] == [(3, 1.0)]


def test_relift_skips_its_hook_after_a_skipped_step(tmp_path, client, nan_at_step):
    """A step whose RL update was non-finite and skipped adds nothing to ReLIFT's buffer and runs no SFT step."""
    nan_at_step.add(2)
    out = tmp_path / "run"
    run_trainer(out, "method=relift", "method.relift.sft_data_size=1", "train.steps=3", "checkpoint.every=1",
                "checkpoint.keep=10", "train.on_nonfinite=skip", experiment="nan-relift")
    rows = {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    assert rows[2]["train/skipped_nonfinite"] == 1.0
    assert "train/relift_hard_prompts" in rows[1] and "train/relift_hard_prompts" in rows[3]
    assert not any(k.startswith("train/relift_") for k in rows[2]), rows[2]
    st1, st2 = (json.loads((out / "checkpoints" / f"step_00000{i}" / "state.json").read_text()) for i in (1, 2))
    assert st1["relift"] == st2["relift"]


# ---- the engine: LR warmup, no partial update, exact restore ------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from trapo.models.loading import load_model_and_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok, _ = load_model_and_tokenizer(compose().model)
    yield model, tok
    torch.set_num_threads(threads)


def _engine(tiny, warmup: int):
    import copy

    from trapo.engines.local import LocalEngine

    model, tok = tiny
    return LocalEngine(copy.deepcopy(model), tok, lr=1e-3, warmup_steps=warmup)


def _sft_batch(tok, k: int):
    from trapo.data.synthetic import make_split
    from trapo.rollout import Sample

    out = []
    for g, p in enumerate(make_split(4, 2, 3, seed=k)):
        out.append(Sample(g, 0, tok(p.question + "\n").input_ids, tok(p.solution).input_ids, [], reward=1.0))
    return out


def _step(engine, tok, k):
    samples = _sft_batch(tok, k)
    n = float(sum(len(s.expert_ids) for s in samples))
    return engine.train_step(samples, normalizer=n, prefix_loss="sft", alpha=0.0, gamma=0.0, entropy_coef=0.0)


def _params(engine) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in engine.model.state_dict().items()}


def test_lr_warmup_then_constant_and_reset_restarts_it(tiny):
    eng = _engine(tiny, warmup=3)
    lrs = [_step(eng, tiny[1], k)["lr"] for k in range(5)]
    assert lrs == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3, 1e-3], rel=1e-12)
    eng.reset_optimizer(5e-4)  # SFT -> RL
    assert [_step(eng, tiny[1], k)["lr"] for k in range(4)] == pytest.approx([5e-4 / 3, 1e-3 / 3, 5e-4, 5e-4])
    assert _step(_engine(tiny, warmup=0), tiny[1], 0)["lr"] == 1e-3


def test_inf_loss_with_finite_gradients_applies_nothing(tiny, monkeypatch):
    import trapo.engines.local as local

    eng = _engine(tiny, warmup=2)
    _step(eng, tiny[1], 0)
    before, moments = _params(eng), {k: v.clone() for k, v in eng.optimizer.state_dict()["state"][0].items()}
    real = local.batch_loss

    def inf_loss(*a, **k):
        out = real(*a, **k)
        out.loss = out.loss + float("inf")  # the gradient stays finite
        return out

    monkeypatch.setattr(local, "batch_loss", inf_loss)
    st = _step(eng, tiny[1], 1)
    assert st["finite"] is False and st["grad_norm"] == st["grad_norm"]  # finite grad norm, not applied
    assert all(torch.equal(before[k], v) for k, v in _params(eng).items())
    assert all(torch.equal(moments[k], v) for k, v in eng.optimizer.state_dict()["state"][0].items())
    assert eng.scheduler.last_epoch == 1
    assert all(p.grad is None for p in eng.model.parameters())


def test_checkpoint_restores_optimizer_schedule_and_rng_exactly(tiny, tmp_path):
    from trapo.checkpoint import Checkpointer

    tok = tiny[1]
    a = _engine(tiny, warmup=3)
    for k in range(2):
        _step(a, tok, k)
    ck = Checkpointer(tmp_path / "ck", keep=1)
    torch.manual_seed(7)
    ck.save(2, a, {"mlflow_run_id": "r"})
    expected_rng = torch.rand(3)
    lrs_a = [_step(a, tok, k)["lr"] for k in (2, 3)]

    b = _engine(tiny, warmup=3)  # fresh weights, fresh optimizer at LR step 0
    torch.manual_seed(123)
    assert ck.restore(ck.latest(), b) == 2
    assert torch.equal(torch.rand(3), expected_rng)  # torch RNG restored to the save point
    lrs_b = [_step(b, tok, k)["lr"] for k in (2, 3)]
    assert lrs_a == lrs_b == [1e-3, 1e-3]
    pa, pb = _params(a), _params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    names = sorted(p.name for p in (tmp_path / "ck" / "step_000002").iterdir())
    assert "trainer_state.safetensors" in names and not [n for n in names if n.endswith((".pt", ".bin", ".pkl"))]
    # a write killed half-way (temporary dir, or a step dir without its state.json) is never picked
    (tmp_path / "ck" / ".tmp_step_000003_99999").mkdir()
    (tmp_path / "ck" / ".tmp_step_000003_99999" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / "ck" / "step_000005").mkdir()
    assert ck.latest().step == 2
    ck.save(4, b, {})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["step_000004", "step_000005"]
    assert ck.latest().step == 4


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_and_model_loading_never_unpickle(tiny, tmp_path):
    """A pickle planted in a checkpoint or a model directory is never executed."""
    import shutil

    from trapo.checkpoint import Checkpointer
    from trapo.models.loading import load_model_and_tokenizer

    marker = tmp_path / "pwned"
    evil = pickle.dumps({"optimizer": _Evil(marker)})
    eng = _engine(tiny, warmup=0)
    ck = Checkpointer(tmp_path / "ck")
    path = ck.save(1, eng, {})
    (path / "optimizer.pt").write_bytes(evil)  # next to a current checkpoint: ignored
    assert ck.restore(ck.latest(), _engine(tiny, warmup=0)) == 1
    # an old-format checkpoint (optimizer.pt only) is refused with a clear message, not unpickled
    state = json.loads((path / "state.json").read_text())
    del state["format"]
    (path / "state.json").write_text(json.dumps(state))
    (path / "trainer_state.safetensors").unlink()
    with pytest.raises(ValueError, match="checkpoint format 1 is not 2"):
        ck.restore(ck.latest(), _engine(tiny, warmup=0))
    # a model directory with pickled weights only is refused (safetensors only)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(path / name, model_dir / name)
    (model_dir / "pytorch_model.bin").write_bytes(evil)
    cfg = compose("model=hf", f"model.path={model_dir}").model
    with pytest.raises(OSError, match="safetensors|model.safetensors"):
        load_model_and_tokenizer(cfg)
    assert not marker.exists()


def test_remote_code_is_not_run_unless_enabled(tmp_path):
    """trust_remote_code defaults to false in every model config, and a model asking for it is refused."""
    from omegaconf import OmegaConf

    from trapo.models.loading import load_model_and_tokenizer

    for f in (ROOT / "conf" / "model").glob("*.yaml"):
        cfg = OmegaConf.load(f)
        assert cfg.get("trust_remote_code", False) is False, f
    marker = tmp_path / "pwned"
    model_dir = tmp_path / "custom"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({
        "model_type": "evil-custom", "auto_map": {"AutoConfig": "evil.EvilConfig",
                                                  "AutoModelForCausalLM": "evil.EvilModel",
                                                  "AutoTokenizer": ["evil.EvilTokenizer", None]}}))
    (model_dir / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer",
                                                                                                None]}}))
    (model_dir / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        load_model_and_tokenizer(compose("model=hf", f"model.path={model_dir}").model)
    assert not marker.exists()
    with pytest.raises(Exception):  # control: turned on, the directory's code does run
        load_model_and_tokenizer(compose("model=hf", f"model.path={model_dir}", "model.trust_remote_code=true").model)
    assert marker.exists()


# ---- a grader worker that hangs or dies: that item is wrong, the rest is graded, the run goes on ------------
def _faulty_grader(workers: int, timeout: float):
    from evaluation.grader import Grader
    from evaluation.pool import TimeoutPool

    class FaultyGrader(Grader):
        def _get_pool(self):
            if self._pool is None:
                self._pool = TimeoutPool("grader_faults:grade_or_fault", workers=self.workers, timeout=self.timeout,
                                         preload=["evaluation.symbolic"])
            return self._pool

    return FaultyGrader(workers=workers, timeout=timeout)


def test_grader_worker_that_hangs_or_dies_marks_only_that_item_wrong(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the workers import tests/grader/grader_faults.py
    start = time.monotonic()
    with _faulty_grader(workers=2, timeout=1.0) as g:
        preds, ok = g.grade_responses(["\\boxed{4}", "\\boxed{HANG}", "\\boxed{DIE}", "so \\boxed{2^2}"], ["4"] * 4)
        assert preds == ["4", "HANG", "DIE", "2^2"]
        assert ok == [True, False, False, True]
        assert g.stats["timeouts"] == 1 and g.stats["crashes"] == 1
    assert time.monotonic() - start < 30


def test_training_goes_on_when_a_grader_worker_hangs(tmp_path, client, monkeypatch):
    """An RL run with a grader-backed reward: the first graded pair hangs; it scores 0 and the run ends."""
    import trapo.trainer
    from trapo.rewards import StrictBoxedReward

    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("TRAPO_TEST_HANG_ONCE", str(tmp_path / "hung"))
    made = []

    def reward(kind):
        assert kind == "boxed"
        r = StrictBoxedReward(workers=1)
        r.grader = _faulty_grader(workers=1, timeout=1.0)
        made.append(r)
        return r

    monkeypatch.setattr(trapo.trainer, "build_reward", reward)
    out = tmp_path / "run"
    start = time.monotonic()
    run_trainer(out, "method=trapo", "train.steps=2", "checkpoint.every=0", "data.reward=boxed",
                experiment="grader-hang")
    assert (tmp_path / "hung").exists()
    assert made[0].grader.stats["timeouts"] == 1 and made[0].grader.stats["computed"] > 1
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    (run,) = runs(client, "grader-hang")
    assert run.info.status == "FINISHED"
    assert time.monotonic() - start < 120


# ---- resume: in-process crash, rerun, same result; data checks; resume=never ------------------------------
def test_crash_then_rerun_resumes_mid_rl_phase_identically(tmp_path, client, monkeypatch):
    """sft_rl with LR warmup, crashed after its step-4 checkpoint (inside the RL phase): the rerun equals an
    uninterrupted run (weights, final metrics, every logged loss) and appends to the same MLflow run."""
    import trapo.trainer

    args = ["method=sft_rl", "train.steps=6", "checkpoint.every=2", "++train.warmup_steps=3", "train.sft_lr=5e-5", "train.lr=1e-4"]
    ref, out = tmp_path / "ref", tmp_path / "crashed"
    run_trainer(ref, *args, experiment="resume-ref")

    real = trapo.trainer.Trainer._rl_step

    def crash(self, step):
        if step == 4:  # 0-based: the 5th step, after the checkpoint at 4
            raise RuntimeError("injected crash")
        return real(self, step)

    monkeypatch.setattr(trapo.trainer.Trainer, "_rl_step", crash)
    with pytest.raises(RuntimeError, match="injected crash"):
        run_trainer(out, *args, experiment="resume")
    state = json.loads((out / "checkpoints" / "step_000004" / "state.json").read_text())
    assert state["phase"] == "rl" and state["data"]["position"] == 4 * 4 and state["data"]["n_train"] == 64
    assert state["lr_schedule"]["last_epoch"] == 1  # one RL update after the SFT->RL reset
    monkeypatch.setattr(trapo.trainer.Trainer, "_rl_step", real)
    run_trainer(out, *args, experiment="resume")

    assert sha(out / "checkpoints" / "step_000006" / "model.safetensors") == \
        sha(ref / "checkpoints" / "step_000006" / "model.safetensors")
    assert json.loads((out / "final_metrics.json").read_text()) == json.loads((ref / "final_metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [(r["train/loss"], r["train/lr"]) for r in rows] == [(r["train/loss"], r["train/lr"]) for r in ref_rows]
    # SFT at train.sft_lr, then RL at train.lr, each phase with its own warmup
    assert [r["train/lr"] for r in rows] == pytest.approx([5e-5 / 3, 1e-4 / 3, 5e-5, 1e-4 / 3, 2e-4 / 3, 1e-4])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000004", "step_000006"]  # keep=2
    (run,) = runs(client, "resume")
    assert run.info.status == "FINISHED"
    assert sorted({m.step for m in client.get_metric_history(run.info.run_id, "train/loss")}) == [1, 2, 3, 4, 5, 6]

    # the same run dir with other data is refused before any work, naming what differs
    monkeypatch.setattr(trapo.trainer, "load_model_and_tokenizer", _fail_if_called)
    with pytest.raises(ValueError, match=r"step_000006: cannot resume.*n_train 64 != 32.*resume=never"):
        run_trainer(out, *args, "data.train.n=32", experiment="resume")
    with pytest.raises(ValueError, match=r"cannot resume.*seed 0 != 1"):
        run_trainer(out, *args, "seed=1", experiment="resume")


def test_resume_never_moves_earlier_outputs_aside(tmp_path):
    from trapo.run_dir import set_aside_previous
    from trapo.trainer import Trainer

    out = tmp_path / "run"
    (out / "checkpoints" / "step_000002").mkdir(parents=True)
    (out / "checkpoints" / "step_000002" / "state.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    (out / "run.log").write_text("log")
    trainer = Trainer(compose("resume=never"), out)
    set_aside_previous(trainer.output_dir)
    (prev,) = (out / "previous").iterdir()
    assert (prev / "checkpoints" / "step_000002" / "state.json").exists() and (prev / "metrics.jsonl").exists()
    assert not (out / "checkpoints").exists() and (out / "run.log").exists()
    assert trainer.checkpointer.latest() is None


def test_jsonl_the_tiny_model_cannot_spell_is_refused_naming_line_and_characters(tmp_path, client):
    rows = [{"question": "What is 3 + 4?", "solution": "3 + 4 = 7", "answer": "7"},
            {"question": "What is 40% of 130?", "solution": "0.4 * 130 = 52", "answer": "52"},
            {"question": "Is 3 < 4 & 5 > 2?", "solution": "yes", "answer": "yes"}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError) as err:
        run_trainer(tmp_path / "run", "data=jsonl", f"data.path={path}", experiment="jsonl-vocab")
    msg = str(err.value)
    assert f"{path}:2:question: characters '%'" in msg and "'%&<>'" in msg and "model=smollm2" in msg
    assert not (tmp_path / "run").exists() and not runs(client, "jsonl-vocab")  # refused before any work


def test_the_trainer_updates_at_the_rollout_temperature(tmp_path, client, monkeypatch):
    """Rollouts sample from softmax(logits / T): the trainer's update must score the same distribution."""
    import trapo.trainer

    seen, real = [], trapo.trainer.rl_step

    def rl_step(*a, **k):
        seen.append(k.get("temperature"))
        return real(*a, **k)

    monkeypatch.setattr(trapo.trainer, "rl_step", rl_step)
    run_trainer(tmp_path / "run", "method=grpo", "train.steps=1", "rollout.temperature=0.7", experiment="temp")
    assert seen == [0.7]


def test_the_readme_command_checkpoints_often_enough_to_resume():
    """README's first command runs the defaults: a Ctrl-C or SIGTERM must find a checkpoint to resume from
    within a small part of the run, not 'no checkpoint yet: a rerun starts from step 0'."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = _compose(config_name="config")
    every, steps = int(cfg.checkpoint.every), int(cfg.train.steps)
    assert 0 < every <= steps // 5, (every, steps)
