"""The resolved run config's checks, done before any work starts (bad values fail with their key).

`validate_config` is the one place that checks the micro-group schedules (`trapo.guidance.guidance_schedule`,
`rl_schedule`) against `train.group_size`, which is derived from the schedule unless set (`${trapo.group_size:}`,
conf/config.yaml): a guided method given another group size is refused.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from trapo.guidance import CONFIG_KEY, PRESETS, guidance_schedule, rl_schedule
from trapo.losses import PREFIX_LOSSES


def _fail(key: str, msg: str) -> None:
    raise ValueError(f"config {key}: {msg}")


def validate_config(cfg) -> None:
    m = cfg.method
    if float(m.alpha) < 0:
        _fail("method.alpha", f"the trust region alpha must be >= 0, got {m.alpha}")
    if float(m.gamma) <= 0:
        _fail("method.gamma", f"must be > 0, got {m.gamma}")
    if m.prefix_loss not in PREFIX_LOSSES:
        _fail("method.prefix_loss", f"must be one of {PREFIX_LOSSES}, got {m.prefix_loss!r}")
    if m.guidance not in ("none", "adaptive"):
        _fail("method.guidance", f"must be 'none' or 'adaptive', got {m.guidance!r}")
    if not 0.0 <= float(m.sft_fraction) <= 1.0:
        _fail("method.sft_fraction", f"must lie in [0, 1], got {m.sft_fraction}")
    if m.guidance_schedule.preset not in PRESETS:
        _fail(f"{CONFIG_KEY}.preset", f"must be one of {sorted(PRESETS)}, got {m.guidance_schedule.preset!r}")
    # the guidance schedule validates its own fields (sizes, ratios, increasing thresholds), before train.group_size
    # (derived from it) is read
    try:
        guidance_schedule(cfg)
    except ValueError as e:
        raise ValueError(f"config {e}") from None
    t = cfg.train
    for key in ("steps", "prompts_per_step", "group_size", "micro_batch_size"):
        if int(t[key]) < 1:
            _fail(f"train.{key}", f"must be >= 1, got {t[key]}")
    for key in ("micro_batch_tokens", "logits_chunk_tokens"):  # null: no token budget
        if t.get(key) is not None and int(t[key]) < 1:
            _fail(f"train.{key}", f"must be >= 1 (or null), got {t[key]}")
    for key in ("lr", "sft_lr"):
        if key in t and float(t[key]) <= 0:
            _fail(f"train.{key}", f"must be > 0, got {t[key]}")
    if int(t.get("warmup_steps", 0) or 0) < 0:
        _fail("train.warmup_steps", f"must be >= 0, got {t.warmup_steps}")
    if t.on_nonfinite not in ("stop", "skip"):
        _fail("train.on_nonfinite", f"must be 'stop' or 'skip', got {t.on_nonfinite!r}")
    if int(cfg.rollout.max_new_tokens) < 1:
        _fail("rollout.max_new_tokens", f"must be >= 1, got {cfg.rollout.max_new_tokens}")
    if float(cfg.rollout.temperature) < 0:
        _fail("rollout.temperature", f"must be >= 0, got {cfg.rollout.temperature}")
    if cfg.resume not in ("auto", "never"):
        _fail("resume", f"must be 'auto' or 'never', got {cfg.resume!r}")
    if int(cfg.checkpoint.every) < 0:
        _fail("checkpoint.every", f"must be >= 0 (0 = no intermediate checkpoints), got {cfg.checkpoint.every}")
    if int(cfg.checkpoint.keep) < 1:
        _fail("checkpoint.keep", f"must be >= 1, got {cfg.checkpoint.keep}")
    if int(cfg.eval.every) < 0:
        _fail("eval.every", f"must be >= 0, got {cfg.eval.every}")
    if not isinstance(cfg.model.get("trust_remote_code", False), bool):
        _fail("model.trust_remote_code", f"must be true or false, got {cfg.model.trust_remote_code!r}")
    d = cfg.data
    if d.kind in ("synthetic", "word_problems") and int(d.train.n) < 1:
        _fail("data.train.n", f"the training set would be empty (n={d.train.n})")
    if d.kind == "jsonl" and (OmegaConf.is_missing(d, "path") or not str(d.path or "")):
        _fail("data.path", "set the JSON-lines file, e.g. data=jsonl data.path=/path/to/train.jsonl")
    if d.kind not in ("synthetic", "word_problems", "jsonl"):
        _fail("data.kind", f"must be 'synthetic', 'word_problems' or 'jsonl', got {d.kind!r}")
    sched = rl_schedule(cfg)
    if sched.group_size != int(t.group_size):
        _fail(f"{CONFIG_KEY}.group_sizes", f"{list(sched.group_sizes)} sum to {sched.group_size}, "
              f"but train.group_size is {t.group_size}")
