"""The CPU rollout engine (`engine.rollout=cpu`): OpenRLHF's own loop, with trapo's sampler where vLLM would generate.

OpenRLHF 0.11.2 generates with vLLM, which needs a GPU. This engine takes vLLM's place in the same calls: OpenRLHF's
`RolloutRayActor` (its generate_responses, our `AgentExecutor` through it, weight sync, sleep and wake) runs
unchanged around `CpuLLM`, which offers the part of vLLM's engine interface that `RolloutRayActor` calls:

    generate(prompt, sampling_params, request_id)   batched sampling with `trapo.engines.sampling` (the local
                                                    engine's sampler), one torch.Generator seeded with vLLM's seed
    collective_rpc("init_process_group" | "update_weight", ...)   the actor's weights over a gloo group
    sleep / wake_up / is_sleeping / reset_prefix_cache / output_processor.get_num_unfinished_requests

What it changes around OpenRLHF (Ray asks for no GPU; DeepSpeed on gloo, in fp32 as the local engine on CPU) is in
`patches.py` (`cpu_route_driver`, `cpu_route_actor_process`), pinned to the OpenRLHF functions it replaces. It is a
real engine for laptops and CI, not a test double: every sample OpenRLHF trains on comes from it.

Without vLLM installed, OpenRLHF's trainer modules still import a few vLLM names at module level
(`SamplingParams`, `vllm.inputs.TokensPrompt`, `vllm.utils.random_uuid`); `install_vllm_names` provides them, in
the driver and in every Ray worker (`setup_worker`, Ray's worker_process_setup_hook), and nothing else of vLLM
(likewise the name of flash-attention's CUDA kernels module, `install_flash_attn_kernels_name`).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import sys
import types
import uuid
from dataclasses import dataclass, field
from typing import Any

WORKER_SETUP_HOOK = "trapo.engines.openrlhf.cpu_rollout.setup_worker"
# requests that arrive within this window are sampled as one batch (the agent sends a round's inputs together,
# and prompts' groups run concurrently in its threads)
BATCH_WINDOW_S = 0.005


# ---- the vLLM names OpenRLHF imports ---------------------------------------------------------------------
class SamplingParams:
    """The sampling settings OpenRLHF builds (`SamplesGenerator._dispatch_prompts_to_vllm`) and the agent copies."""

    def __init__(self, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=None, min_tokens=0,
                 skip_special_tokens=True, logprobs=None, **kwargs):
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self.skip_special_tokens = skip_special_tokens
        self.logprobs = logprobs
        for k, v in kwargs.items():
            setattr(self, k, v)

    def __repr__(self):
        return f"SamplingParams({vars(self)})"


class TokensPrompt(dict):
    """vllm.inputs.TokensPrompt: {"prompt_token_ids": [...]} (a TypedDict in vLLM)."""


def random_uuid() -> str:
    return uuid.uuid4().hex


def vllm_installed() -> bool:
    return "vllm" in sys.modules or importlib.util.find_spec("vllm") is not None


def install_vllm_names() -> bool:
    """Put a `vllm` module holding the names above into sys.modules when vLLM is not installed (True if done)."""
    if vllm_installed():
        return False
    root = types.ModuleType("vllm")
    root.__doc__ = "not vLLM: the names OpenRLHF imports, for trapo's CPU rollout engine (cpu_rollout.py)"
    root.__version__ = "0+trapo.cpu"
    root.SamplingParams = SamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = TokensPrompt
    utils = types.ModuleType("vllm.utils")
    utils.random_uuid = random_uuid
    root.inputs, root.utils = inputs, utils
    sys.modules.update({"vllm": root, "vllm.inputs": inputs, "vllm.utils": utils})
    return True


def install_flash_attn_kernels_name() -> bool:
    """OpenRLHF imports flash_attn's pure-Python padding helpers, whose package imports its CUDA kernels module
    (`flash_attn_2_cuda`, absent from a CPU install). A module of that name whose every attribute fails lets the
    helpers import; the CPU route runs attention with `eager` (flags.CPU_ROUTE), so no kernel is ever called."""
    if "flash_attn_2_cuda" in sys.modules or importlib.util.find_spec("flash_attn_2_cuda") is not None:
        return False
    mod = types.ModuleType("flash_attn_2_cuda")

    def __getattr__(name):
        raise AttributeError(f"flash_attn_2_cuda.{name}: flash-attention kernels need CUDA (engine.rollout=cpu runs "
                           f"attention with engine.attn_implementation=eager)")

    mod.__getattr__ = __getattr__
    sys.modules["flash_attn_2_cuda"] = mod
    return True


def cpu_cuda_calls() -> None:
    """OpenRLHF's actor, replay buffer and strategy call torch.cuda unconditionally (current_device for the device of
    every tensor, empty_cache, synchronize, current_stream); without CUDA these answer for the CPU."""
    import torch

    if torch.cuda.is_available():
        return
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.empty_cache = lambda *a, **k: None
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.current_stream = lambda *a, **k: None


def setup_worker() -> None:
    """Ray's worker_process_setup_hook on the CPU route: vLLM's names before any OpenRLHF class is unpickled, and
    OpenRLHF's unconditional torch.cuda calls answered for the CPU."""
    install_vllm_names()
    install_flash_attn_kernels_name()
    cpu_cuda_calls()


# ---- weight sync over gloo -----------------------------------------------------------------------------
class GlooWeightGroup:
    """A process group of DeepSpeed rank 0 and the rollout engines, outside torch.distributed's default group (which
    DeepSpeed owns): what vLLM's StatelessProcessGroup + PyNccl are on GPUs. `broadcast` has PyNccl's signature, the
    one `ActorPPOTrainer.broadcast_to_vllm` calls."""

    def __init__(self, master_address: str, master_port: int, rank: int, world_size: int,
                 timeout: datetime.timedelta = datetime.timedelta(minutes=10)):
        import torch.distributed as dist

        self.store = dist.TCPStore(master_address, int(master_port), world_size, is_master=rank == 0,
                                   timeout=timeout)
        self.group = dist.ProcessGroupGloo(self.store, rank, world_size, timeout)
        self.rank, self.world_size = rank, world_size

    def broadcast(self, tensor, src: int = 0, stream=None) -> None:
        from torch.distributed import BroadcastOptions

        opts = BroadcastOptions()
        opts.rootRank = int(src)
        opts.rootTensor = 0
        self.group.broadcast([tensor], opts).wait()


# ---- the engine -------------------------------------------------------------------------------------------
@dataclass
class CompletionOutput:
    token_ids: list[int]
    text: str = ""
    logprobs: Any = None
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = True


@dataclass
class _Request:
    ids: list[int]
    max_tokens: int
    temperature: float
    seed: int | None
    future: asyncio.Future


class CpuLLM:
    """The engine `RolloutRayActor.llm` holds on the CPU route (vLLM's AsyncLLMEngine on GPUs)."""

    def __init__(self, model: str, *, seed: int, max_model_len: int, num_threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        # fp32, as the DeepSpeed actor on this route and the local engine on CPU: the weights it receives fit exactly
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        self.max_model_len = int(max_model_len)
        self.generator = torch.Generator().manual_seed(int(seed))
        self._seeded: dict[int, torch.Generator] = {}
        self.params = dict(self.model.named_parameters())
        self.sync_group: GlooWeightGroup | None = None
        self.sleeping = False
        self.samples = 0  # sequences generated (the speed printout divides by it)
        self.generate_s = 0.0
        self._pending: list[_Request] = []
        self._batcher: asyncio.Task | None = None
        self._unfinished = 0
        self.output_processor = self  # vLLM's engine.output_processor.get_num_unfinished_requests()

    # -- generation
    def get_num_unfinished_requests(self) -> int:
        return self._unfinished

    async def generate(self, prompt, sampling_params, request_id: str | None = None):
        """vLLM's `AsyncLLMEngine.generate`: an async generator whose last item is the finished request."""
        if self.sleeping:
            raise RuntimeError("CPU rollout engine: generate() while asleep (OpenRLHF wakes engines before rollouts)")
        if prompt.get("multi_modal_data"):
            raise ValueError("the CPU rollout engine is text-only")
        sp = sampling_params
        if float(getattr(sp, "top_p", 1.0)) != 1.0 or int(getattr(sp, "top_k", -1) or -1) not in (-1, 0):
            raise ValueError(f"the CPU rollout engine samples the full distribution (trapo.engines.sampling): "
                             f"top_p=1 and top_k=-1 only, got top_p={sp.top_p}, top_k={sp.top_k}")
        ids = list(prompt["prompt_token_ids"])
        cap = self.max_model_len - len(ids) if sp.max_tokens is None else min(int(sp.max_tokens),
                                                                               self.max_model_len - len(ids))
        loop = asyncio.get_running_loop()
        seed = getattr(sp, "seed", None)
        req = _Request(ids, max(0, cap), float(sp.temperature), None if seed is None else int(seed),
                       loop.create_future())
        self._unfinished += 1
        self._pending.append(req)
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.ensure_future(self._run_batches())
        try:
            tokens = await req.future
        finally:
            self._unfinished -= 1
        yield RequestOutput(request_id or random_uuid(), ids,
                            [CompletionOutput(tokens, finish_reason="stop" if tokens and tokens[-1] == self.eos_id
                                              else "length")])

    async def _run_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            await asyncio.sleep(BATCH_WINDOW_S)
            batch, self._pending = self._pending, []
            groups: dict[tuple[float, int | None], list[_Request]] = {}
            for r in batch:  # in arrival order: a round's inputs arrive in the agent's order
                groups.setdefault((r.temperature, r.seed), []).append(r)
            for (temperature, seed), reqs in groups.items():
                try:
                    outs = await loop.run_in_executor(None, self._sample, reqs, temperature, seed)
                except Exception as e:  # every waiting request sees the failure
                    for r in reqs:
                        if not r.future.done():
                            r.future.set_exception(e)
                    continue
                for r, out in zip(reqs, outs, strict=True):
                    if not r.future.done():
                        r.future.set_result(out)

    def generator_for(self, seed: int | None):
        """The engine's generator, or one per request seed (vLLM's SamplingParams.seed): each seed's requests draw
        from one stream in arrival order, as the local trainer's step generator serves a step's rounds."""
        import torch

        if seed is None:
            return self.generator
        if seed not in self._seeded:
            if len(self._seeded) >= 64:  # a seed per step: the oldest steps are done
                self._seeded.pop(next(iter(self._seeded)))
            self._seeded[seed] = torch.Generator().manual_seed(seed)
        return self._seeded[seed]

    def _sample(self, reqs: list[_Request], temperature: float, seed: int | None = None) -> list[list[int]]:
        import time

        import torch

        from trapo.engines.sampling import sample

        t0 = time.perf_counter()
        with torch.no_grad():
            outs = sample(self.model, [r.ids for r in reqs], max_new_tokens=[r.max_tokens for r in reqs],
                          eos_id=self.eos_id, pad_id=self.pad_id, temperature=temperature,
                          generator=self.generator_for(seed))
        self.generate_s += time.perf_counter() - t0
        self.samples += len(reqs)
        return outs

    # -- weight sync (OpenRLHF's WorkerWrap methods, reached through collective_rpc)
    async def collective_rpc(self, method: str, args: tuple = (), kwargs: dict | None = None):
        fn = getattr(self, f"rpc_{method}", None)
        if fn is None:
            raise NotImplementedError(f"CPU rollout engine: collective_rpc({method!r}) is a GPU-only call")
        return [fn(*args, **(kwargs or {}))]  # one worker: vLLM returns one result per worker

    def rpc_init_process_group(self, master_address, master_port, rank_offset, world_size, group_name, backend,
                               use_ray):
        if backend != "gloo" or use_ray:
            raise ValueError(f"the CPU rollout engine syncs weights over gloo (--vllm.sync_backend gloo, without "
                             f"--vllm.sync_with_ray); got backend {backend!r}, sync_with_ray={use_ray}")
        self.sync_group = GlooWeightGroup(master_address, master_port, int(rank_offset), int(world_size))

    def rpc_update_weight(self, name, dtype, shape, empty_cache=False):
        import torch

        if self.sync_group is None:
            raise RuntimeError("update_weight before init_process_group")
        if name not in self.params:
            raise KeyError(f"CPU rollout engine: the actor sent {name!r}, which the model at its path does not have")
        weight = torch.empty(tuple(shape), dtype=dtype)
        self.sync_group.broadcast(weight, src=0)
        with torch.no_grad():
            self.params[name].copy_(weight)

    # -- sleep and wake: nothing to free on a CPU; the state is kept so that a generate() while asleep fails
    async def sleep(self, level: int = 1) -> None:
        self.sleeping = True

    async def wake_up(self, tags=None) -> None:
        self.sleeping = False

    async def is_sleeping(self) -> bool:
        return self.sleeping

    async def reset_prefix_cache(self) -> None:  # trapo's sampler keeps no cache between calls
        return None

    async def pause_generation(self, mode: str = "keep") -> None:
        return None

    async def resume_generation(self) -> None:
        return None


# ---- the Ray actor and its creation (OpenRLHF's `create_vllm_engines` signature) ------------------------------
def rollout_actor_class():
    """OpenRLHF's RolloutRayActor with `CpuLLM` as its engine (its GPU and vLLM environment set-up left out); every
    other method is OpenRLHF's."""
    import ray

    from openrlhf.trainer.ray.vllm_engine import RolloutRayActor, _load_agent_executor
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    class CpuRolloutRayActor(RolloutRayActor.__ray_actor_class__):
        async def __init__(self, *args, bundle_indices=None, agent_func_path=None, remote_rm_url=None,
                           mm_pad_token_ids=None, **kwargs):
            # as RolloutRayActor.__init__: the agent executor, then the engine from vLLM's engine arguments
            self.executor = (_load_agent_executor(agent_func_path) if agent_func_path
                             else SingleTurnAgentExecutor(remote_rm_url))
            self.kwargs = kwargs
            self.llm = CpuLLM(kwargs["model"], seed=int(kwargs["seed"]), max_model_len=int(kwargs["max_model_len"]),
                              num_threads=kwargs.get("num_threads"))
            self._mm_pad_token_ids = mm_pad_token_ids

        def speed(self) -> dict:
            return {"samples": self.llm.samples, "generate_s": self.llm.generate_s}

    CpuRolloutRayActor.__name__ = CpuRolloutRayActor.__qualname__ = "CpuRolloutRayActor"
    return ray.remote(CpuRolloutRayActor)


def create_cpu_rollout_engines(num_engines, tensor_parallel_size, pretrain, seed, full_determinism,
                               enable_prefix_caching, enforce_eager, max_model_len, shared_pg=None,
                               gpu_memory_utilization=None, vllm_enable_sleep=False, logprobs_mode=None,
                               agent_func_path=None, remote_rm_url=None, max_images_per_prompt=0, num_threads=None):
    """`openrlhf.trainer.ray.vllm_engine.create_vllm_engines` for the CPU route: the same engines, asking Ray for
    no GPU and no placement group."""
    from openrlhf.trainer.ray.vllm_engine import batch_vllm_engine_call

    if int(tensor_parallel_size) != 1:
        raise ValueError(f"--vllm.tensor_parallel_size {tensor_parallel_size}: the CPU rollout engine is one process")
    if logprobs_mode:
        raise ValueError("the CPU rollout engine returns no rollout log-probs: leave "
                         "--algo.advantage.is_correction_level off")
    if max_images_per_prompt:
        raise ValueError("the CPU rollout engine is text-only")
    actor = rollout_actor_class()
    engines = [actor.options(num_cpus=0, num_gpus=0).remote(
        model=pretrain, seed=int(seed) + i, max_model_len=int(max_model_len), agent_func_path=agent_func_path,
        remote_rm_url=remote_rm_url, num_threads=num_threads) for i in range(int(num_engines))]
    if vllm_enable_sleep:
        batch_vllm_engine_call(engines, "sleep")
    return engines
