"""Evaluation of causal LMs on the five math benchmarks (AIME24, AMC, MATH-500, Minerva, OlympiadBench).

  benchmarks  registry, local/hub loading, field maps
  extract     final-answer extraction from model text (last \\boxed{}, else the final-answer line)
  answer      answer normalisation, numbers and structures (pure Python, no sympy)
  symbolic    sympy comparison through math-verify's LaTeX parser (imported in workers only)
  pool        worker processes with a hard per-task time limit
  grader      the grader: each distinct (gold, prediction) pair judged in a worker, a cache
  grade       the CLI: python -m evaluation.grade --input IN.jsonl --output OUT.jsonl
  metrics     avg@k, unbiased pass@k, bootstrap intervals
  backends    generation back ends (`hf`, `vllm`, `reference`)
  runner      `evaluate_items` / `evaluate_benchmarks`: the pure evaluation loop
"""
