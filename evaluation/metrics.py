"""Sampling metrics over a (problems x samples) table of verdicts.

avg@k: mean accuracy over the k samples of each problem, averaged over problems (the paper's avg@32).
pass@k: the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k) per problem, for k <= n.
Intervals: 95% percentile bootstrap over problems (the samples of a problem stay together).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _table(correct: Sequence[Sequence[bool]]) -> np.ndarray:
    rows = [list(r) for r in correct]
    if not rows:
        raise ValueError("no problems")
    n = len(rows[0])
    if n == 0 or any(len(r) != n for r in rows):
        raise ValueError("every problem needs the same number (>= 1) of samples")
    return np.asarray(rows, dtype=bool)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `c` correct out of `n` samples (Chen et al., 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): stable, no big binomials
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def per_problem_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> np.ndarray:
    t = _table(correct)
    n = t.shape[1]
    return np.array([pass_at_k(n, int(c), k) for c in t.sum(axis=1)])


def avg_at_k(correct: Sequence[Sequence[bool]]) -> float:
    """Mean accuracy over all samples of all problems (avg@n with n = samples per problem)."""
    return float(_table(correct).mean())


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem `values`."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("no values")
    if n_boot <= 0 or v.size == 1:
        return float(v.mean()), float(v.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    means = v[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student's t interval of the mean of a few values (paired differences over steps or seeds);
    lo = hi = nan with fewer than two values."""
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    half = float(t.ppf(1 - (1 - level) / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return m, m - half, m + half


def proportion_ci(accuracy: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson interval of an accuracy over `n` problems scored once each (scipy's binomtest)."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    ci = binomtest(int(round(accuracy * n)), n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def sampling_metrics(correct: Sequence[Sequence[bool]], ks: Sequence[int] | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """accuracy (= avg@n) with its interval, and pass@k with intervals for each k <= n."""
    t = _table(correct)
    n = t.shape[1]
    per_problem = t.mean(axis=1)
    out = {
        "accuracy": float(per_problem.mean()),
        "accuracy_ci95": list(bootstrap_ci(per_problem, n_boot, seed)),
        f"avg@{n}": float(per_problem.mean()),
        "n": int(t.shape[0]),
        "n_samples": int(n),
        "pass@k": {},
    }
    for k in ks or default_ks(n):
        if not 1 <= k <= n:
            continue
        vals = per_problem_pass_at_k(t, k)
        lo, hi = bootstrap_ci(vals, n_boot, seed)
        out["pass@k"][str(k)] = {"value": float(vals.mean()), "ci95": [lo, hi]}
    return out
