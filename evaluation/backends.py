r"""Generation back ends behind one interface.

    class Backend(Protocol):
        def generate(self, prompts, n, *, temperature, max_new_tokens, seed) -> list[list[str]]

`generate` returns, for each prompt, `n` completions (the model's text after the prompt). A back end may
carry a `tokenizer` and a `prompt_template`, which the runner uses to format prompts with
`evaluation.prompts.build_prompt`; one that needs the items themselves (the reference back end) has
`prepare(items, prompts)`. The training engine can pass its own object with the same `generate`.

  hf         transformers, batched, CPU or GPU (`HFBackend`)
  vllm       vLLM, GPU only, imported on first use (`VLLMBackend`)
  reference  answers with the benchmark's reference solution (or \boxed{gold}) to test the pipeline
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from evaluation.benchmarks import Item, reference_response


@runtime_checkable
class Backend(Protocol):
    def generate(self, prompts: list[str], n: int, *, temperature: float, max_new_tokens: int, seed: int) -> list[list[str]]: ...


class ReferenceBackend:
    """Answers each prompt with its item's reference solution: 100% accuracy tests loaders and grader."""

    tokenizer = None
    prompt_template = None
    name = "reference"

    def __init__(self):
        self._answers: dict[str, str] = {}

    def prepare(self, items: Sequence[Item], prompts: Sequence[str]) -> None:
        for item, prompt in zip(items, prompts, strict=True):
            self._answers[prompt] = reference_response(item)

    def generate(self, prompts, n, *, temperature=0.0, max_new_tokens=0, seed=0):
        missing = [p for p in prompts if p not in self._answers]
        if missing:
            raise KeyError(f"reference back end: {len(missing)} prompts without an item (call prepare first)")
        return [[self._answers[p]] * n for p in prompts]


class HFBackend:
    """transformers generation: left-padded batches, sampling when temperature > 0, greedy at 0."""

    def __init__(self, model, tokenizer, prompt_template: str | None = None, batch_size: int = 8, top_p: float = 1.0, progress: bool = True, name: str = "hf"):
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_template = prompt_template
        self.batch_size = max(1, int(batch_size))
        self.top_p = float(top_p)
        self.progress = progress
        self.name = name
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def generate(self, prompts, n, *, temperature=0.6, max_new_tokens=1024, seed=0):
        import torch
        from tqdm.auto import tqdm

        tok, model = self.tokenizer, self.model
        device = next(model.parameters()).device
        # The chat template already wrote the special tokens; plain prompts get the usual BOS.
        add_special = not bool(getattr(tok, "chat_template", None)) or self.prompt_template is not None
        jobs = [(i, j) for i, _ in enumerate(prompts) for j in range(n)]
        jobs.sort(key=lambda ij: -len(prompts[ij[0]]))  # similar lengths share a batch
        out: list[list[str]] = [[""] * n for _ in prompts]
        old_side = tok.padding_side
        tok.padding_side = "left"
        batches = [jobs[s : s + self.batch_size] for s in range(0, len(jobs), self.batch_size)]
        try:
            for b, batch in enumerate(tqdm(batches, desc=f"generate ({self.name})", disable=not self.progress)):
                enc = tok([prompts[i] for i, _ in batch], return_tensors="pt", padding=True, add_special_tokens=add_special).to(device)
                torch.manual_seed(seed * 1_000_003 + b)
                kwargs = dict(max_new_tokens=int(max_new_tokens), pad_token_id=tok.pad_token_id)
                if temperature and temperature > 0:
                    kwargs.update(do_sample=True, temperature=float(temperature), top_p=self.top_p)
                else:
                    kwargs.update(do_sample=False)
                with torch.no_grad():
                    seqs = model.generate(**enc, **kwargs)
                texts = tok.batch_decode(seqs[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                for (i, j), text in zip(batch, texts):
                    out[i][j] = text
        finally:
            tok.padding_side = old_side
        return out


class VLLMBackend:
    """vLLM generation (GPU only). vllm is imported here, never at module import."""

    prompt_template = None

    def __init__(self, model_path: str, dtype: str = "auto", seed: int = 0, top_p: float = 1.0, gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1, trust_remote_code: bool = False, name: str = "vllm", **llm_kwargs):
        try:
            import torch

            has_gpu = torch.cuda.is_available()
        except ImportError:
            has_gpu = False
        if not has_gpu and not llm_kwargs.pop("allow_cpu", False):
            raise RuntimeError("backend=vllm needs a CUDA GPU; use backend=hf on this machine")
        try:
            import vllm
        except ImportError as exc:
            raise ImportError("backend=vllm needs the `vllm` package (pip install 'trapo[vllm]') on a GPU machine") from exc
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=str(model_path), dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size, trust_remote_code=trust_remote_code, **llm_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.top_p = float(top_p)
        self.name = name

    def generate(self, prompts, n, *, temperature=0.6, max_new_tokens=1024, seed=0):
        params = self._vllm.SamplingParams(
            n=int(n), temperature=float(temperature), top_p=self.top_p if temperature else 1.0, max_tokens=int(max_new_tokens), seed=int(seed)
        )
        outputs = self.llm.generate(list(prompts), params)
        return [[c.text for c in o.outputs] for o in outputs]


def build_backend(cfg, device: str | None = None, load_model=None) -> Backend:
    """The back end named by ``cfg.backend`` (reference | hf | vllm), with ``cfg.model`` for the model ones.

    ``load_model(model_cfg, device) -> (model, tokenizer, prompt_template)`` loads the model of the `hf` back end
    (experiments/evaluate.py passes `trapo.models.loading.load_model_and_tokenizer`: evaluation/ imports nothing
    of trapo/)."""
    kind = str(cfg.backend)
    if kind == "reference":
        return ReferenceBackend()
    if kind == "hf":
        import torch

        if load_model is None:
            raise ValueError("backend=hf needs `load_model` (e.g. trapo.models.loading.load_model_and_tokenizer)")
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tok, template = load_model(cfg.model, device=dev)
        return HFBackend(model, tok, template, batch_size=cfg.get("batch_size", 8), top_p=cfg.get("top_p", 1.0), progress=cfg.get("progress", True), name=str(cfg.model.get("name", "hf")))
    if kind == "vllm":
        if cfg.model.kind not in ("hf",):
            raise ValueError(f"backend=vllm loads a Hugging Face model directory (model.kind=hf), not kind={cfg.model.kind}")
        return VLLMBackend(cfg.model.path, dtype=str(cfg.model.get("dtype") or "auto"), seed=int(cfg.get("seed", 0)), top_p=cfg.get("top_p", 1.0), trust_remote_code=bool(cfg.model.get("trust_remote_code", False)))
    raise ValueError(f"unknown backend {kind!r}; expected reference, hf or vllm")
