"""The miniature's diagnostic scripts (docs/miniature.md) run on the smoke model and print sane numbers."""

import re

import pytest

from experiments import base_behaviour, expert_probs


def _rows(out: str, cells: int) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    return [r for r in rows if len(r) == cells and re.fullmatch(r"[\d.]+", r[1])]


def test_base_behaviour_prints_guess_share_and_accuracies(capsys, one_thread):
    assert base_behaviour.main(["preset=smoke", "--n", "24", "--samples", "4", "--steps", "1,2",
                               "--temperature", "0.6"]) == 0
    rows = _rows(capsys.readouterr().out, 6)
    assert [r[0] for r in rows] == ["1", "2"]
    for steps, share, guess, work, overall, headroom in rows:
        assert 0.0 <= float(share) <= 1.0 and 0.0 <= float(overall) <= 1.0
        for acc in (guess, work):
            assert acc == "nan" or 0.0 <= float(acc) <= 1.0
    # the smoke model answers some 1-step problems (a broken sampler or grader would print 0.00)
    assert float(rows[0][4]) > 0.0


def test_expert_probs_prints_a_row_per_style_and_kind(capsys, one_thread):
    assert expert_probs.main(["preset=smoke", "--n", "4", "--styles", "base,folded"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| base |") or line.startswith("| folded |")]
    assert len(rows) == 4, out
    for line in rows:
        mean_p = float(line.strip("|").split("|")[-2])
        assert 0.0 < mean_p <= 1.0


def test_expert_probs_train_set_splits_the_references_tokens_by_position(capsys, one_thread):
    assert expert_probs.main(["--train-set", "--n", "6", "preset=smoke"]) == 0
    out = capsys.readouterr().out
    rows = {r[0]: r for r in ([c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
                              if line.startswith("| ") and not line.startswith("| tokens"))}
    assert set(rows) == {"all", "first 20% of each reference", "20-50% of each reference", "50-100% of each reference"}
    counts = {k: int(r[1]) for k, r in rows.items()}
    assert counts["all"] == sum(v for k, v in counts.items() if k != "all") > 0  # every token in one band
    for r in rows.values():
        mean_p, below_alpha, below_half = map(float, r[2:])
        assert 0.0 < mean_p <= 1.0 and 0.0 <= below_alpha <= below_half <= 1.0


if __name__ == "__main__":
    pytest.main([__file__])
