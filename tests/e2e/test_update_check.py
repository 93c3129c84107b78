"""experiments/update_check.py: one update on one fixed batch moves each sample's log-prob the way its advantage
says (a flipped sign, a wrong mask or a stale forward in the update would show here), and lr ~ 0 moves nothing."""

import re

import pytest


@pytest.mark.slow
def test_one_update_raises_positive_and_lowers_negative_samples(tmp_path, one_thread):
    from experiments import update_check

    out = tmp_path / "check.md"
    assert update_check.main(["preset=smoke", "engine.num_threads=1", "--lrs", "1e-12,1e-3", "--out", str(out)]) == 0
    text = out.read_text()
    gap = float(re.search(r"max \|difference\| ([0-9.e+-]+)", text).group(1))
    assert gap < 1e-4, text  # the update scores what a plain forward scores
    rows = {float(m[0]): [float(x) for x in m[1:4]]
            for m in re.findall(r"^\| ([0-9.e+-]+) \| ([+-][0-9.]+) \| ([+-][0-9.]+) \| ([+-][0-9.]+) \|", text, re.M)}
    assert set(rows) == {1e-12, 1e-3}, text
    assert all(abs(x) < 1e-3 for x in rows[1e-12]), text
    pos, neg, _ = rows[1e-3]
    assert pos > 0.1 and neg < -0.1, text
