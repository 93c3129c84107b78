"""avg@k, unbiased pass@k (checked against brute force) and bootstrap intervals."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from evaluation.metrics import avg_at_k, bootstrap_ci, default_ks, pass_at_k, sampling_metrics


def brute_pass_at_k(n, c, k):
    """Fraction of k-subsets of the n samples that contain a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_formula_and_limits():
    assert pass_at_k(256, 3, 1) == pytest.approx(3 / 256)
    assert pass_at_k(256, 3, 256) == 1.0
    assert pass_at_k(256, 0, 128) == 0.0
    assert pass_at_k(100, 10, 5) == pytest.approx(1 - math.comb(90, 5) / math.comb(100, 5))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_avg_at_k_is_mean_accuracy():
    table = [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    assert avg_at_k(table) == pytest.approx(5 / 12)
    with pytest.raises(ValueError):
        avg_at_k([[1, 0], [1]])


def test_bootstrap_interval():
    rng = np.random.default_rng(1)
    v = rng.random(200) < 0.3
    lo, hi = bootstrap_ci(v, n_boot=2000, seed=0)
    assert lo < v.mean() < hi and hi - lo < 0.2
    assert bootstrap_ci(v, n_boot=2000, seed=0) == (lo, hi)  # seeded
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)


def test_sampling_metrics_summary():
    table = [[True] * 4, [False, True, False, False], [False] * 4]
    m = sampling_metrics(table, n_boot=200)
    assert m["n"] == 3 and m["n_samples"] == 4
    assert m["accuracy"] == m["avg@4"] == pytest.approx(5 / 12)
    assert list(m["pass@k"]) == ["1", "2", "4"] == [str(k) for k in default_ks(4)]
    assert m["pass@k"]["1"]["value"] == pytest.approx(m["accuracy"])
    assert m["pass@k"]["4"]["value"] == pytest.approx(2 / 3)
    lo, hi = m["pass@k"]["2"]["ci95"]
    assert lo <= m["pass@k"]["2"]["value"] <= hi
    assert default_ks(32) == [1, 2, 4, 8, 16, 32] and default_ks(5) == [1, 2, 4, 5]
