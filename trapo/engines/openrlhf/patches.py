"""Where OpenRLHF offers no hook: every such place, pinned to OpenRLHF 0.11.2.

1. `openrlhf/cli/train_ppo_ray.py`, block `if __name__ == "__main__":` -- OpenRLHF builds its argument
   parser and validates the arguments only there (no parser function). `run_cli_block` runs that block
   from OpenRLHF's own source with `train` replaced, so our entry and the dry-run test use OpenRLHF's
   exact flags, defaults and checks.
2. `train_ppo_ray.train` -- creates the actor group from the module global `PolicyModelActor` and imports
   `openrlhf.trainer.ppo_trainer.PPOTrainer` when called. `train_with_trapo` rebinds both, in the driver
   only (Ray ships the actor classes by value), to `actor.policy_actor_class` (TRAPO's loss) and
   `ppo_trainer_class` (MLflow in the tensorboard slot).
3. Contracts the subclasses and the rollout agent rely on: `ActorPPOTrainer.training_step` (replaced),
   `ActorPPOTrainer.ppo_train` (consumes its return value), `PolicyModelActor.init_model_from_pretrained`
   (builds the trainer that `actor.adopt` takes over), `BasePPOTrainer.__init__` and
   `save_logs_and_checkpoints` (the logger slot), `RolloutRayActor.generate_responses` (n concurrent
   `execute` calls sharing one sampling_params) and `SamplesGenerator._process_response_into_experience`
   (action_ranges -> action_mask, extra_logs -> info), `prepare_datasets` and `PPOTrainer.__init__` (the prompt
   loader that `read_prompts_in_file_order` rebuilds without shuffling); for ReLIFT (method=relift)
   `PolicyModelActor.save_checkpoint` (its state saved beside it), `PolicyModelActor.fit` (calls the `ppo_train` that
   `actor.TrapoActorPPOTrainer` extends), the DeepSpeed engine's step/backward/boundary (the SFT step) and ZeRO-3's
   optimizer step (where its optimizer state lives).

`TARGETS` holds the sha256 of each of these sources as released in 0.11.2; `check_targets` (run by the
entry, and by tests/openrlhf_engine/test_openrlhf_launch.py) fails when OpenRLHF changes any of them, so an upgrade is a
deliberate re-check of this file, not a silent change of the algorithm.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping

from trapo.engines.openrlhf import OPENRLHF_VERSION

ALLOW_DRIFT_ENV = "TRAPO_OPENRLHF_ALLOW_DRIFT"

# module, qualified name ("__main__" = the `if __name__ == "__main__":` block) -> sha256 of its source
TARGETS: dict[tuple[str, str], str] = {
    ("openrlhf.cli.train_ppo_ray", "__main__"):
        "f482b05bfbd77153c04211aa111dd106e397040cf8b8e7bf6a1d68ae43c3e69b",
    ("openrlhf.cli.train_ppo_ray", "train"):
        "e4fb14095396487e70c0a0188de1477f036a6c98bb82d27dc6005cea1fa2c8ff",
    ("openrlhf.trainer.ray.ppo_actor", "ActorPPOTrainer.training_step"):
        "2ade5cf8894c07cc27adce23d61f517d252e79f706a2d1472e152dded60130f1",
    ("openrlhf.trainer.ray.ppo_actor", "ActorPPOTrainer.ppo_train"):
        "0f0d2afe178f37667d992a432c4f07c84a388b9b44b4b062fb13d0905d180f65",
    ("openrlhf.trainer.ray.ppo_actor", "PolicyModelActor.init_model_from_pretrained"):
        "502577568fbb1b6495a9823f685271cf18cdcd5c1a5e473d0474d5c1e2164652",
    ("openrlhf.trainer.ray.ppo_actor", "PolicyModelActor.save_checkpoint"):  # ReLIFT's state beside it
        "52fc0ebf4f055a4dcd7a26962b14de6eb704a465d748f0ac63bd57656d761598",
    ("openrlhf.trainer.ray.ppo_actor", "PolicyModelActor.fit"):  # ppo_train, then the replay buffer cleared
        "33a53e5b4239320cdb78bccd41a6f83f90c05a4586f89127d8130a10b7ae5a72",
    ("openrlhf.trainer.ppo_trainer", "BasePPOTrainer.__init__"):
        "52108ae9a9ec0d8f5a926cfa378ad815f0829604905000aec8b66b83dc5d8cfe",
    ("openrlhf.trainer.ppo_trainer", "BasePPOTrainer.save_logs_and_checkpoints"):
        "669909c3e1b7a218a8e71d601f319cb252215fbaba55b8c69d2316a14d097518",
    ("openrlhf.trainer.ray.vllm_engine", "RolloutRayActor.generate_responses"):
        "6cefbd6ae411c7c9e6655294ad414140176233d94b5922a1075b8e1a881035b5",
    ("openrlhf.trainer.ppo_utils.samples_generator", "SamplesGenerator._process_response_into_experience"):
        "71baa87a021cfdc0095dceeee847810f7f71558c6a36bdd0373c647434263ce6",
    ("openrlhf.trainer.ppo_trainer", "prepare_datasets"):
        "55832fcd023e691644f4540ecea828a49079bd78ce01c854362f6362978fd35b",
    ("openrlhf.trainer.ppo_trainer", "PPOTrainer.__init__"):
        "bf936e546809c6ac00ba36be68fdd3df5295124bf08c062071c1bf532abb20d2",
    ("openrlhf.utils.deepspeed.deepspeed", "DeepspeedStrategy.setup_dataloader"):
        "f4b22fa08dc3c456c257bd47de018c6fdebb4c46753eea28c6517d164164f1d1",
    # DeepSpeed 0.19.6 (OpenRLHF 0.11.2's): ReLIFT's SFT step (baselines/relift/openrlhf.py) sets the
    # accumulation boundary, backward without the 1/gas scaling, one step with the scheduler and clip swapped
    ("deepspeed.runtime.engine", "DeepSpeedEngine.step"):
        "fb8d974e224d165c88e074bc9c92c55f167e2b801b9ee8c7020af0d6c1f36fec",
    ("deepspeed.runtime.engine", "DeepSpeedEngine.backward"):
        "4600a72e3d3f3d12cd8031239e9f1d0ad321d0804a07988868864980fa7ac368",
    ("deepspeed.runtime.engine", "DeepSpeedEngine.is_gradient_accumulation_boundary"):
        "e0fcf0bd95e54d60a6f89552058709e5565f8471fccac621b5300d4de971faad",
    ("deepspeed.runtime.engine", "DeepSpeedEngine._take_model_step"):
        "2c94d8c2edef956bfdb917b469fbeab9556bf1f811b43bec377288fcd1f1ee30",
    # ZeRO-3 lists a group's flat fp32 partition in param_groups only inside its step: ReLIFT's state swap reads
    # the partitions from the ZeRO-3 optimizer instead (`optimizer_swap.zero3_state_keys`)
    ("deepspeed.runtime.zero.stage3", "DeepSpeedZeroOptimizer_Stage3._optimizer_step"):
        "f6efea60596166e131b6be5538d31d17fec03e113513616a820be8728604a284",
    # engine.rollout=cpu (`cpu_route_driver`, `cpu_route_actor_process`): what the CPU rollout engine stands in for
    # (RolloutRayActor's set-up and engine, the engines' creation, the weight-sync group), where Ray asks for GPUs
    # (actor groups), where DeepSpeed assumes CUDA (setup_distributed, the replay buffer's device) and the dtype map
    ("openrlhf.trainer.ray.vllm_engine", "RolloutRayActor.__init__"):
        "6adbbfe69dd95492e97f34053193a12d137eb9d42da0c59d148f17c4e40a5754",
    ("openrlhf.trainer.ray.vllm_engine", "RolloutRayActor.generate"):
        "3eedbb42e22a9f30793566101421c43300f49bd9007b1b570c4eeaec2ff08761",
    ("openrlhf.trainer.ray.vllm_engine", "create_vllm_engines"):
        "af57ea163173675fedda69846d6fcb84fa5f67843df8e175372f083e1904ac51",
    ("openrlhf.trainer.ray.launcher", "RayActorGroup._initiate_actors"):
        "dab6c25a292ca616e4856c2744d2f649d930507af62da8f7f94b333ac9186fec",
    ("openrlhf.utils.deepspeed.deepspeed", "DeepspeedStrategy.setup_distributed"):
        "5d18f192f8ea5d558f68e2a5c0fb3b81b904dfb1ea6e837270aec4d90968a3a4",
    ("openrlhf.trainer.ray.ppo_actor", "ActorPPOTrainer._init_vllm_sync_group"):
        "6ad3bfaadc9fe3f708d6b8264fd1cc7f2351e7fe13e7e3c6c5d97e0548b9feca",
    ("openrlhf.trainer.ray.ppo_actor", "ActorPPOTrainer.broadcast_to_vllm"):
        "82f48dd34edc7fc2046de5e3d418b9af8b9ddb428cdfd7419ca528bb100783f5",
    ("openrlhf.trainer.ppo_utils.replay_buffer", "NaiveReplayBuffer.__init__"):
        "7cad124520cf78705ea8b8178256a68d5097036914ece2a44fb7a97060fe5f7b",
    ("openrlhf.utils.utils", "convert_to_torch_dtype"):
        "9c59d2aa51330089e4956072489c1fe2ff429e49b0dde7a70006e5acc406719e",
}


# ---- reading OpenRLHF's source without importing it (no vLLM needed) ---------------------------------
def module_file(module: str) -> Path:
    """Path of an OpenRLHF module's source, found without importing its packages (which import vLLM)."""
    root, _, rest = module.partition(".")
    spec = importlib.util.find_spec(root)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{root} not found: install OpenRLHF (pip install -e .[openrlhf], or "
                          f"scripts/install_openrlhf.sh for the CPU test route)")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest.split(".")).with_suffix(".py")
    if not path.exists():
        raise ImportError(f"{module}: {path} not found")
    return path


def _find(tree: ast.Module, qualname: str) -> ast.AST:
    if qualname == "__main__":
        for node in tree.body:
            if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                    and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"):
                return node
        raise LookupError("no `if __name__ == '__main__':` block")
    body, node = tree.body, None
    for part in qualname.split("."):
        node = next((n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                     and n.name == part), None)
        if node is None:
            raise LookupError(f"{qualname}: {part} not found")
        body = node.body
    return node


def target_source(module: str, qualname: str) -> str:
    path = module_file(module)
    text = path.read_text()
    node = _find(ast.parse(text), qualname)
    return ast.get_source_segment(text, node)


def target_hash(module: str, qualname: str) -> str:
    return hashlib.sha256(target_source(module, qualname).encode()).hexdigest()


def installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openrlhf")
    except PackageNotFoundError:
        return None


def check_targets(targets: dict[tuple[str, str], str] | None = None,
                  owner: str = "trapo/engines/openrlhf/patches.py") -> list[str]:
    """Problems found: a different OpenRLHF version, or a changed source of a function `owner` hooks into
    (`targets`: (module, qualified name) -> sha256 of its source; default TARGETS, the RL engine's)."""
    problems = []
    ver = installed_version()
    if ver != OPENRLHF_VERSION:
        problems.append(f"OpenRLHF {ver} installed; {owner} targets {OPENRLHF_VERSION}")
    for (module, qual), want in (TARGETS if targets is None else targets).items():
        try:
            got = target_hash(module, qual)
        except (ImportError, LookupError, OSError) as e:
            problems.append(f"{module}:{qual}: {e}")
            continue
        if got != want:
            problems.append(f"{module}:{qual} changed (sha256 {got[:12]}, expected {want[:12]}): re-check "
                            f"{owner} against it")
    return problems


def require_targets() -> None:
    problems = check_targets()
    if problems and os.environ.get(ALLOW_DRIFT_ENV) != "1":
        raise RuntimeError("OpenRLHF does not match what TRAPO's integration was written for:\n  "
                           + "\n  ".join(problems) + f"\n(set {ALLOW_DRIFT_ENV}=1 to run anyway)")


# ---- 1. OpenRLHF's CLI block -------------------------------------------------------------------------
def run_cli_block(argv: list[str], train: Callable[[Any], Any], module: str = "openrlhf.cli.train_ppo_ray") -> None:
    """Run an OpenRLHF command's __main__ block (parser, defaults, checks; default `train_ppo_ray`, the SFT baseline
    uses `train_sft`) on argv with `train` in place of its `train`; the block ends in `train(args)`."""
    path = module_file(module)
    block = _find(ast.parse(path.read_text()), "__main__")
    code = compile(ast.Module(body=block.body, type_ignores=[]), str(path), "exec")
    namespace = {"__name__": "__main__", "argparse": argparse, "datetime": datetime.datetime, "os": os,
                 "train": train}
    old_argv = sys.argv
    sys.argv = [str(path), *argv]
    try:
        exec(code, namespace)  # noqa: S102 - OpenRLHF's own, installed source
    finally:
        sys.argv = old_argv


def parse_openrlhf_args(argv: list[str]) -> SimpleNamespace:
    """OpenRLHF's hierarchical args for argv, after its own validation (nothing is started)."""
    got: list[Any] = []
    run_cli_block(list(argv), got.append)
    return got[0]


# ---- 2. the classes train() uses -----------------------------------------------------------------------
def ppo_trainer_class(cfg_data: Mapping[str, Any]):
    """OpenRLHF's PPOTrainer (the controller) with `mlflow_logger.MlflowLogger` in the tensorboard slot."""
    import ray

    from openrlhf.trainer.ppo_trainer import PPOTrainer

    class TrapoPPOTrainer(PPOTrainer.__ray_actor_class__):
        trapo_config = dict(cfg_data)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            from trapo.engines.openrlhf.mlflow_logger import MlflowLogger
            from trapo.engines.openrlhf.settings import as_config

            self.tensorboard_logger = MlflowLogger.for_job(as_config(self.trapo_config), self.args)
            read_prompts_in_file_order(self)

    TrapoPPOTrainer.__name__ = TrapoPPOTrainer.__qualname__ = "TrapoPPOTrainer"
    return ray.remote(TrapoPPOTrainer)


def read_prompts_in_file_order(trainer) -> None:
    """The controller's prompt loader, rebuilt to read the prompt file in its own order.

    OpenRLHF's `prepare_datasets` asks `setup_dataloader` for shuffle=True; in the controller (no process group)
    that is a torchdata RandomSampler seeded from the unseeded global torch RNG: a new order every run, seeded
    neither by `--train.seed` nor in the local engine's order. The launcher writes the prompt file in the local
    trainer's step order (`launch.step_prompt_indices`), so the same `setup_dataloader` call with shuffle=False
    gives each step exactly the local engine's prompts. Resume is unchanged (the loader's state_dict)."""
    old = trainer.prompts_dataloader
    new = trainer.strategy.setup_dataloader(old.dataset, old.batch_size, old.pin_memory, False, old.collate_fn,
                                            num_workers=old.num_workers)
    trainer.prompts_dataloader = trainer.samples_generator.prompts_dataloader = new


def train_with_trapo(args, cfg_data: Mapping[str, Any], env: Mapping[str, str], actor_hooks=()) -> None:
    """OpenRLHF's `train(args)` with TRAPO's actor (and its step hooks, "module:Class") and logger (rebinding happens
    in this driver only)."""
    import ray

    if cpu_route(cfg_data):  # OpenRLHF's trainer modules import vLLM's names at module level
        from trapo.engines.openrlhf.cpu_rollout import install_flash_attn_kernels_name, install_vllm_names

        install_vllm_names()
        install_flash_attn_kernels_name()
    import openrlhf.cli.train_ppo_ray as cli
    import openrlhf.trainer.ppo_trainer as ppo_trainer
    from trapo.engines.openrlhf.actor import policy_actor_class

    if args.train.async_enable:
        raise ValueError("TRAPO's engine runs OpenRLHF synchronously (one on-policy update per batch)")
    cli.PolicyModelActor = policy_actor_class(cfg_data,
                                              before_init=cpu_route_actor_process if cpu_route(cfg_data) else None,
                                              hooks=actor_hooks)
    ppo_trainer.PPOTrainer = ppo_trainer_class(cfg_data)
    runtime_env = driver_runtime_env(env)
    if cpu_route(cfg_data):
        cpu_route_driver(cli, args, cfg_data)
        runtime_env = {**(runtime_env or {}), "worker_process_setup_hook": cpu_worker_setup_hook()}
    if not ray.is_initialized():
        ray.init(runtime_env=runtime_env)  # joins $RAY_ADDRESS or the cluster `ray start` left here, else starts one
    cli.train(args)


# the env vars OpenRLHF's own `train()` gives its ray.init (defaults there, overridable from the environment)
RAY_ENV_DEFAULTS = {"TOKENIZERS_PARALLELISM": "true", "NCCL_DEBUG": "WARN", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1"}
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # ray._private.runtime_env.constants: set by `ray job submit`


def job_runtime_env(environ: Mapping[str, str] | None = None) -> dict | None:
    """The runtime env of the Ray job this driver runs in (`ray job submit`), None outside a job."""
    import json

    environ = os.environ if environ is None else environ
    raw = environ.get(JOB_CONFIG_ENV)
    if not raw:
        return None
    return dict(json.loads(raw).get("runtime_env") or {})


def driver_runtime_env(env: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict | None:
    """The runtime env for the driver's `ray.init`: OpenRLHF's defaults and TRAPO's env (`env`), minus every
    env var the job's runtime env already sets. Ray refuses to merge a job's and a driver's runtime env that
    name the same env var, even with equal values (ray/_private/worker.py, `_merge_runtime_env`), so a name
    is never repeated; under `ray job submit` the launcher has already put TRAPO's env into the job's."""
    environ = os.environ if environ is None else environ
    want = {k: environ.get(k, v) for k, v in RAY_ENV_DEFAULTS.items()}
    want.update({k: v for k, v in env.items() if v is not None})
    job = job_runtime_env(environ)
    if job is not None:
        have = job.get("env_vars") or {}
        want = {k: v for k, v in want.items() if k not in have}
    return {"env_vars": want} if want else None


# ---- 4. engine.rollout=cpu: OpenRLHF's loop without a GPU (trapo/engines/openrlhf/cpu_rollout.py) -------------------
def cpu_route(cfg_data: Mapping[str, Any]) -> bool:
    return str((cfg_data.get("engine") or {}).get("rollout", "vllm")) == "cpu"


def cpu_worker_setup_hook() -> str:
    from trapo.engines.openrlhf.cpu_rollout import WORKER_SETUP_HOOK

    return WORKER_SETUP_HOOK


def cpu_route_driver(cli, args, cfg_data: Mapping[str, Any]) -> None:
    """In the driver, before OpenRLHF's `train(args)`: the CPU rollout engines in place of vLLM's, actor groups that
    ask Ray for no GPU, and a DeepSpeed strategy on gloo in fp32 (OpenRLHF's parser offers bf16/fp16 only; on a CPU
    bf16 is slow and the local engine trains in fp32)."""
    import functools

    from trapo.engines.openrlhf.cpu_rollout import create_cpu_rollout_engines

    threads = (cfg_data.get("engine") or {}).get("num_threads")
    args.ds.param_dtype = "fp32"
    cli.create_vllm_engines = functools.partial(create_cpu_rollout_engines, num_threads=threads)
    cli.RayActorGroup = cpu_actor_group_class()
    base_strategy = cli.get_strategy

    def get_strategy(a):
        strategy = base_strategy(a)
        strategy.__class__ = cpu_strategy_class()
        return strategy

    cli.get_strategy = get_strategy


def cpu_actor_group_class():
    """RayActorGroup whose actors ask for no GPU (and no CPU: they are scheduled like Ray's default actors). Its
    `_initiate_actors` asks for GPU bundles when a group has more than one rank, so the CPU route runs one rank."""
    from openrlhf.trainer.ray.launcher import RayActorGroup

    class CpuRayActorGroup(RayActorGroup):
        def __init__(self, num_nodes, num_gpus_per_node, ray_actor_type, pg=None, num_gpus_per_actor=1, **kwargs):
            if int(num_nodes) * int(num_gpus_per_node) != 1 or pg is not None:
                raise ValueError(f"engine.rollout=cpu runs one DeepSpeed rank per model (got {num_nodes} node(s) x "
                                 f"{num_gpus_per_node} for {getattr(ray_actor_type, '__name__', ray_actor_type)})")
            super().__init__(num_nodes, num_gpus_per_node, ray_actor_type, pg=None, num_gpus_per_actor=0, **kwargs)

    return CpuRayActorGroup


def cpu_strategy_class():
    """OpenRLHF's DeepspeedStrategy with `setup_distributed` on gloo and a CPU device mesh (its own calls
    torch.cuda.set_device and init_device_mesh("cuda")); the rest, ZeRO-2/3 included, is OpenRLHF's."""
    import datetime as dt

    from openrlhf.utils.deepspeed import DeepspeedStrategy

    class CpuDeepspeedStrategy(DeepspeedStrategy):
        def setup_distributed(self, timeout=dt.timedelta(minutes=60)) -> None:
            import deepspeed
            import torch.distributed as dist
            import transformers
            from torch.distributed.device_mesh import init_device_mesh

            if self.full_determinism:
                transformers.enable_full_determinism(self.seed)
            else:
                transformers.set_seed(self.seed)
            if not dist.is_initialized():  # MASTER_ADDR/PORT, RANK, WORLD_SIZE: set by OpenRLHF's actor
                dist.init_process_group("gloo", timeout=timeout)
            deepspeed.init_distributed(dist_backend="gloo", timeout=timeout)
            self.world_size = dist.get_world_size()
            dp_size = self.world_size // self.ring_attn_size // self.ds_tensor_parallel_size
            self.ds_device_mesh = init_device_mesh("cpu", (dp_size, self.ring_attn_size, self.ds_tensor_parallel_size),
                                                   mesh_dim_names=("dp", "sp", "tp"))
            self.setup_ring_attn(self.ds_device_mesh)
            self.accumulated_gradient = (self.train_batch_size * self.ring_attn_size * self.ds_tensor_parallel_size
                                         // self.micro_train_batch_size // self.world_size)

    CpuDeepspeedStrategy.__name__ = CpuDeepspeedStrategy.__qualname__ = "CpuDeepspeedStrategy"
    return CpuDeepspeedStrategy


def cpu_route_actor_process() -> None:
    """In the DeepSpeed actor's process, before OpenRLHF builds its model and trainer (module globals of
    `ppo_actor`, rebound in this process): fp32 weights, the replay buffer on the CPU, and the weight-sync group on
    gloo (`cpu_rollout.GlooWeightGroup`) instead of vLLM's NCCL group."""
    import socket

    import ray
    import torch

    import openrlhf.trainer.ray.ppo_actor as ppo_actor
    from trapo.engines.openrlhf.cpu_rollout import GlooWeightGroup

    if getattr(ppo_actor, "_trapo_cpu_route", False):
        return
    fp32_param_dtype()

    class CpuReplayBuffer(ppo_actor.NaiveReplayBuffer):
        def __init__(self, *args, **kwargs):
            current = torch.cuda.current_device
            torch.cuda.current_device = lambda: 0  # its __init__ formats f"cuda:{current_device()}"
            try:
                super().__init__(*args, **kwargs)
            finally:
                torch.cuda.current_device = current
            self.target_device = torch.device("cpu")

    def init_gloo_sync_group(self, backend: str):
        """DeepSpeed rank 0 and every engine in one gloo group (ranks as OpenRLHF lays them out)."""
        if backend != "gloo":
            raise ValueError(f"engine.rollout=cpu syncs weights over gloo (--vllm.sync_backend gloo), got {backend!r}")
        address = ray._private.services.get_node_ip_address().strip("[]")
        with socket.socket() as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        tp = int(self.strategy.args.vllm.tensor_parallel_size)
        world_size = len(self.vllm_engines) * tp + 1
        refs = [engine.init_process_group.remote(address, port, i * tp + 1, world_size, "openrlhf",
                                                 backend=backend, use_ray=False)
                for i, engine in enumerate(self.vllm_engines)]
        self._model_update_group = GlooWeightGroup(address, port, 0, world_size)
        ray.get(refs)

    # Ray ships PolicyModelActor's methods by value (their module globals copied), so rebinding
    # `ppo_actor.ActorPPOTrainer` would not reach them: the method is set on the class itself, in this process only.
    # ActorPPOTrainer.__init__ is shipped by reference and reads `NaiveReplayBuffer` from the module.
    ppo_actor.ActorPPOTrainer._init_vllm_sync_group = init_gloo_sync_group
    ppo_actor.NaiveReplayBuffer = CpuReplayBuffer
    ppo_actor._trapo_cpu_route = True


def fp32_param_dtype() -> None:
    """`--ds.param_dtype fp32` (set after OpenRLHF's parser, which offers bf16/fp16): models load in fp32, and the
    DeepSpeed config then enables neither bf16 nor fp16. `Actor.__init__` imports the map from its module when
    called, so replacing the module attribute reaches it."""
    import torch

    import openrlhf.utils.utils as oru

    base = oru.convert_to_torch_dtype
    if getattr(base, "_trapo_fp32", False):
        return

    def convert_to_torch_dtype(param_dtype: str):
        return torch.float32 if param_dtype == "fp32" else base(param_dtype)

    convert_to_torch_dtype._trapo_fp32 = True
    oru.convert_to_torch_dtype = convert_to_torch_dtype


def cpu_route_sft_process(args) -> None:
    """engine.rollout=cpu for OpenRLHF's SFT trainer (one process, no Ray): the names its imports need without
    CUDA, torch.cuda answered for the CPU, fp32 (its strategy: `cpu_strategy_class`, set by the SFT entry)."""
    from trapo.engines.openrlhf.cpu_rollout import cpu_cuda_calls, install_flash_attn_kernels_name, install_vllm_names

    install_vllm_names()
    install_flash_attn_kernels_name()
    cpu_cuda_calls()
    fp32_param_dtype()
    args.ds.param_dtype = "fp32"
