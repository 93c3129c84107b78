"""The OpenRLHF command line as a pure function of the Hydra config: each flag with the config key it comes from
(`openrlhf_flags`; docs/openrlhf.md lists them), the optimizer and DeepSpeed flags the SFT baseline shares, and the
CPU route's settings. No file, process or environment is touched here: launch.py does the job's I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trapo.engines.openrlhf.settings import to_container

AGENT_REL = "trapo/engines/openrlhf/agent.py"


REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Flag:
    flag: str
    value: Any  # True = a store_true flag that is set; a tuple = several values
    source: str | None  # the config key(s) it comes from; None = fixed by TRAPO's recipe

    def argv(self) -> list[str]:
        if self.value is True:
            return [self.flag]
        if self.value is False or self.value is None:
            return []
        if isinstance(self.value, (tuple, list)):
            return [self.flag, *(_fmt(v) for v in self.value)]
        return [self.flag, _fmt(self.value)]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


ROLLOUTS = ("vllm", "cpu")


# engine.rollout=cpu (trapo/engines/openrlhf/cpu_rollout.py): OpenRLHF's loop on CPU processes, the driver on this
# machine (it starts or joins a local Ray cluster), one DeepSpeed rank and one rollout engine; these settings replace
# the GPU ones of conf/engine/openrlhf.yaml (flash-attention, packing and colocation need CUDA)
CPU_ROUTE = {"launcher": "local", "num_nodes": 1, "actor_gpus_per_node": 1, "vllm_num_engines": 1,
             "vllm_tensor_parallel_size": 1, "colocate_all": False, "vllm_enable_prefix_caching": False,
             "attn_implementation": "eager", "packing_samples": False, "gradient_checkpointing": False,
             "adam_offload": False}


def rollout_engine(cfg) -> str:
    rollout = str(cfg.engine.get("rollout", "vllm"))
    if rollout not in ROLLOUTS:
        raise ValueError(f"config engine.rollout must be one of {', '.join(ROLLOUTS)}, got {rollout!r}")
    return rollout


def with_rollout_route(cfg):
    """cfg with `CPU_ROUTE` in its engine settings when engine.rollout=cpu (the config the workers then get)."""
    if rollout_engine(cfg) != "cpu":
        return cfg
    from omegaconf import OmegaConf

    out = OmegaConf.create(to_container(cfg))
    out.engine = OmegaConf.merge(out.engine, CPU_ROUTE)
    return out


def model_source(model_cfg) -> str:
    """Local directory if it exists, else the hub id (OpenRLHF and vLLM download it on the cluster)."""
    if model_cfg.kind == "tiny":
        from trapo.models.tiny import cache_key, cache_root

        return str(cache_root() / "models" / f"tiny-{cache_key(dict(model_cfg.arch), dict(model_cfg.pretrain))}")
    if model_cfg.kind != "hf":
        raise ValueError(f"engine=openrlhf needs a Hugging Face model (model.kind hf or tiny), got {model_cfg.kind!r}")
    path = Path(str(model_cfg.path))
    if path.exists() or not model_cfg.get("hub_id"):
        return str(path.resolve())
    return str(model_cfg.hub_id)


def max_len(cfg) -> int:
    e = cfg.engine
    if e.get("max_len"):
        return int(e.max_len)
    return int(e.max_prompt_len) + int(cfg.rollout.max_new_tokens)  # the response holds prefix + completion


def model_context(model_cfg) -> tuple[int | None, str]:
    """(positions the model's config allows, where that was read): `max_position_embeddings` of the model
    directory's config.json, else `model.context_len` (the hub config's value, recorded in conf/model/), else None."""
    if model_cfg.kind == "tiny":
        n = (model_cfg.get("arch") or {}).get("max_positions")
        return (int(n) if n else None), "model.arch.max_positions"
    path = Path(str(model_cfg.path))
    config = path / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{config}: unreadable model config ({e})") from None
        data = data.get("text_config", data)
        if data.get("max_position_embeddings"):
            return int(data["max_position_embeddings"]), str(config)
    if model_cfg.get("context_len"):
        return int(model_cfg.context_len), f"model.context_len (config.json of {model_cfg.get('hub_id') or path})"
    return None, "unknown"


def context_problem(cfg) -> str | None:
    """Why vLLM would refuse `max_model_len` = engine.max_len for this model, or None."""
    need = max_len(cfg)
    have, where = model_context(cfg.model)
    if have is None or need <= have:
        return None
    return (f"prompt + response need {need} tokens (engine.max_len / engine.max_prompt_len "
            f"{cfg.engine.max_prompt_len} + rollout.max_new_tokens {cfg.rollout.max_new_tokens}), but the model's "
            f"config allows {have} ({where}): vLLM refuses a max_model_len above it. Point model.path at a copy "
            f"whose config.json has max_position_embeddings >= {need} (the authors train from a 16k-context copy "
            f"of Qwen2.5-Math-7B), or lower rollout.max_new_tokens / engine.max_prompt_len")


def optimizer_flags(cfg, prefix: str, *, lr: float, lr_source: str, steps: int) -> list[Flag]:
    """AdamW as the local engine's (torch's defaults), constant LR after train.warmup_steps of linear warmup, and
    the gradient clip; `prefix` is "--actor." for the RL trainer, "--" for OpenRLHF's SFT trainer."""
    t = cfg.train
    warmup = int(t.get("warmup_steps", 0) or 0)
    F = Flag
    return [
        F(f"{prefix}adam.lr", lr, lr_source),
        F(f"{prefix}adam.betas", (0.9, 0.999), None),
        F(f"{prefix}adam.eps", 1e-8, None),
        F(f"{prefix}adam.weight_decay", float(t.weight_decay), "train.weight_decay"),
        # linear warmup over train.warmup_steps, then constant. OpenRLHF warms up for ceil(steps * ratio) optimizer
        # steps (one per trainer step here): half a step under keeps float error from adding one. transformers'
        # warmup starts its first step at LR 0, the local engine's at lr / warmup_steps.
        F(f"{prefix}lr_scheduler", "constant_with_warmup" if warmup else "constant", "train.warmup_steps"),
        F(f"{prefix}lr_warmup_ratio", (warmup - 0.5) / max(1, steps) if warmup else 0.0,
          "train.warmup_steps / train.steps"),
        F(f"{prefix}max_norm", float(t.grad_clip), "train.grad_clip"),
    ]


def deepspeed_flags(cfg, out: Path, *, gradient_checkpointing_flag: str) -> list[Flag]:
    """DeepSpeed, attention and checkpoint flags, the same for the RL and the SFT trainer (final model in
    out/final, resumable checkpoints in out/checkpoints)."""
    e, ck = cfg.engine, cfg.checkpoint
    F = Flag
    return [
        F("--ds.zero_stage", int(e.zero_stage), "engine.zero_stage"),
        F("--ds.param_dtype", str(e.param_dtype), "engine.param_dtype"),
        F("--ds.grad_accum_dtype", str(e.grad_accum_dtype) if e.get("grad_accum_dtype") else None,
          "engine.grad_accum_dtype"),
        F("--ds.adam_offload", bool(e.adam_offload), "engine.adam_offload"),
        F(gradient_checkpointing_flag, bool(e.gradient_checkpointing), "engine.gradient_checkpointing"),
        F("--ds.attn_implementation", str(e.attn_implementation), "engine.attn_implementation"),
        F("--ds.packing_samples", bool(e.packing_samples), "engine.packing_samples"),
        F("--ckpt.output_dir", str(out / "final"), "engine.output_dir"),
        F("--ckpt.path", str(out / "checkpoints"), "engine.output_dir"),
        F("--ckpt.save_steps", int(ck.every) if int(ck.every) > 0 else -1, "checkpoint.every"),
        F("--ckpt.max_num", int(ck.keep), "checkpoint.keep"),
        F("--ckpt.save_hf", True, None),
        F("--ckpt.load_enable", cfg.resume == "auto", "resume"),
        F("--logger.logging_steps", 1, None),
    ]


def openrlhf_flags(cfg, run_dir: Path, *, launcher: str) -> list[Flag]:
    e, t, r, m = cfg.engine, cfg.train, cfg.rollout, cfg.method
    out = Path(str(e.output_dir)) if e.get("output_dir") else run_dir / "openrlhf"
    prompts = Path(str(e.data_dir)) / "prompts.jsonl" if e.get("data_dir") else out / "data" / "prompts.jsonl"
    agent = AGENT_REL if launcher == "ray_job" else str(REPO / AGENT_REL)
    colocate = bool(e.colocate_all)
    F = Flag
    return [
        F("--actor.model_name_or_path", model_source(cfg.model), "model.path / model.hub_id"),
        F("--data.prompt_dataset", str(prompts), "data (written by the launcher)"),
        F("--data.input_key", "prompt", None),
        F("--data.label_key", "label", None),
        F("--data.max_len", max_len(cfg), "engine.max_len / engine.max_prompt_len + rollout.max_new_tokens"),
        F("--train.num_episodes", 1, None),
        F("--rollout.batch_size", int(t.prompts_per_step), "train.prompts_per_step"),
        F("--rollout.n_samples_per_prompt", int(t.group_size), "train.group_size"),
        F("--train.batch_size", int(t.prompts_per_step) * int(t.group_size),
          "train.prompts_per_step * train.group_size (one on-policy update per batch)"),
        F("--train.max_epochs", 1, None),
        F("--train.micro_batch_size", int(e.micro_train_batch_size), "engine.micro_train_batch_size"),
        F("--rollout.micro_batch_size", int(e.micro_rollout_batch_size), "engine.micro_rollout_batch_size"),
        F("--rollout.max_new_tokens", int(r.max_new_tokens), "rollout.max_new_tokens"),
        F("--rollout.temperature", float(r.temperature), "rollout.temperature"),
        F("--rollout.top_p", 1.0, None),
        *optimizer_flags(cfg, "--actor.", lr=float(t.lr), lr_source="train.lr", steps=int(t.steps)),
        F("--actor.entropy_coef", float(m.entropy_coef), "method.entropy_coef"),
        F("--actor.eps_clip", 0.2, None),
        F("--algo.advantage.estimator", "group_norm" if m.scale_by_std else "dr_grpo", "method.scale_by_std"),
        F("--algo.kl.init_coef", 0.0, None),  # no KL penalty, no reference model
        F("--train.agent_func_path", agent, None),
        F("--train.seed", int(cfg.seed), "seed"),
        F("--actor.num_nodes", int(e.num_nodes), "engine.num_nodes"),
        F("--actor.num_gpus_per_node", int(e.actor_gpus_per_node), "engine.actor_gpus_per_node"),
        F("--vllm.num_engines", int(e.vllm_num_engines), "engine.vllm_num_engines"),
        F("--vllm.tensor_parallel_size", int(e.vllm_tensor_parallel_size), "engine.vllm_tensor_parallel_size"),
        F("--vllm.gpu_memory_utilization", float(e.vllm_gpu_memory_utilization), "engine.vllm_gpu_memory_utilization"),
        F("--vllm.enable_prefix_caching", bool(e.vllm_enable_prefix_caching), "engine.vllm_enable_prefix_caching"),
        F("--vllm.enforce_eager", bool(e.vllm_enforce_eager), "engine.vllm_enforce_eager"),
        F("--train.colocate_all", colocate, "engine.colocate_all"),
        F("--vllm.enable_sleep", colocate, "engine.colocate_all"),
        F("--ds.enable_sleep", colocate, "engine.colocate_all"),
        *deepspeed_flags(cfg, out, gradient_checkpointing_flag="--actor.gradient_checkpointing_enable"),
        *cpu_route_flags(cfg),
    ]


def cpu_route_flags(cfg) -> list[Flag]:
    """engine.rollout=cpu: weights to the CPU rollout engine over gloo, and one rank for the model groups OpenRLHF
    creates without using (the reward model's: its default of 8 GPUs would be asked of Ray)."""
    if rollout_engine(cfg) != "cpu":
        return []
    F = Flag
    return [F("--vllm.sync_backend", "gloo", "engine.rollout"),
            *(F(f"--{m}.num_gpus_per_node", 1, "engine.rollout") for m in ("reward", "ref", "critic"))]
