"""One-GPU check of the GPU paths (run by scripts/gpu_check.sh; docs/openrlhf.md). Writes one JSON of results.

0. the sampler on CUDA against the CPU with one seed (T = 1 and 0.6): the same tokens (every draw comes from the
   CPU generator);
1. the local engine on CUDA, fp32 and bf16 (fp32 master weights): a few TRAPO steps of the embedded default at
   preset=smoke size through the trainer itself, then its evaluation sampled at T = 0.6; finite losses, step
   time, peak memory;
2. one DeepSpeed actor step of OpenRLHF (ZeRO-2 and ZeRO-3, bf16, one NCCL rank) on the batch of
   tests/openrlhf_engine/test_openrlhf_parity.py, against the local engine on CUDA in bf16 on the same batch: loss within 1e-2
   relative, gradient cosine >= 0.99 (the CPU parity test checks the fp32 ZeRO-0 case to 1e-5);
3. the suite's `gpu` tests and ReLIFT's ZeRO-3 optimizer-state isolation (`pytest -m "gpu or zero3"`).
No vLLM, Ray or flash-attn is needed (the tests' stubs stand in for vLLM's imports, attention is sdpa).
Without CUDA it prints a SKIP line and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LOSS_RTOL, MIN_COSINE = 1e-2, 0.99


def skip_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda})"
    return None


def environment() -> dict:
    import torch

    p = torch.cuda.get_device_properties(0)
    return {"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1), "torch": torch.__version__,
            "cuda": torch.version.cuda, "nvcc": shutil.which("nvcc"), "python": sys.version.split()[0],
            "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def compose(*overrides: str):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return _compose(config_name="config", overrides=list(overrides))


# ---- 1. the local engine through the trainer -----------------------------------------------------------
def local_engine_check(dtype: str, steps: int, work: Path, device: str = "cuda") -> dict:
    """(tests/engine/test_gpu_path.py runs this on CPU with device="cpu": the same code but the memory counters)"""
    import torch

    from trapo.trainer import Trainer

    out = work / f"local-{dtype}"
    cfg = compose("preset=smoke", "method=trapo", f"engine.device={device}", f"++model.dtype={dtype}",
                  f"train.steps={steps}", "progress=false", "resume=never", "eval.temperature=0.6")  # sampled eval
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer = Trainer(cfg, out)
    trainer.run()
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows]
    param_dtypes = sorted({str(p.dtype) for p in trainer.engine.model.parameters()})
    res = {"dtype": dtype, "param_dtypes": param_dtypes, "master_weights": trainer.engine.master_weights,
           "steps": len(rows), "losses": losses, "step_s": [r.get("time/step_s") for r in rows],
           "wall_s": round(wall, 2),
           "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
           "device": str(next(trainer.engine.model.parameters()).device)}
    final = json.loads((out / "final_metrics.json").read_text())
    res["final_metrics"] = final  # the evaluation sampled at T=0.6 on the device (the CPU generator's stream)
    res["ok"] = (len(rows) == steps and all(math.isfinite(x) for x in losses) and res["device"].startswith(device)
                 and res["master_weights"] == (dtype != "float32") and bool(final))
    return res


def sampling_check(device: str = "cuda", temperature: float = 1.0) -> dict:
    """The sampler on `device` against the CPU with one seed: every draw comes from the CPU generator, so the
    tokens must be equal (up to a near-tie that the device's float rounding breaks the other way, reported)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trapo.engines.sampling import sample
    from trapo.models.tiny import build_tiny_model

    cfg = compose("preset=smoke")
    model_dir = build_tiny_model(dict(cfg.model.arch), dict(cfg.model.pretrain), progress=False)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = [tok(q, add_special_tokens=False).input_ids for q in ("Mia has 7 eggs. Gets 5 more.", "Tom has 3 pens.")]
    prompts = [p for p in prompts for _ in range(8)]
    outs = {}
    for dev in ("cpu", device):
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(dev).eval()
        outs[dev] = sample(model, prompts, max_new_tokens=48, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                           temperature=temperature, generator=torch.Generator().manual_seed(7))
    same = sum(a == b for a, b in zip(outs["cpu"], outs[device]))
    return {"device": device, "temperature": temperature, "samples": len(prompts), "equal_to_cpu": same,
            "ok": same == len(prompts)}


# ---- 2. one DeepSpeed actor step vs the local engine -----------------------------------------------------
def _flat(tensors):
    import torch

    return torch.cat([t.detach().float().reshape(-1).cpu() for t in tensors])


def deepspeed_check(zero_stage: int, work: Path, device: str = "cuda") -> dict:
    """device="cpu" (tests/engine/test_gpu_path.py) runs the same steps on the CPU parity test's strategy (gloo, fp32,
    bf16 off) and the local engine in fp32: everything but NCCL, bf16 and the CUDA memory counters."""
    import torch

    sys.path.insert(0, str(REPO / "tests" / "openrlhf_engine"))
    import test_openrlhf_parity as P  # the parity test's batch, stubs and imports (vLLM stubbed)
    from openrlhf.utils.deepspeed import DeepspeedStrategy
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trapo.data.synthetic import make_split
    from trapo.engines.local import LocalEngine
    from trapo.models.tiny import build_tiny_model
    from trapo.rl_step import update

    torch.manual_seed(0)
    lr = P.LR
    cfg = P.compose("engine=openrlhf", "preset=smoke", "method=trapo", f"rollout.max_new_tokens={P.MAX_NEW}",
                    "train.prompts_per_step=2", f"train.lr={lr}", f"engine.zero_stage={zero_stage}",
                    "engine.micro_train_batch_size=4", "engine.micro_rollout_batch_size=4",
                    "engine.num_nodes=1", "engine.actor_gpus_per_node=1", "engine.vllm_num_engines=1",
                    "engine.vllm_tensor_parallel_size=1", "engine.param_dtype=bf16", "engine.launcher=local",
                    "engine.attn_implementation=sdpa", "engine.packing_samples=false",  # no flash-attn here
                    "engine.gradient_checkpointing=false", "resume=never")
    model_dir = build_tiny_model(dict(cfg.model.arch), dict(cfg.model.pretrain), progress=False)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    responses = P._script_rollout(cfg, tok, make_split(2, 3, 4, seed=11))
    samples = [P._sample_from_response(r) for r in responses]

    # the local engine on CUDA in bf16 (fp32 masters): loss and the gradient before clipping
    cuda = device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    local_model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    engine = LocalEngine(local_model, tok, lr=lr, grad_clip=float(cfg.train.grad_clip), micro_batch_size=5,
                         device=device)
    with P.recorded_clip_grads() as seen:
        st = update(engine, samples, cfg.method, P.MAX_NEW)  # the trainer's update (Dr.GRPO normaliser)
    local_names = [n for n, _ in engine.model.named_parameters()]

    class OneGPUStrategy(DeepspeedStrategy if cuda else P.CPUStrategy):
        """OpenRLHF's own strategy (NCCL, CUDA mesh, bf16); records the full gradient at the boundary."""

        grads = None

        def get_ds_train_config(self, *a, **k):
            c = super().get_ds_train_config(*a, **k)
            if shutil.which("nvcc") is None and "optimizer" in c:  # FusedAdam would need nvcc to JIT-build
                c["optimizer"].setdefault("params", {})["torch_adam"] = True
            return c

        def optimizer_step(self, optimizer, model, scheduler, name="model", **kw):
            from deepspeed.utils import safe_get_full_grad

            ds = model.model
            if ds.is_gradient_accumulation_boundary():
                self.grads = {n: safe_get_full_grad(p).detach().float().clone()
                              for n, p in ds.module.named_parameters()}
            # OpenRLHF's own step (the CPU parity strategy's override reads p.grad, None under ZeRO-2/3)
            DeepspeedStrategy.optimizer_step(self, optimizer, model, scheduler, name=name, **kw)

    args = P.launch_args(cfg, work / f"ds-zero{zero_stage}", model_dir)
    P.dist_env(29600 + zero_stage, local_rank="0" if cuda else "-1")
    args.local_rank = 0 if cuda else -1
    strategy = OneGPUStrategy(seed=args.train.seed, max_norm=args.actor.max_norm,
                              micro_train_batch_size=args.train.micro_batch_size,
                              train_batch_size=args.train.batch_size, zero_stage=args.ds.zero_stage, args=args)
    strategy.setup_distributed()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, attn_implementation="sdpa")
    actor, trainer = P.actor_trainer(strategy, args, model, tok, cfg, shims=contextlib.nullcontext if cuda else None)
    if not cuda:
        trainer.dataloader_pin_memory = False
    P.fill_replay_buffer(trainer, actor, args, responses, tok,
                         device=torch.cuda.current_device() if cuda else torch.device("cpu"))
    t0 = time.perf_counter()
    with (contextlib.nullcontext() if cuda else P.cpu_cuda_shims("cpu")):
        status = trainer.ppo_train(0.0)
    if cuda:
        torch.cuda.synchronize()
    step_s = time.perf_counter() - t0
    orl = P.logger_mod.trapo_metrics(status, n_levels=4)

    ds_grads = strategy.grads or {}
    missing = [n for n in local_names if n not in ds_grads]
    g_local = _flat(seen["g"])
    g_ds = _flat(ds_grads[n] for n in local_names if n in ds_grads) if not missing else None
    cos = float(torch.nn.functional.cosine_similarity(g_local, g_ds, dim=0)) if g_ds is not None else None
    rel = abs(orl["train/loss"] - st["loss"]) / max(abs(st["loss"]), 1e-12)
    res = {"zero_stage": zero_stage, "device": device, "param_dtype": "bf16" if cuda else "fp32",
           "grad_accum_dtype": args.ds.grad_accum_dtype,
           "loss_local": st["loss"], "loss_deepspeed": orl["train/loss"], "loss_rel_diff": rel,
           "grad_cosine": cos, "grad_norm_local": float(g_local.norm()),
           "grad_norm_deepspeed": float(g_ds.norm()) if g_ds is not None else None,
           "missing_grads": missing[:5], "step_s": round(step_s, 3),
           "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None}
    res["ok"] = rel <= LOSS_RTOL and cos is not None and cos >= MIN_COSINE
    return res


def deepspeed_check_in_subprocess(zero_stage: int, work: Path, timeout_s: float) -> dict:
    """Each ZeRO stage in its own process: one NCCL process group and DeepSpeed's global state per stage."""
    import subprocess

    out = work / f"ds-zero{zero_stage}.json"
    proc = subprocess.run([sys.executable, __file__, "--deepspeed-stage", str(zero_stage), "--out", str(out)],
                          capture_output=True, text=True, timeout=timeout_s)
    if out.exists():
        return json.loads(out.read_text())
    return {"zero_stage": zero_stage, "ok": False, "error": f"exit {proc.returncode}: {proc.stderr[-1500:]}"}


def gpu_tests(timeout_s: float) -> dict:
    """The test suite's `gpu` tests and ReLIFT's ZeRO-3 optimizer-state isolation (`pytest -m "gpu or zero3"`)."""
    import subprocess

    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu or zero3", "tests"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(cmd[2:]), "ok": False, "error": f"timed out after {timeout_s} s"}
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return {"command": " ".join(cmd[2:]), "returncode": proc.returncode, "tail": tail, "ok": proc.returncode == 0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "results" / "gpu_check.json"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--zero-stages", default="2,3")
    ap.add_argument("--deepspeed-stage", type=int, default=None, help=argparse.SUPPRESS)  # one stage (internal)
    a = ap.parse_args(argv)
    reason = skip_reason()
    if reason:
        print(f"gpu_check: SKIP: {reason}; nothing was run and no results were written. Run it on a machine with "
              "a CUDA GPU (docs/openrlhf.md).")
        return 0
    if a.deepspeed_stage is not None:
        try:
            res = deepspeed_check(a.deepspeed_stage, Path(tempfile.mkdtemp(prefix="gpu_check_ds_")))
        except Exception as e:  # noqa: BLE001 - reported in the JSON
            import traceback

            res = {"zero_stage": a.deepspeed_stage, "ok": False, "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc()[-3000:]}
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
        return 0 if res["ok"] else 1
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='gpu_check_mlflow_')}/m.db")
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    results: dict = {"environment": environment(), "criteria": {"loss_rtol": LOSS_RTOL, "min_grad_cosine": MIN_COSINE},
                     "sampling": [], "local_engine": [], "deepspeed_actor_step": [], "gpu_tests": []}
    t0 = time.perf_counter()
    for temperature in (1.0, 0.6):
        try:
            results["sampling"].append(sampling_check("cuda", temperature))
        except Exception as e:  # noqa: BLE001 - recorded, the other checks still run
            results["sampling"].append({"temperature": temperature, "ok": False, "error": f"{type(e).__name__}: {e}"})
    for dtype in ("float32", "bfloat16"):
        try:
            results["local_engine"].append(local_engine_check(dtype, a.steps, work))
        except Exception as e:  # noqa: BLE001 - recorded, the other checks still run
            results["local_engine"].append({"dtype": dtype, "ok": False, "error": f"{type(e).__name__}: {e}"})
    import importlib.util

    absent = [m for m in ("deepspeed", "openrlhf") if importlib.util.find_spec(m) is None]
    for z in [int(x) for x in a.zero_stages.split(",") if x]:
        if absent:
            results["deepspeed_actor_step"].append({"zero_stage": z, "ok": False, "error": f"not installed: "
                                                    f"{', '.join(absent)} (GPU_CHECK_WHEELS, see gpu_check.sh)"})
            continue
        try:
            results["deepspeed_actor_step"].append(deepspeed_check_in_subprocess(z, work, timeout_s=150))
        except Exception as e:  # noqa: BLE001 - a timeout included
            results["deepspeed_actor_step"].append({"zero_stage": z, "ok": False,
                                                    "error": f"{type(e).__name__}: {e}"})
    results["gpu_tests"].append(gpu_tests(timeout_s=120))
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    results["ok"] = all(r["ok"] for part in ("sampling", "local_engine", "deepspeed_actor_step", "gpu_tests")
                        for r in results[part])
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"gpu_check: {'PASS' if results['ok'] else 'FAIL'}; results in {out}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
