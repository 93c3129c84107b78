"""The embedded base model: a small Llama-architecture transformer with a character tokenizer.

Llama, not Qwen2: transformers forces `model_type: qwen2` directories onto Qwen2Tokenizer, which rebuilds
the pre-tokenizer and silently drops whitespace from a character tokenizer.

It is built on first use and cached under ``$TRAPO_CACHE`` (default ``~/.cache/trapo``), keyed by a
hash of everything that determines it, so later runs load it at once. "Pretraining" is a short SFT on
easy problems (few steps): the model then solves those, and rarely the longer ones post-training uses.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from trapo.data import synthetic

CHARS = "\n !\"$'()*+,-./0123456789:;=?ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_abcdefghijklmnopqrstuvwxyz{}"
SPECIALS = ["<pad>", "<eos>", "<unk>"]
PROMPT_TEMPLATE = "{question}\n"


def cache_root() -> Path:
    return Path(os.environ.get("TRAPO_CACHE", Path.home() / ".cache" / "trapo"))


def build_char_tokenizer():
    """A character-level fast tokenizer, saved and loaded like any HF tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + list(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", padding_side="left"
    )


def _model_config(arch: dict, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"],
        num_key_value_heads=arch.get("num_kv_heads", arch["num_heads"]),
        max_position_embeddings=arch.get("max_positions", 512),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_theta=10000.0,
        attention_bias=False,
        mlp_bias=False,
    )


def plain(cfg) -> dict:
    """A recipe section as plain JSON values (configs may arrive as OmegaConf nodes, lists as ListConfig)."""
    return json.loads(json.dumps(dict(cfg), default=list))


def cache_key(arch: dict, pretrain: dict) -> str:
    arch, pretrain = plain(arch), plain(pretrain)
    blob = json.dumps({"family": "llama", "arch": arch, "pretrain": pretrain, "gen": synthetic.GENERATOR_VERSION, "chars": CHARS},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def encode_example(tokenizer, question: str, solution: str) -> tuple[list[int], int]:
    """Token ids of prompt + solution + EOS, and the prompt length (loss starts after it)."""
    prompt = tokenizer(PROMPT_TEMPLATE.format(question=question), add_special_tokens=False).input_ids
    answer = tokenizer(solution, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return prompt + answer, len(prompt)


def pretrain(model, tokenizer, pretrain_cfg: dict, progress: bool = True) -> list[float]:
    """Short SFT on the pretraining corpus (base-style working or direct answers); returns the loss curve."""
    rng_seed = int(pretrain_cfg["seed"])
    torch.manual_seed(rng_seed)
    corpus = synthetic.pretraining_corpus(
        int(pretrain_cfg["n_problems"]), int(pretrain_cfg["min_steps"]), int(pretrain_cfg["max_steps"]),
        seed=rng_seed, weights=list(pretrain_cfg["step_weights"]) if pretrain_cfg.get("step_weights") else None,
        direct_frac=float(pretrain_cfg.get("direct_frac", 0.0)),
        reference_frac=float(pretrain_cfg.get("reference_frac", 0.0)),
        max_value=int(pretrain_cfg.get("max_value") or synthetic.MAX_VALUE),
        direct_error_frac=float(pretrain_cfg.get("direct_error_frac", 0.0)),
    )
    examples = [encode_example(tokenizer, q, response) for q, response in corpus]
    return sft_fit(model, examples, tokenizer.pad_token_id, steps=int(pretrain_cfg["steps"]),
                   batch_size=int(pretrain_cfg["batch_size"]), lr=float(pretrain_cfg["lr"]), seed=rng_seed,
                   warmup_steps=50, desc="pretraining tiny base model", progress=progress)


def sft_fit(model, examples: list[tuple[list[int], int]], pad_id: int, *, steps: int, batch_size: int, lr: float,
            seed: int, warmup_steps: int, desc: str, progress: bool = True) -> list[float]:
    """Plain SFT: AdamW, linear warm-up then linear decay (floor 5%), clip 1.0, loss on the tokens after each
    example's prompt. `examples` are (prompt + answer ids, prompt length). Returns the loss per step."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup_steps) * max(0.05, 1 - s / steps))
    rng = random.Random(seed)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        batch = rng.sample(examples, batch_size)
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((batch_size, width), pad_id)
        labels = torch.full((batch_size, width), -100)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, (seq, plen) in enumerate(batch):
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, plen : len(seq)] = torch.tensor(seq[plen:])
            mask[i, : len(seq)] = 1
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(out.loss.item())
    model.eval()
    return losses


def build_cached(path: Path, build) -> Path:
    """`path`, a model directory in the cache: if it is not there, `build(tmp)` writes the model into a temporary
    folder, which then becomes `path` at once (a half-built model is never seen as cached). A lock keeps two
    processes from building the same model."""
    if (path / "model.safetensors").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same model
        if (path / "model.safetensors").exists():
            return path
        tmp = path.parent / f".tmp-{path.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        os.replace(tmp, path)
    return path


def build_tiny_model(arch: dict, pretrain_cfg: dict, root: Path | None = None, progress: bool = True) -> Path:
    """Path of the cached tiny base model, building (and pretraining) it first if needed."""
    from transformers import LlamaForCausalLM

    arch, pretrain_cfg = plain(arch), plain(pretrain_cfg)
    root = Path(root) if root is not None else cache_root() / "models"

    def build(tmp: Path) -> None:
        t0 = time.time()
        torch.manual_seed(int(pretrain_cfg["seed"]))
        tokenizer = build_char_tokenizer()
        model = LlamaForCausalLM(_model_config(dict(arch), tokenizer)).float()
        losses = pretrain(model, tokenizer, dict(pretrain_cfg), progress=progress)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = {"arch": dict(arch), "pretrain": dict(pretrain_cfg), "final_loss": losses[-1],
                "build_seconds": round(time.time() - t0, 1), "prompt_template": PROMPT_TEMPLATE}
        (tmp / "trapo_tiny.json").write_text(json.dumps(meta, indent=2))

    return build_cached(root / f"tiny-{cache_key(arch, pretrain_cfg)}", build)
