"""Experiment management, on top of `trapo/` (and `baselines/`): the command-line entry points and what they
need besides the algorithm.

  run.py           train one method (Hydra; -m for several, sweep=... for Optuna)
  reproduce.py     the paper's tables and figures (report/)
  evaluate.py      a model on the math benchmarks (evaluation/)
  benchmark.py     one RL step of ours against TRL's GRPOTrainer (benchmark_systems.py, benchmark_measure.py)
  crosscheck_trl.py  our GRPO against TRL's on the embedded default
  report/          Hydra composition of the runs, MLflow look-ups, subprocesses, tables, figures, READMEs
  hydra_callbacks  what a Hydra multirun prints (conf/config.yaml `hydra.callbacks`)

The scripts put the repository root on `sys.path` and import this folder as the package `experiments`.
Nothing in `trapo/`, `baselines/` or `evaluation/` imports from here (tests/unit/test_architecture.py).
"""
