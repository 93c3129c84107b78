"""The evaluation pipeline: reference back end at 100%, the entry point, back ends, plain items."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from evaluation import benchmarks as bm
from evaluation.backends import Backend, HFBackend, ReferenceBackend, VLLMBackend, build_backend
from evaluation.grader import Grader
from evaluation.runner import evaluate_benchmarks, evaluate_items, resolve_samples

ROOT = Path(__file__).resolve().parents[2]
DATA = bm.default_data_dir()
needs_data = pytest.mark.skipif(
    DATA is None or not (DATA / "math500.jsonl").exists(), reason="benchmark files not found (set TRAPO_DATA_DIR)"
)


@pytest.fixture(scope="module")
def grader():
    with Grader() as g:
        yield g


@needs_data
def test_reference_backend_scores_100_on_all_five(grader):
    results = evaluate_benchmarks(None, ReferenceBackend(), grader, n_samples=1, n_boot=10)
    assert set(results) == {"aime24", "amc23", "math500", "minerva_math", "olympiadbench"}
    for name, (summary, rows) in results.items():
        assert summary["accuracy"] == 1.0, (name, [r for r in rows if not r["correct"]][:3])
        assert summary["n"] == bm.REGISTRY[name].expected_rows == len(rows)
        assert summary["no_answer"] == 0.0
    assert grader.stats["timeouts"] == 0 and grader.stats["crashes"] == 0


@needs_data
def test_reference_grading_of_1517_items_under_5_seconds(tmp_path):
    src = tmp_path / "ref.jsonl"
    with open(src, "w") as f:
        for name in bm.DEFAULT_BENCHMARKS:
            for it in bm.load_benchmark(name):
                f.write(json.dumps({"response": bm.reference_response(it), "answer": it.gold}) + "\n")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation.grade", "--input", str(src), "--output", str(tmp_path / "out.jsonl"), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    wall = time.monotonic() - start
    print(f"\ngrading 1517 reference items: {wall:.2f} s wall, interpreter start-up included")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 1517 and all(r["correct"] for r in rows)
    assert wall < 5.0


@needs_data
def test_entry_point_writes_summary_rows_and_mlflow(tmp_path):
    out = tmp_path / "eval"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "evaluate.py"), "backend=reference", f"data_dir={DATA}",
         f"output_dir={out}", "limit=3", "bootstrap=10", f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == list(bm.DEFAULT_BENCHMARKS)
    for name, s in summary.items():
        assert s["accuracy"] == 1.0 and s["n"] == 3
        assert s["n_samples"] == (32 if name in ("aime24", "amc23") else 1)  # the paper's avg@32
        rows = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 3 * s["n_samples"]
        assert {"question", "response", "pred", "gold", "correct"} <= set(rows[0])
    con = sqlite3.connect(tmp_path / "mlflow.db")
    names = {r[0] for r in con.execute("select key from metrics")}
    assert "math500/accuracy" in names and "math_avg/accuracy" in names
    assert con.execute("select name from experiments where name='trapo-eval'").fetchone()
    # its per-benchmark files are valid input of the grading CLI ('gold', answer_type, tolerance), unchanged
    olymp = out / "olympiadbench.jsonl"
    assert "answer_type" in json.loads(olymp.read_text().splitlines()[0])
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation.grade", "--input", str(olymp), "--output", str(tmp_path / "regraded.jsonl")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    regraded = [json.loads(line) for line in (tmp_path / "regraded.jsonl").read_text().splitlines()]
    assert len(regraded) == 3 and all(r["correct"] and "error" not in r for r in regraded)


class EchoBackend:
    """Answers with the number in the prompt: a stand-in for the training engine's generator."""

    tokenizer = None
    prompt_template = "Q: {question}\nA:"

    def __init__(self):
        self.calls = []

    def generate(self, prompts, n, *, temperature, max_new_tokens, seed):
        self.calls.append((list(prompts), n, temperature, max_new_tokens, seed))
        out = []
        for p in prompts:
            x = int(p.split("add one to ")[1].split("\n")[0])
            out.append([f"\\boxed{{{x + 1 if j % 2 == 0 else x}}}" for j in range(n)])
        return out


def test_evaluate_items_with_plain_items_and_any_backend(grader):
    items = [{"question": f"add one to {i}", "answer": str(i + 1), "id": f"s{i}"} for i in range(10)]
    backend = EchoBackend()
    assert isinstance(backend, Backend)
    summary, rows = evaluate_items(items, backend, grader, n_samples=4, temperature=1.0, max_new_tokens=9, seed=3, n_boot=50)
    assert backend.calls[0][0][0] == "Q: add one to 0\nA:" and backend.calls[0][1:] == (4, 1.0, 9, 3)
    assert summary["accuracy"] == 0.5 and summary["n"] == 10 and summary["n_samples"] == 4
    assert summary["pass@k"]["4"]["value"] == 1.0 and summary["pass@k"]["1"]["value"] == 0.5
    assert len(rows) == 40 and rows[0]["id"] == "s0" and rows[0]["correct"] and not rows[1]["correct"]


def test_resolve_samples():
    assert resolve_samples("paper", "aime24") == 32 and resolve_samples("paper", "amc") == 32
    assert resolve_samples("paper", "math500") == 1 and resolve_samples(4, "aime24") == 4


def test_reference_backend_needs_prepare():
    with pytest.raises(KeyError):
        ReferenceBackend().generate(["q"], 1, temperature=0, max_new_tokens=1, seed=0)


def test_build_backend_reference_and_unknown():
    from omegaconf import OmegaConf

    assert isinstance(build_backend(OmegaConf.create({"backend": "reference"})), ReferenceBackend)
    with pytest.raises(ValueError, match="unknown backend"):
        build_backend(OmegaConf.create({"backend": "tgi"}))


def test_vllm_backend_without_gpu_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CPU-only error path does not apply")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        VLLMBackend("/nonexistent")


def test_vllm_backend_calls_vllm_api(monkeypatch):
    """vllm is imported lazily; a stand-in module checks the calls we make (runs without a GPU)."""
    seen = {}

    class FakeLLM:
        def __init__(self, **kw):
            seen["llm"] = kw

        def get_tokenizer(self):
            return None

        def generate(self, prompts, params):
            seen["params"] = params
            comp = lambda t: types.SimpleNamespace(text=t)  # noqa: E731
            return [types.SimpleNamespace(outputs=[comp(f"{p}-{j}") for j in range(params.n)]) for p in prompts]

    class FakeParams:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeParams))
    backend = VLLMBackend("/models/m", dtype="bfloat16", seed=7, allow_cpu=True)
    out = backend.generate(["a", "b"], 3, temperature=0.6, max_new_tokens=100, seed=1)
    assert out == [["a-0", "a-1", "a-2"], ["b-0", "b-1", "b-2"]]
    assert seen["llm"]["model"] == "/models/m" and seen["llm"]["seed"] == 7
    p = seen["params"]
    assert (p.n, p.temperature, p.max_tokens, p.seed) == (3, 0.6, 100, 1)


def _tiny_model(path):
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<unk>"] + chars)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, eos_token_id=1, pad_token_id=0, bos_token_id=1)
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_hf_backend_batches_and_samples(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _tiny_model(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    backend = HFBackend(model, tok, prompt_template="{question}=", batch_size=3, progress=False)
    greedy = backend.generate(["1+1", "12+30", "7"], 2, temperature=0.0, max_new_tokens=5, seed=0)
    assert len(greedy) == 3 and all(len(g) == 2 for g in greedy)
    assert all(a == b for a, b in greedy)  # greedy: samples agree
    again = backend.generate(["7", "1+1"], 1, temperature=0.0, max_new_tokens=5, seed=5)
    assert again[0][0] == greedy[2][0] and again[1][0] == greedy[0][0]  # batching and order do not matter
    s1 = backend.generate(["1+1"], 4, temperature=1.0, max_new_tokens=8, seed=1)
    s2 = backend.generate(["1+1"], 4, temperature=1.0, max_new_tokens=8, seed=1)
    assert s1 == s2 and len(set(s1[0])) > 1  # seeded sampling, distinct samples
