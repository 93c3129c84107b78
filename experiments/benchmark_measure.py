"""What experiments/benchmark.py measures besides step times: FLOPs of the work, the machine's fp32 matmul peak,
grading throughput and memory."""

from __future__ import annotations

import random
import resource
import time
from dataclasses import dataclass

import torch


# ---------------------------------------------------------------------------------------------- FLOPs
@dataclass(frozen=True)
class ModelShape:
    """What a forward pass costs per token, from the model itself."""

    body_params: int  # weights of the linear layers of the transformer blocks (2 FLOPs per weight per token)
    head_params: int  # the LM head (only where logits are needed)
    attn_width: int  # heads x head_dim, per layer
    n_layers: int

    @classmethod
    def of(cls, model) -> "ModelShape":
        head = model.get_output_embeddings()
        body = sum(m.weight.numel() for m in model.modules()
                   if isinstance(m, torch.nn.Linear) and m is not head)
        cfg = model.config.get_text_config(decoder=True)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cls(body, head.weight.numel(), cfg.num_attention_heads * head_dim, cfg.num_hidden_layers)

    def forward(self, n_tokens: int, first_pos: int = 0, n_logits: int = 0) -> float:
        """FLOPs of `n_tokens` consecutive tokens starting at position `first_pos` (each attends to all before it:
        QK^T and AV are 2 x 2 x width FLOPs per key), with logits for `n_logits` of them."""
        keys = n_tokens * first_pos + n_tokens * (n_tokens + 1) // 2
        return 2.0 * self.body_params * n_tokens + 4.0 * self.n_layers * self.attn_width * keys \
            + 2.0 * self.head_params * n_logits


def task_flops(shape: ModelShape, lengths: list[tuple[int, int, int]]) -> tuple[float, float]:
    """(generation, update) FLOPs of a step's work, counted per sample as if each ran alone.

    `lengths`: (prompt, prefix, completion) tokens of each sample. Generation feeds prompt + prefix and then
    each generated token but the last; the update runs forward + backward (2x forward) over each sequence.
    Work shared between samples (one prompt's prefill) is counted once per sample, for every system alike,
    so a system that shares it shows a higher rate, not less work.
    """
    gen = upd = 0.0
    for p, k, c in lengths:
        if c:
            gen += shape.forward(p + k + c - 1, 0, c)
        upd += 3 * shape.forward(p + k + c, 0, k + c)
    return gen, upd


def shared_flops(shape: ModelShape, samples) -> tuple[float, float]:
    """(generation, update) FLOPs our local engine needs for `samples` (trapo.rollout.Sample), where every
    distinct input is prefilled once and every distinct prompt runs once in the update (padding not counted)."""
    inputs = {tuple(s.prompt_ids + s.expert_ids) for s in samples if s.completion_ids}
    prompts = {tuple(s.prompt_ids) for s in samples}
    gen = sum(shape.forward(len(x), 0, 1) for x in inputs)
    upd = sum(shape.forward(len(p), 0, 0) for p in prompts)
    for s in samples:
        p, k, c = len(s.prompt_ids), len(s.expert_ids), len(s.completion_ids)
        if c > 1:
            gen += shape.forward(c - 1, p + k, c - 1)
        upd += shape.forward(k + c - 1, p, k + c) if k + c > 1 else 2.0 * shape.head_params
    return gen, 3 * upd


# ---------------------------------------------------------------------------------------------- peak
def matmul_peak_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an n x n matmul with the current torch thread setting (the machine's practical limit)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    inner = max(1, int(4e9 / (2 * n**3)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * n**3 / best / 1e9


# ---------------------------------------------------------------------------------------------- grading
def grading_items(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`n` distinct (response, gold) pairs, half right: boxed answers in the forms models write (integers,
    fractions, decimals, LaTeX), so the grader's cache cannot answer any of them."""
    rng = random.Random(seed)
    forms = [
        lambda v: f"{v}",
        lambda v: f"\\frac{{{2 * v}}}{{2}}",
        lambda v: f"{v}.0",
        lambda v: f"\\dfrac{{{3 * v}}}{{3}}",
        lambda v: f"{v} + 0",
    ]
    responses, golds = [], []
    for i in range(n):
        gold = 1000 + i  # distinct golds: distinct pairs
        value = gold if i % 2 == 0 else gold + rng.randint(1, 9)
        form = forms[i % len(forms)]
        responses.append(f"Step one: {gold - 1} + 1 = {gold}.\n\nSo the answer is $\\boxed{{{form(value)}}}$.")
        golds.append(str(gold))
    return responses, golds


def grading_throughput(n_items: int, workers: int) -> dict[str, float]:
    """Items per second of the project's grader (evaluation/grader.py, worker pool with time limits, pool
    already started) and of math-verify alone (parse + verify in this process, no time limit)."""
    from math_verify import parse, verify

    from evaluation.grader import Grader

    responses, golds = grading_items(n_items)
    warm_r, warm_g = grading_items(8, seed=1)
    warm_g = [g + "1" for g in warm_g]  # different pairs than the measured ones
    out: dict[str, float] = {}
    with Grader(workers=workers) as grader:
        t0 = time.perf_counter()
        grader.grade_responses(warm_r, warm_g)  # starts the pool
        out["grader_pool_start_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, ours = grader.grade_responses(responses, golds)
        out["grader"] = n_items / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    mv = [bool(verify(parse(f"${g}$"), parse(r))) for r, g in zip(responses, golds)]
    out["math_verify"] = n_items / (time.perf_counter() - t0)
    expected = [i % 2 == 0 for i in range(n_items)]
    out["grader_accuracy"] = sum(a == b for a, b in zip(ours, expected)) / n_items
    out["math_verify_accuracy"] = sum(a == b for a, b in zip(mv, expected)) / n_items
    return out


# ---------------------------------------------------------------------------------------------- memory
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    VmHWM of /proc/self/status where there is one: getrusage's ru_maxrss survives exec, so a child started
    by a large parent would report the parent's size."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
