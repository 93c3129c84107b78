"""Running the runs behind the tables: reuse of finished MLflow runs, training, the base model's evaluation, pass@k.

What to run and each run's identity (`config_hash`) are planned in plan.py; what finished runs left is read
through store.py. Before training, `Reproducer.lookup` looks for a FINISHED MLflow run
tagged `config_hash=<hash>` (then for a finished run dir with that hash) and reuses its metrics, its
`metrics.jsonl` and eval rows; only runs found nowhere are trained, in `<run_root>/<name>_s<seed>_<hash12>`
(an interrupted run resumes there from its last checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Mapping

from experiments.report.plan import Job, base_view, train_hash
from experiments.report.store import RunResult, Store, read_json, read_history

log = logging.getLogger(__name__)


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
        if self.passk_settings and p.get("n_problems"):  # the split's first n problems (its samples cost n x k)
            self.passk_settings["n_problems"] = int(p["n_problems"])

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
        meta = read_json(job.run_dir / "reproduce.json")
        final = read_json(job.run_dir / "final_metrics.json")
        if meta and meta.get("config_hash") == job.hash and meta.get("finished") and final:
            return RunResult(job, "reused (run dir)", meta.get("mlflow_run_id"), job.run_dir, final,
                             read_history(job.run_dir))
        return None

    def trained_before(self, job: Job):
        """(MLflow run, run dir, final checkpoint) of a finished training run whose config differs from the job's
        only in evaluation settings (`EVAL_ONLY`), or None. Runs tagged before `train_hash` existed are matched
        through the resolved config their run dir keeps (.hydra/config.yaml)."""
        if not self.rcfg.reuse or self.store is None or job.kind != "train":
            return None
        want = train_hash(job.cfg)
        for run in self.store.finished_runs(job.method, job.seed):
            tagged_dir = run.data.tags.get("run_dir")
            if not tagged_dir or not Path(tagged_dir).is_dir():
                continue
            run_dir = Path(tagged_dir)
            tagged = run.data.tags.get("train_hash")
            if tagged is None:
                with contextlib.suppress(Exception):  # a config that no longer composes is not a match
                    from omegaconf import OmegaConf

                    tagged = train_hash(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
            ckpt = final_checkpoint(job.cfg, run_dir) if tagged == want else None
            if ckpt is not None:
                return run, run_dir, ckpt
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
        if res is None and job.kind == "train":
            before = self.trained_before(job)
            if before is not None:
                res = self._reevaluate(job, *before)
        if res is None:
            res = self._base(job) if job.kind == "base" else self._train(job)
        if job.passk and self.passk_settings and res.passk is None:
            res.passk = self._passk(job, res)
        res.seconds = time.monotonic() - t0
        return res

    def _tags(self, job: Job) -> dict[str, str]:
        tags = {"config_hash": job.hash, "run_dir": str(job.run_dir.resolve()), "reproduce_preset": str(self.rcfg.preset),
                "reproduce_labels": ",".join(job.labels), "seed": str(job.seed)}
        if job.kind == "train":
            tags["train_hash"] = train_hash(job.cfg)
        return tags

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

    def _evaluate_run(self, job: Job, backend):
        """(final metrics, dataset): every evaluation split (valid first) under the job's evaluation settings,
        written to its run dir (eval/, final_metrics.json) as the trainer writes them."""
        from evaluation.runner import eval_metrics, evaluate_items, write_results
        from trapo.data.loading import load_dataset

        cfg, ev = job.cfg, job.cfg.eval
        data = load_dataset(cfg.data)
        splits = ({"valid": data.valid} if data.valid else {}) | dict(data.eval_splits)
        results = {name: evaluate_items(items, backend, self.grader, n_samples=int(ev.n_samples),
                                        temperature=float(ev.temperature), max_new_tokens=int(ev.max_new_tokens),
                                        seed=int(cfg.seed), name=name)
                   for name, items in splits.items()}
        write_results(results, job.run_dir / "eval")
        final = eval_metrics(results)
        (job.run_dir / "final_metrics.json").write_text(json.dumps(final, indent=2))
        return final, data

    def _record_run(self, job: Job, name_method: str, params: Mapping, metrics_by_step, command: str | None = None,
                    **extra_tags: str) -> str | None:
        """An evaluation made here (no trainer) as an MLflow run of its own: the job's tags and `extra_tags`,
        `params`, and each (step, metrics) of `metrics_by_step`; its run id, or None without a store."""
        if self.store is None:
            return None
        from trapo.tracking import Tracker, run_name, run_tags

        tags = {**run_tags(job.cfg, job.run_dir, self._overrides(job), source="experiments/reproduce.py",
                           command=command), **extra_tags, **self._tags(job)}
        name = run_name(name_method, job.seed, job.cfg.get("preset_name"), tags["overrides"].split())
        tracker = Tracker(str(self.rcfg.experiment), run_name=name, tags=tags,
                          fallback_path=job.run_dir / "mlflow_fallback.jsonl")
        tracker.log_params(params)
        for step, metrics in metrics_by_step:
            tracker.log_metrics(metrics, step=step)
        tracker.finish("FINISHED")
        return tracker.run_id

    def _reevaluate(self, job: Job, trained, trained_dir: Path, ckpt: Path) -> RunResult:
        """A finished run's final weights under this job's evaluation settings: a new MLflow run, tagged with the
        job's config hash and `reevaluated_from` (the training run), that carries the training run's per-step
        metrics; its run dir holds the new evaluation, a copy of metrics.jsonl and a link to the checkpoints."""
        import shutil

        from omegaconf import OmegaConf

        from trapo.tracking import flatten

        t0 = time.monotonic()
        cfg = job.cfg
        job.run_dir.mkdir(parents=True, exist_ok=True)
        if (trained_dir / "metrics.jsonl").exists():
            shutil.copyfile(trained_dir / "metrics.jsonl", job.run_dir / "metrics.jsonl")
        link = job.run_dir / "checkpoints"
        if not link.exists():
            link.symlink_to((trained_dir / "checkpoints").resolve(), target_is_directory=True)
        backend = local_backend(cfg, ckpt)
        final, data = self._evaluate_run(job, backend)
        history = read_history(job.run_dir)
        steps = [(int(row["step"]), {k: v for k, v in row.items() if k != "step" and v == v})
                 for row in (history.to_dict("records") if history is not None else [])]
        run_id = self._record_run(job, job.method, flatten(OmegaConf.to_container(cfg, resolve=True)),
                                  [*steps, (int(cfg.train.steps), final)], command=job.command(self.rcfg),
                                  reevaluated_from=trained.info.run_id)
        res = RunResult(job, f"re-evaluated (trained in MLflow run {trained.info.run_id[:8]})", run_id, job.run_dir,
                        final, history)
        if job.passk and self.passk_settings:
            res.passk = self._passk_eval(job, res, backend, data.eval_splits)
        self._finish(job, run_id, final, time.monotonic() - t0)
        return res

    def _base(self, job: Job) -> RunResult:
        """The untrained model, evaluated as the trainer evaluates (evaluation.runner on the local engine)."""
        from trapo.tracking import flatten

        t0 = time.monotonic()
        cfg = job.cfg
        job.run_dir.mkdir(parents=True, exist_ok=True)
        backend = local_backend(cfg)
        final, data = self._evaluate_run(job, backend)
        run_id = self._record_run(job, "base", flatten({"method": {"name": "base"}, **base_view(cfg)}), [(0, final)],
                                  method="base")
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
            got = read_json(d / "passk" / "summary.json")
            if got and got.get("settings") == s and s["split"] in got:
                return got[s["split"]]
        if self.store is not None and res.run_id is not None:
            with contextlib.suppress(Exception):
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    p = self.store.client.download_artifacts(res.run_id, "passk/summary.json", tmp)
                    got = read_json(Path(p))
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
        items = splits[s["split"]][: s.get("n_problems")]
        summary, rows = evaluate_items(items, backend, self.grader, n_samples=s["n_samples"],
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
