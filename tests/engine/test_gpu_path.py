"""The GPU path's CPU-checkable parts: scripts/gpu_check.sh skips cleanly without CUDA and its local-engine part
runs here on CPU; the install pins and order; the dry run's warnings for missing inputs and a context the model
cannot hold."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402


def compose(*overrides: str):
    return gpu_check.compose(*overrides)


# ---- scripts/gpu_check.sh ------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: run scripts/gpu_check.sh itself")
def test_gpu_check_skips_cleanly_without_cuda(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHON=sys.executable, GPU_CHECK_OUT=str(out)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "gpu_check: SKIP: no CUDA device" in proc.stdout
    assert not out.exists()


def test_gpu_check_local_engine_part_runs_on_cpu_in_bf16(tmp_path, monkeypatch):
    """The CUDA path's local-engine check, on CPU: the trainer loads the model in bf16 and trains on masters."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    res = gpu_check.local_engine_check("bfloat16", 2, tmp_path, device="cpu")
    assert res["ok"], res
    assert res["param_dtypes"] == ["torch.bfloat16"] and res["master_weights"] and res["steps"] == 2


def test_gpu_check_sampling_part_runs_on_cpu():
    """The CUDA sampling check's code, against the CPU itself: it runs and finds the same tokens."""
    res = gpu_check.sampling_check("cpu", temperature=0.6)
    assert res["ok"] and res["equal_to_cpu"] == res["samples"] == 16


# ---- install: pins and order -----------------------------------------------------------------------------
def test_vllm_extra_is_the_vllm_openrlhf_pins():
    if importlib.util.find_spec("openrlhf") is None:
        pytest.skip("OpenRLHF is not installed: bash scripts/install_openrlhf.sh")
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (orl,) = [Requirement(r) for r in extras["openrlhf"]]
    vllm_reqs = [Requirement(r) for r in extras["vllm"]]
    pins = set()
    for r in vllm_reqs:
        if r.name == "vllm":
            pins.add(str(r.specifier))
        elif r.name == "openrlhf":  # through OpenRLHF's own [vllm] extra
            assert r.specifier == orl.specifier and "vllm" in r.extras
            for dep in map(Requirement, requires("openrlhf")):
                if dep.name == "vllm" and dep.marker and dep.marker.evaluate({"extra": "vllm"}):
                    pins.add(str(dep.specifier))
    assert pins == {"==0.29.0"}, pins


def test_cluster_install_puts_torch_before_the_no_build_isolation_step():
    script = (REPO / "scripts" / "install_cluster.sh").read_text().splitlines()
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "install_cluster.sh")]).returncode == 0
    torch_line = next(i for i, x in enumerate(script) if x.startswith("pip install") and "torch==" in x)
    extras_line = next(i for i, x in enumerate(script) if '.[openrlhf,vllm]' in x and x.startswith("pip"))
    assert torch_line < extras_line and "--no-build-isolation" in script[extras_line]
    for doc in ("README.md", "docs/openrlhf.md"):  # no doc tells a plain install that stops at flash-attn
        text = (REPO / doc).read_text()
        assert "scripts/install_cluster.sh" in text, doc
        for line in text.splitlines():
            if "pip install" in line and "[openrlhf" in line:
                assert "--no-build-isolation" in line, (doc, line)


# ---- the dry run's input checks --------------------------------------------------------------------------
def test_dry_run_warns_for_every_missing_input(tmp_path):
    from trapo.engines.openrlhf import launch as L

    data, model = tmp_path / "train.jsonl", tmp_path / "Qwen2.5-Math-7B"
    cfg = compose("preset=paper", "method=trapo", f"data.path={data}", f"model.path={model}")
    ws = L.input_warnings(cfg, L.build_launch(cfg, tmp_path / "run"))
    assert len(ws) == 4, ws
    assert ws[0].startswith(f"data file {data} does not exist") and "scripts/prepare_openr1.py --out" in ws[0]
    assert ws[1].startswith("prompt file") and "writes it" in ws[1]
    assert ws[2].startswith(f"model dir {model} does not exist") and "huggingface-cli download" in ws[2]
    assert "need 9216 tokens" in ws[3] and "allows 4096" in ws[3] and "model.context_len" in ws[3]

    data.write_text("{}\n")
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    ws = L.input_warnings(cfg, L.build_launch(cfg, tmp_path / "run"))
    assert len(ws) == 2 and ws[0].startswith("prompt file") and str(model / "config.json") in ws[1]
    # the real launch refuses before it writes or submits anything
    with pytest.raises(ValueError, match="vLLM refuses"):
        L.main(compose("preset=paper", "method=trapo", f"data.path={data}", f"model.path={model}"), tmp_path / "r")
    assert not (tmp_path / "r" / "openrlhf").exists()

    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 16384}))  # a 16k-context copy
    ws = L.input_warnings(cfg, L.build_launch(cfg, tmp_path / "run"))
    assert len(ws) == 1 and ws[0].startswith("prompt file")


def test_dry_run_prints_the_warnings(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "run.py"), "preset=paper", "method=trapo", "engine.dry_run=true",
         f"hydra.run.dir={tmp_path / 'run'}", f"data.path={tmp_path / 'missing.jsonl'}",
         f"model.path={tmp_path / 'no-model'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [x for x in proc.stdout.splitlines() if x.startswith("# WARNING: ")]
    print("\n".join(warnings))
    assert len(warnings) == 4
    assert [w.split(" ")[2] for w in warnings] == ["data", "prompt", "model", "prompt"]


@pytest.mark.slow
@pytest.mark.openrlhf
def test_gpu_check_deepspeed_part_runs_on_cpu_with_zero3(tmp_path):
    """The CUDA path's DeepSpeed check, on CPU (gloo, fp32; its own process: ZeRO-3 leaves global state): the same
    experience building, ZeRO-3 gradient gathering (safe_get_full_grad) and comparison with the local engine."""
    if importlib.util.find_spec("openrlhf") is None:
        pytest.skip("OpenRLHF is not installed: bash scripts/install_openrlhf.sh")
    code = ("import sys, json, torch; sys.path[:0] = [sys.argv[1] + '/scripts', sys.argv[1] + '/tests']; "
            "torch.set_num_threads(1); import gpu_check; from pathlib import Path; "
            "print('RESULT ' + json.dumps(gpu_check.deepspeed_check(3, Path(sys.argv[2]), device='cpu')))")
    proc = subprocess.run([sys.executable, "-c", code, str(REPO), str(tmp_path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/m.db"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT "):])
    print(res)
    assert res["ok"] and res["missing_grads"] == [] and res["grad_accum_dtype"] == "fp32"
    assert res["loss_rel_diff"] < 1e-5 and res["grad_cosine"] > 0.9999  # fp32 on CPU: near exact
