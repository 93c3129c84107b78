"""The runs behind the tables: plan, config hash, reuse of finished MLflow runs, training, base and pass@k.

A run is (method, seed, overrides) composed into the ordinary run config (conf/config.yaml) with Hydra's
compose API. Its identity is `config_hash`: sha256 of the resolved config without the keys that do not change
what is trained or measured (`VOLATILE`). Before training, `Reproducer.lookup` looks for a FINISHED MLflow run
tagged `config_hash=<hash>` (then for a finished run dir with that hash) and reuses its metrics, its
`metrics.jsonl` and eval rows; only runs found nowhere are trained, in `<run_root>/<name>_s<seed>_<hash12>`
(an interrupted run resumes there from its last checkpoint).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from trapo.guidance import GuidanceSchedule
from trapo.rl_step import level_metric

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"

# keys of the resolved run config that do not change what a run trains or measures
VOLATILE = ("progress", "tracking", "resume", "checkpoint", "hydra", "engine.num_threads", "engine.dry_run",
            "engine.output_dir", "engine.data_dir", "engine.working_dir", "engine.ray_address", "engine.launcher",
            "method.runner",  # which module trains a method follows from its name (baselines/)
            # how the update is cut into forward/backward passes: memory, not the objective (the gradient is the
            # same up to float summation order, tests/test_local_engine.py), so runs made before they existed count
            "train.micro_batch_tokens", "train.logits_chunk_tokens", "train.gradient_checkpointing",
            # read only through engine.max_prompt_len (openrlhf), which the hash covers resolved
            "model.max_prompt_len")
# per-step metrics the figures use (read from metrics.jsonl, or MLflow's history when the run dir is gone)
HISTORY_KEYS = ("train/reward_mean", "train/response_length", "train/entropy", "train/loss",
                "train/expert_token_prob", "train/expert_low_prob_frac", "train/phase_rl",
                *(level_metric(i) for i in range(GuidanceSchedule().n_rounds)))


# ---- specs, configs and hashes ----------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    label: str  # a row of a table: a method name, or e.g. "trapo@alpha=0.3"
    method: str  # conf/method/<method>.yaml, or "base" (the untrained model, evaluated only)
    seed: int
    overrides: tuple[str, ...] = ()


def alpha_label(alpha: float) -> str:
    return f"trapo@alpha={float(alpha):g}"


def plan_specs(rcfg) -> list[RunSpec]:
    """Every (row, seed) the three tables and the figures need, in a stable order."""
    labels: dict[str, tuple[str, tuple[str, ...]]] = {}
    for m in [*rcfg.methods, *rcfg.ablation]:
        labels.setdefault(str(m), (str(m), ()))
    for a in rcfg.alphas or []:
        labels.setdefault(alpha_label(a), ("trapo", (f"method.alpha={float(a)!r}",)))
    return [RunSpec(label, method, int(seed), ov) for seed in rcfg.seeds for label, (method, ov) in labels.items()]


def _drop(d: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.get(p) if isinstance(d, dict) else None
        if d is None:
            return
    if isinstance(d, dict):
        d.pop(last, None)


def hash_view(cfg) -> dict:
    """The resolved run config without `VOLATILE` keys: what the hash covers."""
    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    for key in VOLATILE:
        _drop(d, key)
    return d


def base_view(cfg) -> dict:
    """What the base model's evaluation depends on: model, data (the splits exclude training questions),
    evaluation settings, seed, engine."""
    d = hash_view(cfg)
    return {"job": "base", **{k: d.get(k) for k in ("preset_name", "seed", "model", "data", "eval", "engine")},
            "micro_batch_size": d.get("train", {}).get("micro_batch_size")}


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def config_hash(cfg) -> str:
    return digest(hash_view(cfg))


@contextlib.contextmanager
def hydra_context(conf_dir: Path = CONF_DIR):
    """Hydra's compose API: inside a @hydra.main app (same conf dir) as it is, else initialised here."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
    else:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            yield


def compose_run(overrides: Iterable[str]) -> DictConfig:
    from hydra import compose

    with hydra_context():
        return compose(config_name="config", overrides=list(overrides))


def run_overrides(rcfg, spec: RunSpec, extra: Iterable[str] = ()) -> list[str]:
    """The run-config overrides of a spec: preset, method, seed, then the reproduce settings."""
    method = "trapo" if spec.method == "base" else spec.method
    return [f"preset={rcfg.preset}", f"method={method}", f"seed={spec.seed}", *extra,
            *(rcfg.run_overrides or []), *(rcfg.overrides or []), *spec.overrides,
            f"tracking.experiment={rcfg.experiment}", "progress=false"]


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-")


@dataclass
class Job:
    method: str
    seed: int
    overrides: tuple[str, ...]
    cfg: DictConfig
    hash: str
    run_dir: Path
    labels: list[str] = field(default_factory=list)
    passk: bool = False

    @property
    def kind(self) -> str:
        return "base" if self.method == "base" else "train"

    @property
    def name(self) -> str:
        return f"{self.labels[0]} seed {self.seed}"

    def command(self, rcfg) -> str:
        """The equivalent single-run command (what this job trains)."""
        ov = [o for o in run_overrides(rcfg, RunSpec(self.labels[0], self.method, self.seed, self.overrides))
              if not o.startswith("progress=")]
        if self.kind == "base":
            return f"(evaluate the untrained model of: python experiments/run.py {' '.join(ov)})"
        return f"python experiments/run.py {' '.join(ov)} hydra.run.dir={self.run_dir}"


def build_jobs(rcfg, specs: list[RunSpec], extra_for: Mapping[str, list[str]] | None = None,
               fresh: str | None = None) -> tuple[list[Job], dict[tuple[str, int], Job]]:
    """One job per distinct config hash (trapo@alpha=0.1 is the trapo run); index (label, seed) -> job."""
    jobs: dict[str, Job] = {}
    index: dict[tuple[str, int], Job] = {}
    passk_methods = set((rcfg.passk or {}).get("methods") or [])
    for spec in specs:
        cfg = compose_run(run_overrides(rcfg, spec, (extra_for or {}).get(spec.method, [])))
        h = digest(base_view(cfg)) if spec.method == "base" else config_hash(cfg)
        job = jobs.get(h)
        if job is None:
            name = f"{slug(spec.label)}_s{spec.seed}_{h[:12]}" + (f"_{fresh}" if fresh else "")
            job = jobs[h] = Job(spec.method, spec.seed, spec.overrides, cfg, h, Path(str(rcfg.run_root)) / name)
        job.labels.append(spec.label)
        job.passk = job.passk or spec.label in passk_methods
        index[(spec.label, spec.seed)] = job
    return list(jobs.values()), index


# ---- results ---------------------------------------------------------------------------------------
@dataclass
class RunResult:
    job: Job
    status: str  # trained | reused (MLflow run ...) | reused (run dir) | planned | missing (...)
    run_id: str | None = None
    run_dir: Path | None = None
    final: dict[str, float] = field(default_factory=dict)
    history: Any = None  # pandas DataFrame (step + HISTORY_KEYS) or None
    passk: dict | None = None  # evaluation.runner summary of the pass@k split
    seconds: float = 0.0


def read_history(run_dir: Path | None, client=None, run_id: str | None = None):
    import pandas as pd

    if run_dir is not None and (run_dir / "metrics.jsonl").exists():
        rows = []
        for line in (run_dir / "metrics.jsonl").read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
        if rows:
            return pd.DataFrame(rows).drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
    if client is not None and run_id is not None:
        cols: dict[str, dict[int, float]] = {}
        for key in HISTORY_KEYS:
            try:
                hist = client.get_metric_history(run_id, key)
            except Exception:  # noqa: BLE001 - a missing metric or store error: no curve
                continue
            if hist:
                cols[key] = {int(m.step): float(m.value) for m in hist}
        if cols:
            steps = sorted({s for c in cols.values() for s in c})
            return pd.DataFrame({"step": steps, **{k: [c.get(s) for s in steps] for k, c in cols.items()}})
    return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ---- MLflow --------------------------------------------------------------------------------------
class Store:
    """The MLflow tracking store: find finished runs by config hash, add artifacts and tags to them."""

    def __init__(self, experiment: str):
        from mlflow.tracking import MlflowClient

        from trapo.tracking import check_reachable, relocate_artifacts, store_lock, tracking_uri

        self.uri = tracking_uri()
        check_reachable(self.uri)
        with store_lock(self.uri):  # first use creates the schema: one process at a time
            self.client = MlflowClient(self.uri)
            self.client.search_experiments(max_results=1)
            relocate_artifacts(self.uri)
        self.experiment = experiment

    def _exp_id(self) -> str | None:
        exp = self.client.get_experiment_by_name(self.experiment)
        return exp.experiment_id if exp is not None else None

    def _latest(self, filter_string: str, ascending: bool = False):
        """The newest (`ascending`: the earliest) run of the experiment that matches `filter_string`, or None."""
        exp_id = self._exp_id()
        if exp_id is None:
            return None
        order = "ASC" if ascending else "DESC"
        runs = self.client.search_runs([exp_id], filter_string, order_by=[f"attributes.start_time {order}"], max_results=1)
        return runs[0] if runs else None

    def finished(self, config_hash: str):
        return self._latest(f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'")

    def started_after(self, t0_ms: int, method: str):
        # the earliest: a job's top-level run (sft_rl on OpenRLHF starts its parent run before its two child runs)
        return self._latest(f"tags.method = '{method}' and attributes.start_time >= {int(t0_ms)}", ascending=True)

    def safe(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - artifacts are a convenience; the run dir has everything
            log.warning("MLflow %s failed (%s: %s)", what, type(e).__name__, e)


# ---- running jobs ----------------------------------------------------------------------------------
def _device(cfg) -> str:
    import torch

    dev = str(cfg.engine.get("device", "auto"))
    return ("cuda" if torch.cuda.is_available() else "cpu") if dev == "auto" else dev


def _threads(cfg) -> None:
    import torch

    from trapo.engines.local import torch_threads

    torch.set_num_threads(torch_threads(cfg))


def local_backend(cfg, checkpoint: Path | None = None):
    """The local engine as an evaluation back end: the base model, or the weights of `checkpoint`."""
    from trapo.engines.backend import EngineBackend
    from trapo.engines.local import LocalEngine
    from trapo.models.loading import load_model_and_tokenizer
    from trapo.trainer import seed_everything

    _threads(cfg)
    device = _device(cfg)
    model, tok, template = load_model_and_tokenizer(cfg.model, device=device)
    seed_everything(int(cfg.seed))  # as the trainer: after the model is built
    if checkpoint is not None:
        from safetensors.torch import load_file

        missing, unexpected = model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=False)
        missing = [k for k in missing if "lm_head" not in k]
        if missing or unexpected:
            raise ValueError(f"{checkpoint}: weights do not match the model ({missing[:3]}, {unexpected[:3]})")
        if getattr(model.config, "tie_word_embeddings", False):
            model.tie_weights()
    engine = LocalEngine(model, tok, lr=1e-6, micro_batch_size=int(cfg.train.micro_batch_size), device=device)
    return EngineBackend(engine, template, int(cfg.eval.batch_size))


def final_checkpoint(cfg, run_dir: Path) -> Path | None:
    p = run_dir / "checkpoints" / f"step_{int(cfg.train.steps):06d}"
    return p if (p / "model.safetensors").exists() else None


def quiet_transformers() -> None:
    """No per-load/per-save progress bars from transformers between the reproduce log lines."""
    with contextlib.suppress(Exception):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


class Reproducer:
    """Looks up, trains or evaluates each job; one grader for the evaluations it runs itself."""

    def __init__(self, rcfg, store: Store | None):
        self.rcfg = rcfg
        self.store = store
        self._grader = None
        p = rcfg.passk or {}
        self.passk_settings = ({"split": str(p["split"]), "n_samples": int(p["n_samples"]),
                                "temperature": float(p["temperature"])} if p.get("split") else None)

    @property
    def grader(self):
        if self._grader is None:
            from evaluation.grader import Grader

            self._grader = Grader(progress=False)
        return self._grader

    def close(self) -> None:
        if self._grader is not None:
            self._grader.close()
            self._grader = None

    # -- lookup
    def lookup(self, job: Job) -> RunResult | None:
        """A finished run with the job's config hash: MLflow first, then the job's run dir."""
        if not self.rcfg.reuse:
            return None
        run = self.store.finished(job.hash) if self.store is not None else None
        if run is not None:
            tagged = run.data.tags.get("run_dir")
            run_dir = Path(tagged) if tagged and Path(tagged).exists() else (job.run_dir if job.run_dir.exists() else None)
            final = {k: v for k, v in run.data.metrics.items() if k.startswith(("eval/", "valid/"))}
            return RunResult(job, f"reused (MLflow run {run.info.run_id[:8]})", run.info.run_id, run_dir, final,
                             read_history(run_dir, self.store.client, run.info.run_id))
        meta = _read_json(job.run_dir / "reproduce.json")
        final = _read_json(job.run_dir / "final_metrics.json")
        if meta and meta.get("config_hash") == job.hash and meta.get("finished") and final:
            return RunResult(job, "reused (run dir)", meta.get("mlflow_run_id"), job.run_dir, final,
                             read_history(job.run_dir))
        return None

    # -- one job
    def run(self, job: Job) -> RunResult:
        t0 = time.monotonic()
        res = self.lookup(job)
        if res is None and str(self.rcfg.get("missing", "train")) == "skip":
            # tables from the runs that exist: this cell stays empty and n_seeds says how many seeds it has
            return RunResult(job, "missing (not trained: missing=skip)")
        if res is None or (job.passk and self.passk_settings and res.passk is None):
            quiet_transformers()
        if res is None:
            res = self._base(job) if job.kind == "base" else self._train(job)
        if job.passk and self.passk_settings and res.passk is None:
            res.passk = self._passk(job, res)
        res.seconds = time.monotonic() - t0
        return res

    def _tags(self, job: Job) -> dict[str, str]:
        return {"config_hash": job.hash, "run_dir": str(job.run_dir.resolve()), "reproduce_preset": str(self.rcfg.preset),
                "reproduce_labels": ",".join(job.labels), "seed": str(job.seed)}

    def _overrides(self, job: Job) -> list[str]:
        """What this run changes besides preset, method and seed (its MLflow name and `overrides` tag)."""
        return [*(self.rcfg.overrides or []), *job.overrides]

    def _finish(self, job: Job, run_id: str | None, final: dict, seconds: float) -> None:
        if self.store is not None and run_id is not None:
            for name in ("eval",):
                if (job.run_dir / name).is_dir():
                    self.store.safe("log_artifacts", self.store.client.log_artifacts, run_id, str(job.run_dir / name),
                                    name)
            if (job.run_dir / "metrics.jsonl").exists():
                self.store.safe("log_artifact", self.store.client.log_artifact, run_id,
                                str(job.run_dir / "metrics.jsonl"))
        meta = {"config_hash": job.hash, "labels": job.labels, "method": job.method, "seed": job.seed,
                "overrides": list(job.overrides), "mlflow_run_id": run_id, "finished": True,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 1),
                "command": job.command(self.rcfg)}
        (job.run_dir / "reproduce.json").write_text(json.dumps(meta, indent=2) + "\n")

    def _train(self, job: Job) -> RunResult:
        from baselines import hooks_for
        from trapo.trainer import Trainer

        t0 = time.monotonic()
        job.run_dir.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(job.cfg, job.run_dir, tags=self._tags(job), overrides=self._overrides(job),
                          source="experiments/reproduce.py", command=job.command(self.rcfg),
                          hooks=hooks_for(job.cfg))  # a method's step hooks (relift's SFT step), as its runner's
        final = trainer.run()
        run = self.store.finished(job.hash) if self.store is not None else None
        run_id = run.info.run_id if run is not None else None
        res = RunResult(job, "trained", run_id, job.run_dir, dict(final), read_history(job.run_dir))
        if job.passk and self.passk_settings:  # the trained model is still in memory
            res.passk = self._passk_eval(job, res, trainer.backend(), trainer.data.eval_splits)
        self._finish(job, run_id, final, time.monotonic() - t0)
        return res

    def _base(self, job: Job) -> RunResult:
        """The untrained model, evaluated as the trainer evaluates (evaluation.runner on the local engine)."""
        from evaluation.runner import evaluate_items, write_results
        from trapo.data.loading import load_dataset
        from trapo.tracking import Tracker, flatten
        from evaluation.runner import eval_metrics

        t0 = time.monotonic()
        cfg, ev = job.cfg, job.cfg.eval
        job.run_dir.mkdir(parents=True, exist_ok=True)
        data = load_dataset(cfg.data)
        backend = local_backend(cfg)
        results = {}
        splits = ({"valid": data.valid} if data.valid else {}) | dict(data.eval_splits)
        for name, items in splits.items():
            results[name] = evaluate_items(items, backend, self.grader, n_samples=int(ev.n_samples),
                                           temperature=float(ev.temperature), max_new_tokens=int(ev.max_new_tokens),
                                           seed=int(cfg.seed), name=name)
        write_results(results, job.run_dir / "eval")
        final = eval_metrics(results)
        (job.run_dir / "final_metrics.json").write_text(json.dumps(final, indent=2))
        run_id = None
        if self.store is not None:
            from trapo.tracking import run_name, run_tags

            tags = {**run_tags(cfg, job.run_dir, self._overrides(job), source="experiments/reproduce.py"),
                    "method": "base", **self._tags(job)}
            name = run_name("base", job.seed, cfg.get("preset_name"), tags["overrides"].split())
            tracker = Tracker(str(self.rcfg.experiment), run_name=name, tags=tags,
                              fallback_path=job.run_dir / "mlflow_fallback.jsonl")
            tracker.log_params(flatten({"method": {"name": "base"}, **base_view(cfg)}))
            tracker.log_metrics(final, step=0)
            tracker.finish("FINISHED")
            run_id = tracker.run_id
        res = RunResult(job, "evaluated", run_id, job.run_dir, final, None)
        if job.passk and self.passk_settings:
            res.passk = self._passk_eval(job, res, backend, data.eval_splits)
        self._finish(job, run_id, final, time.monotonic() - t0)
        return res

    # -- pass@k
    def _passk(self, job: Job, res: RunResult) -> dict | None:
        """A reused run's pass@k: from its run dir, else from its MLflow artifacts, else computed again."""
        s = self.passk_settings
        for d in [res.run_dir] if res.run_dir is not None else []:
            got = _read_json(d / "passk" / "summary.json")
            if got and got.get("settings") == s and s["split"] in got:
                return got[s["split"]]
        if self.store is not None and res.run_id is not None:
            with contextlib.suppress(Exception):
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    p = self.store.client.download_artifacts(res.run_id, "passk/summary.json", tmp)
                    got = _read_json(Path(p))
                    if got and got.get("settings") == s and s["split"] in got:
                        return got[s["split"]]
        from trapo.data.loading import load_dataset

        if job.kind == "base":
            backend = local_backend(job.cfg)
        else:
            ckpt = final_checkpoint(job.cfg, res.run_dir) if res.run_dir is not None else None
            if ckpt is None:
                log.warning("%s: no pass@k results and no final checkpoint to compute them from", job.name)
                return None
            backend = local_backend(job.cfg, ckpt)
        if res.run_dir is None:
            res.run_dir = job.run_dir
        return self._passk_eval(job, res, backend, load_dataset(job.cfg.data).eval_splits)

    def _passk_eval(self, job: Job, res: RunResult, backend, splits: Mapping[str, list]) -> dict | None:
        from evaluation.runner import evaluate_items, write_results

        s = self.passk_settings
        if s["split"] not in splits:
            log.warning("pass@k split %r is not an evaluation split (%s)", s["split"], ", ".join(splits))
            return None
        summary, rows = evaluate_items(splits[s["split"]], backend, self.grader, n_samples=s["n_samples"],
                                       temperature=s["temperature"], max_new_tokens=int(job.cfg.eval.max_new_tokens),
                                       seed=int(job.cfg.seed), name=s["split"])
        out = res.run_dir / "passk"
        write_results({s["split"]: (summary, rows)}, out)
        (out / "summary.json").write_text(json.dumps({"settings": s, s["split"]: summary}, indent=2) + "\n")
        if self.store is not None and res.run_id is not None:
            metrics = {f"passk/{s['split']}/pass_at_{k}": v["value"] for k, v in summary["pass@k"].items()}
            self.store.safe("log_metrics", self._log_metrics, res.run_id, metrics)
            self.store.safe("log_artifacts", self.store.client.log_artifacts, res.run_id, str(out), "passk")
        return summary

    def _log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.store.client.log_batch(run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()])
