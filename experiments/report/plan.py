"""Which runs the tables need and who each is: (method, seed, overrides) composed into the ordinary run config with
Hydra's compose API, and its identity `config_hash`: sha256 of the resolved config without the keys that do not
change what is trained or measured (`VOLATILE`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

import trapo  # noqa: F401  (registers ${trapo.group_size:}, conf/config.yaml, which the hashes resolve)

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"

# keys of the resolved run config that do not change what a run trains or measures
VOLATILE = ("progress", "tracking", "resume", "checkpoint", "hydra", "engine.num_threads", "engine.dry_run",
            "engine.output_dir", "engine.data_dir", "engine.working_dir", "engine.ray_address", "engine.launcher",
            "method.runner",  # which module trains a method follows from its name (baselines/)
            # how the update is cut into forward/backward passes: memory, not the objective (the gradient is the
            # same up to float summation order, tests/engine/test_local_engine.py), so runs made before they existed count
            "train.micro_batch_tokens", "train.logits_chunk_tokens", "train.gradient_checkpointing",
            # read only through engine.max_prompt_len (openrlhf), which the hash covers resolved
            "model.max_prompt_len")
# keys that change only how the final model is evaluated (the evaluation splits are drawn after, and excluding,
# the training set, so their size does not move it): a run that differs from a finished one in these alone is
# evaluated again from that run's final checkpoint (experiments/report/jobs.py), not trained again
EVAL_ONLY = ("data.eval_n", "data.eval_splits", "data.eval_benchmarks", "data.eval_benchmark_n", "eval.n_samples",
             "eval.temperature", "eval.max_new_tokens", "eval.batch_size")

# keys declared in the YAML after runs were made without them, with the value their absence meant: hashed as absent
# while they hold it, so those runs keep their hash (reuse survives a key being declared; a key whose default is
# derived, like train.group_size, hashes as the value it resolves to, so it needs no entry)
DECLARED_LATER = {"engine.first_step": 0}

# keys moved after runs were made: new place -> the place those runs' configs hold it. Hashed at the old place, so
# a move alone changes no hash and retrains nothing (the guidance schedule moved under the method, issue 28)
MOVED = {"method.guidance_schedule": "guidance"}


def moved_key_error(overrides: list[str]) -> str | None:
    """The message for a command-line override that names a key at its old place (None: none does)."""
    for arg in overrides:
        key = arg.split("=", 1)[0].lstrip("+~")
        for new, old in MOVED.items():
            if key == old or key.startswith(old + "."):
                return (f"{key} has moved to {new + key[len(old):]} (the schedule belongs to the method): "
                        f"write {arg.replace(old, new, 1)}")
    return None

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


def _get(d: dict, dotted: str, default: Any = None) -> Any:
    for p in dotted.split("."):
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def _put(d: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def hash_view(cfg) -> dict:
    """The resolved run config without `VOLATILE` keys: what the hash covers."""
    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    for key in VOLATILE:
        _drop(d, key)
    for key, absent in DECLARED_LATER.items():
        if _get(d, key, absent) == absent:
            _drop(d, key)
    for new, old in MOVED.items():
        missing = object()
        value = _get(d, new, missing)
        if value is not missing:
            _drop(d, new)
            _put(d, old, value)
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


def train_hash(cfg) -> str:
    """The identity of what a run trains: its config hash without `EVAL_ONLY`. Two runs with the same train hash
    train the same weights, so a finished one is evaluated again under the other's settings, not retrained."""
    d = hash_view(cfg)
    for key in EVAL_ONLY:
        _drop(d, key)
    return digest(d)


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


