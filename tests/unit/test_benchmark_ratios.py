"""experiments/benchmark.py's headline ratios on `fixed`: medians over processes, and a fresh process that fails
loses only its own ratios (the measurements before it still make the report)."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments import benchmark  # noqa: E402

SYSTEMS = {"ours_grpo": {"step_s": 2.0}, "ours_trapo": {"step_s": 2.2}, "trl_grpo": {"step_s": 2.5}}


def args(n):
    return SimpleNamespace(steps=2, warmup=1, threads=1, quick=True, no_trl=False, ratio_processes=n)


def fake_children(outputs):
    """subprocess.run for the fresh processes, answering from `outputs` in order: a dict (its JSON line) or an
    exit code."""
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        out = outputs[len(calls) - 1]
        if isinstance(out, int):
            return subprocess.CompletedProcess(cmd, out, stdout="", stderr="Traceback: boom")
        return subprocess.CompletedProcess(cmd, 0, stdout="log line\n" + json.dumps(out) + "\n", stderr="")
    return run, calls


def test_the_headline_ratios_are_medians_over_processes(monkeypatch):
    run, calls = fake_children([{"trapo_over_grpo": 1.3, "ours_over_trl": 0.7},
                                {"trapo_over_grpo": 1.0, "ours_over_trl": 0.9}])
    monkeypatch.setattr(benchmark.subprocess, "run", run)
    ratios = benchmark.fixed_ratios(args(3), SYSTEMS)
    assert ratios == {"trapo_over_grpo": [1.1, 1.3, 1.0], "ours_over_trl": [0.8, 0.7, 0.9]}
    assert len(calls) == 2 and "--ratio-processes" in calls[0] and "fixed" in calls[0]
    head = benchmark.headline({"settings": {"fixed": {"systems": SYSTEMS}}, "fixed_ratios": ratios})
    assert head["trapo_over_grpo"] == 1.1 and head["ours_over_trl"] == 0.8


def test_a_failed_fresh_process_loses_only_its_own_ratios(monkeypatch, capsys):
    run, calls = fake_children([1, {"trapo_over_grpo": 1.0, "ours_over_trl": 0.9}, {"unexpected": 1}])
    monkeypatch.setattr(benchmark.subprocess, "run", run)
    ratios = benchmark.fixed_ratios(args(4), SYSTEMS)
    assert len(calls) == 3
    assert ratios == {"trapo_over_grpo": [1.1, 1.0], "ours_over_trl": [0.8, 0.9]}
    out = capsys.readouterr().out
    assert "fresh process 1 failed (exit 1)" in out and "boom" in out and "fresh process 3 failed" in out


def test_a_failed_rss_probe_loses_only_the_probe(monkeypatch, capsys):
    """The probe ran with check=True: its failure raised after every timing was made, and nothing was written."""
    for answer in (1, {"unexpected": 1}):
        run, calls = fake_children([answer])
        monkeypatch.setattr(benchmark.subprocess, "run", run)
        probe = benchmark.rss_probe(args(1))
        assert probe == {"failed": "exit 1" if answer == 1 else "exit 0"} and "--rss-child" in calls[0]
    assert "RSS probe failed (exit 1)" in capsys.readouterr().out
    run, _ = fake_children([{"peak_rss_mb": 900.0, "after_imports_mb": 300.0, "after_model_and_data_mb": 400.0,
                             "largest_logits_mb": 1.5}])
    monkeypatch.setattr(benchmark.subprocess, "run", run)
    assert benchmark.rss_probe(args(1))["peak_rss_mb"] == 900.0
