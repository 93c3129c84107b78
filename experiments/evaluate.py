"""Evaluate a model (or the reference solutions) on the math benchmarks and log to MLflow.

    python experiments/evaluate.py backend=reference data_dir=PATH output_dir=DIR     # must be 100%
    python experiments/evaluate.py backend=hf model=smollm2 benchmarks=[math500] limit=20 \
        n_samples=1 max_new_tokens=512
    python experiments/evaluate.py backend=hf model=hf model.path=/models/qwen2.5-math-7b  # paper setting

Writes DIR/summary.json ({benchmark: {accuracy, n, ...}}) and DIR/<benchmark>.jsonl (question, response,
pred, gold, correct per sample). Config: conf/evaluate.yaml.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("evaluate")


def _log_mlflow(cfg: DictConfig, summary: dict, out_dir: Path, seconds: float) -> None:
    import mlflow

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    mlflow.set_experiment(cfg.tracking.experiment)
    model_name = cfg.model.get("name", "model") if cfg.backend != "reference" else "reference"
    with mlflow.start_run(run_name=cfg.tracking.run_name or f"{cfg.backend}-{model_name}"):
        mlflow.log_params({
            "backend": cfg.backend, "model": model_name, "benchmarks": ",".join(summary),
            "n_samples": cfg.n_samples, "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
            "limit": cfg.limit, "seed": cfg.seed, "data_dir": cfg.data_dir,
        })
        metrics = {"seconds_total": seconds}
        for name, s in summary.items():
            metrics[f"{name}/accuracy"] = s["accuracy"]
            metrics[f"{name}/n"] = s["n"]
            metrics[f"{name}/no_answer"] = s["no_answer"]
            for k, v in s["pass@k"].items():
                metrics[f"{name}/pass_at_{k}"] = v["value"]
        metrics["math_avg/accuracy"] = sum(s["accuracy"] for s in summary.values()) / len(summary)
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(out_dir), artifact_path="eval")


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from evaluation.backends import build_backend
    from evaluation.grader import Grader
    from evaluation.runner import evaluate_benchmarks, write_results
    from trapo.models.loading import load_model_and_tokenizer

    start = time.monotonic()
    if cfg.get("torch_threads"):
        import torch

        torch.set_num_threads(int(cfg.torch_threads))
    out_dir = Path(cfg.output_dir) if cfg.output_dir else Path(HydraConfig.get().runtime.output_dir)
    grader = Grader(workers=cfg.grader.workers, timeout=cfg.grader.timeout, progress=cfg.progress)
    try:
        backend = build_backend(cfg, device=cfg.device, load_model=load_model_and_tokenizer)
        results = evaluate_benchmarks(
            cfg.benchmarks, backend, grader, data_dir=cfg.data_dir, n_samples=cfg.n_samples, limit=cfg.limit,
            temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, n_boot=cfg.bootstrap,
        )
    finally:
        grader.close()
    summary = write_results(results, out_dir)
    seconds = time.monotonic() - start
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    for name, s in summary.items():
        print(f"{name:15s} accuracy {s['accuracy']:.4f}  (n={s['n']}, samples={s['n_samples']}, "
              f"95% CI {s['accuracy_ci95'][0]:.3f}-{s['accuracy_ci95'][1]:.3f})")
    print(f"wrote {out_dir / 'summary.json'} in {seconds:.1f} s")
    if cfg.tracking.enabled:
        try:
            _log_mlflow(cfg, summary, out_dir, seconds)
        except Exception as exc:  # tracking must not lose a finished evaluation
            log.warning("MLflow logging failed: %s", exc)
    return sum(s["accuracy"] for s in summary.values()) / len(summary)


if __name__ == "__main__":
    main()
