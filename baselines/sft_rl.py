"""SFT->RL baseline (method=sft_rl): SFT for the first method.sft_fraction of the steps, then GRPO from its weights.

engine=local: one run of the TRAPO trainer (its SFT phase, then the RL phase with fresh AdamW moments and LR
warmup), one MLflow run.
engine=openrlhf: two launches as one command and one tracked run: OpenRLHF's SFT trainer on the SFT steps' prompts
(baselines/openrlhf_sft.py, into <out>/sft/final), then the RL launch (trapo/engines/openrlhf/launch.py, method
sft_rl with sft_fraction 0 = GRPO) from that directory on the remaining steps' prompts (`engine.first_step`), in
the local trainer's step order. MLflow: a parent run `sft_rl ...` with the two jobs as child runs (`sft`, `rl`).
A rerun skips an SFT phase whose final model exists. `engine.dry_run=true` prints both launches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from baselines.common import RunContext, engine_name, train_local


def split_steps(cfg) -> tuple[int, int]:
    """(SFT steps, RL steps): the trainer's phases (`trapo.trainer.method_phases`)."""
    from trapo.trainer import method_phases

    total = int(cfg.train.steps)
    phases = {p.kind: p.steps for p in method_phases(cfg.method, total)}
    n_sft, n_rl = phases.get("sft", 0), phases.get("rl", 0)
    if not n_sft or not n_rl:
        raise ValueError(f"config method.sft_fraction={cfg.method.sft_fraction} with train.steps={total} leaves "
                         f"{n_sft} SFT and {n_rl} RL steps: sft_rl needs both (use method=sft or grpo)")
    return n_sft, n_rl


def _derived(cfg, **updates):
    """A plain copy of the resolved config with dotted keys set (the launches' configs)."""
    from omegaconf import OmegaConf

    from trapo.engines.openrlhf.settings import to_container

    out = OmegaConf.create(to_container(cfg))
    for key, value in updates.items():
        OmegaConf.update(out, key, value, force_add=True)
    return out


@dataclass
class Plan:
    sft_cfg: object
    rl_cfg: object
    sft: object  # baselines.openrlhf_sft.SFTLaunch
    rl: object  # trapo.engines.openrlhf.launch.Launch


def plan(cfg, run_dir, parent_run_id: str | None = None) -> Plan:
    from baselines.openrlhf_sft import build_sft_launch, output_root
    from trapo.engines.openrlhf.flags import Flag
    from trapo.engines.openrlhf.launch import build_launch

    run_dir = Path(run_dir).resolve()
    n_sft, n_rl = split_steps(cfg)
    out = output_root(cfg, run_dir)
    sft_cfg = _derived(cfg, **{"tracking.parent_run_id": parent_run_id, "tracking.run_name": "sft_rl: sft"})
    sft = build_sft_launch(sft_cfg, run_dir, steps=n_sft, first_step=0, out=out / "sft")
    # the RL half: the trainer's RL phase (fresh AdamW, warmup restarted) on the steps after the SFT ones
    rl_cfg = _derived(cfg, **{"method.sft_fraction": 0.0, "train.steps": n_rl, "engine.first_step": n_sft,
                              "tracking.parent_run_id": parent_run_id, "tracking.run_name": "sft_rl: rl"})
    rl = build_launch(rl_cfg, run_dir)
    i = next(k for k, f in enumerate(rl.flags) if f.flag == "--actor.model_name_or_path")
    rl.flags[i] = Flag("--actor.model_name_or_path", sft.output_dir, "the SFT phase's model (its --ckpt.output_dir)")
    rl.notes.append(f"RL phase: steps {n_sft + 1}-{n_sft + n_rl} of {n_sft + n_rl}, from the SFT phase's model "
                    f"{sft.output_dir}; its prompt file holds those steps' prompts (engine.first_step={n_sft})")
    return Plan(sft_cfg, rl_cfg, sft, rl)


def run(cfg, ctx: RunContext) -> dict[str, float]:
    split_steps(cfg)
    if engine_name(cfg) == "local":
        return train_local(cfg, ctx)
    if bool(cfg.engine.dry_run):
        dry_run(cfg, ctx.output_dir)
        return {}
    launch_both(cfg, ctx)
    return {}


def dry_run(cfg, run_dir) -> None:
    from omegaconf import OmegaConf

    from baselines import openrlhf_sft
    from trapo.engines.openrlhf import launch as rl_launch
    from trapo.engines.openrlhf.settings import to_container

    p = plan(cfg, run_dir)
    n_sft, n_rl = split_steps(cfg)
    print(f"# sft_rl on OpenRLHF: {n_sft} SFT steps, then {n_rl} RL steps from the SFT model, as one command "
          "(launch 1, then launch 2); MLflow: one parent run, the two jobs as its children")
    print(openrlhf_sft.describe(p.sft_cfg, p.sft, title="sft_rl, launch 1 of 2: SFT"))
    print(openrlhf_sft.validate_with_openrlhf(p.sft))
    print("# ---- sft_rl, launch 2 of 2: RL (GRPO) from the SFT model ----")
    text = rl_launch.describe(p.rl_cfg, p.rl).split("# resolved config:")[0].rstrip()
    # its model is launch 1's output, not model.path: the model-dir warning of launch 1 does not apply here
    print("\n".join(line for line in text.splitlines() if not line.startswith("# WARNING: model dir")))
    print(rl_launch.validate_with_openrlhf(p.rl))
    print("# resolved config:\n" + OmegaConf.to_yaml(OmegaConf.create(to_container(cfg))))


def launch_both(cfg, ctx: RunContext) -> None:
    """The two launches under one MLflow parent run (FINISHED when both finished, else FAILED)."""
    from baselines import openrlhf_sft
    from trapo.tracking import Tracker, run_name, run_tags

    tags = {**run_tags(cfg, ctx.output_dir, ctx.overrides, source=ctx.source, command=ctx.command),
            "engine": "openrlhf", **dict(ctx.tags)}
    parent = Tracker(str(cfg.tracking.experiment),
                     run_name=run_name(str(cfg.method.name), cfg.seed, cfg.get("preset_name"),
                                       tags["overrides"].split()),
                     tags=tags, parent_run_id=cfg.tracking.get("parent_run_id"))
    status = "FAILED"
    try:
        p = plan(cfg, ctx.output_dir, parent_run_id=parent.run_id)
        if (Path(p.sft.output_dir) / "config.json").exists():
            print(f"SFT phase done already ({p.sft.output_dir}): starting the RL phase")
        else:
            openrlhf_sft.execute(p.sft_cfg, p.sft)
        execute_rl(p.rl_cfg, p.rl)
        if rl_launch_module().rollout_engine(cfg) == "cpu":  # the final model's evaluation, on the parent run
            rl_launch_module().evaluate_job(cfg, p.rl.output_dir, ctx.output_dir, run_id=parent.run_id)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        parent.finish(status)


def rl_launch_module():
    from trapo.engines.openrlhf import launch

    return launch


def execute_rl(cfg, launch) -> None:
    """`trapo.engines.openrlhf.launch.main` for an already built launch (its model flag points at the SFT model,
    so the model-dir warning of the config's model does not apply)."""
    from trapo.engines.openrlhf import launch as rl_launch

    def write() -> str:
        return f"wrote {rl_launch.write_prompts(cfg, launch.prompts_path)} prompts to {launch.prompts_path}"

    rl_launch.execute(cfg, launch, write, quiet=("prompt file", "model dir"))


def final_model_dir(cfg, run_dir) -> str:
    return plan(cfg, run_dir).rl.output_dir
