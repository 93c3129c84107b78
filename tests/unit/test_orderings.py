"""experiments/report/orderings.py: an ordering holds only when the difference's intervals over problems and over
seeds both exclude zero."""

import json
import math

import numpy as np
import pytest

from experiments.report import orderings as od


def write_rows(run_dir, split, correct_by_id, samples=1):
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    with open(run_dir / "eval" / f"{split}.jsonl", "w") as f:
        for i, c in correct_by_id.items():
            for j in range(samples):
                f.write(json.dumps({"id": i, "sample": j, "correct": bool(c[j] if isinstance(c, list) else c)}) + "\n")


def test_per_problem_averages_samples_and_needs_every_split(tmp_path):
    write_rows(tmp_path, "s1", {"a": [True, False], "b": [True, True]}, samples=2)
    assert od.per_problem(tmp_path, ["s1"]) == {"s1": {"a": 0.5, "b": 1.0}}
    assert od.per_problem(tmp_path, ["s1", "s2"]) is None and od.per_problem(None, ["s1"]) is None


def test_seed_interval_is_the_t_interval():
    lo, hi = od.seed_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.303
    assert (lo, hi) == pytest.approx((2 - 4.3027 / math.sqrt(3), 2 + 4.3027 / math.sqrt(3)), abs=1e-3)
    assert all(math.isnan(x) for x in od.seed_interval([1.0]))


def test_a_real_gap_holds_and_a_gap_on_few_problems_does_not():
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(1000)]
    # a is right on 60% of 1000 problems, b on 40%, in every seed: both intervals exclude zero
    a = [{"s": {i: float(k < 600) for k, i in enumerate(ids)}} for _ in range(3)]
    b = [{"s": {i: float(k < 400) for k, i in enumerate(ids)}} for _ in range(3)]
    lo, hi, n = od.problem_interval(a, b, ["s"], n_boot=500)
    assert n == 1000 and 15 < lo < 20 < hi < 25  # 20 points, +-~2.8 (paired: 200 of 1000 problems differ)
    avg = {"a": [60.0, 61.0, 59.0], "b": [40.0, 41.0, 39.5]}
    r = od.compare("a", "b", avg, {"a": a, "b": b}, ["s"], n_boot=500)
    assert r["verdict"] == "a > b" and r["diff"] == pytest.approx(np.mean([20, 20, 19.5]))
    # the same two points on 20 problems with noisy seeds: not resolved
    few = [str(i) for i in range(20)]
    a2 = [{"s": {i: float(rng.random() < 0.5) for i in few}} for _ in range(3)]
    b2 = [{"s": {i: float(rng.random() < 0.48) for i in few}} for _ in range(3)]
    r2 = od.compare("a", "b", {"a": [50.0, 45.0, 55.0], "b": [48.0, 50.0, 46.0]}, {"a": a2, "b": b2}, ["s"])
    assert r2["verdict"] == "not resolved"
    # without per-problem rows a pair cannot hold, whatever its seeds say
    r3 = od.compare("a", "b", avg, {"a": [None, None, None], "b": b}, ["s"])
    assert r3["verdict"] == "not resolved" and math.isnan(r3["problems_lo"])


def test_a_seed_one_row_lacks_leaves_the_interval_over_problems_to_the_seeds_both_have():
    """A partial table (one row's seed 1 not made yet) showed no interval over problems at all: the rows of the
    seeds both rows have are compared; over seeds one pair gives no interval, so the ordering is not resolved."""
    ids = [str(i) for i in range(1000)]
    a = [{"s": {i: float(k < 600) for k, i in enumerate(ids)}}, None]
    b = [{"s": {i: float(k < 400) for k, i in enumerate(ids)}}, {"s": {i: 0.0 for i in ids}}]
    r = od.compare("a", "b", {"a": [60.0, None], "b": [40.0, 0.0]}, {"a": a, "b": b}, ["s"], n_boot=500)
    assert r["n_problems"] == 1000 and 15 < r["problems_lo"] < 20 < r["problems_hi"] < 25
    assert r["n_seeds"] == 1 and math.isnan(r["seeds_lo"]) and r["verdict"] == "not resolved"


def test_rows_on_different_problems_are_refused():
    a = [{"s": {"1": 1.0, "2": 0.0}}]
    b = [{"s": {"1": 1.0, "3": 0.0}}]
    with pytest.raises(ValueError, match="different problems"):
        od.problem_interval(a, b, ["s"])


def test_the_pairs_are_the_claims_the_tables_make():
    pairs = od.pairs_to_check(["trapo", "grpo", "sft"], ["grpo", "mg_prefix", "mg_sft", "mg_luffy", "trapo"],
                              ["trapo@alpha=0.1", "trapo@alpha=1"])
    assert ("trapo", "grpo") in pairs and ("trapo", "sft") in pairs and ("grpo", "sft") in pairs
    assert ("mg_prefix", "grpo") in pairs and ("mg_sft", "mg_prefix") in pairs and ("trapo", "mg_luffy") in pairs
    assert ("mg_sft", "grpo") in pairs and ("trapo@alpha=0.1", "trapo@alpha=1") in pairs
    assert len(pairs) == len(set(pairs)) and not any((b, a) in pairs for a, b in pairs)


def test_the_readme_sentences_say_whether_the_orderings_they_claim_hold():
    """results/mini's README said "TRAPO has the highest average (95% intervals do not overlap with ReLIFT's)" from a
    bootstrap over three seeds, while orderings.md found TRAPO vs ReLIFT not resolved: the sentence now defers."""
    import pandas as pd

    from experiments.report import readme

    checks = pd.DataFrame([
        {"a": "trapo", "b": "relift", "verdict": "not resolved"},
        {"a": "trapo", "b": "mg_luffy", "verdict": "trapo > mg_luffy"},
        {"a": "mg_sft", "b": "mg_prefix", "verdict": "mg_sft > mg_prefix"},
        {"a": "mg_luffy", "b": "mg_sft", "verdict": "mg_luffy < mg_sft"},
    ])
    holds = od.holds_in(checks)
    assert holds("trapo", "relift") is False and holds("relift", "trapo") is False
    assert holds("mg_sft", "mg_luffy") is True and holds("mg_luffy", "mg_sft") is False
    assert holds("trapo", "grpo") is None

    def frame(avgs):  # bootstrap intervals that do not overlap, as results/mini's did
        return pd.DataFrame([{"method": m, "avg": v, "avg_lo": v - 0.3, "avg_hi": v + 0.3} for m, v in avgs.items()])

    main = readme.compare_main(frame({"base": 15.7, "relift": 24.5, "trapo": 25.8}), holds)
    top = next(s for s in main if s.startswith("TRAPO has the highest"))
    assert "lead over ReLIFT (the next, +1.3) is **not resolved** (orderings.md)" in top and "do not overlap" not in top
    assert "do not overlap" in next(s for s in readme.compare_main(frame({"relift": 24.5, "trapo": 25.8}))
                                    if s.startswith("TRAPO has the highest"))  # without orderings, as before
    abl = readme.compare_ablation(frame({"grpo": 23.0, "mg_prefix": 22.6, "mg_sft": 25.5, "mg_luffy": 23.9,
                                         "trapo": 25.8}), holds)
    assert any("TrSFT beats LUFFY's shaping" in s and "the difference holds (orderings.md)" in s for s in abl)
    assert any("does **not** collapse" in s and "its lead over mg_prefix, mg_luffy holds" in s for s in abl)


def test_the_ablation_sentence_needs_grpo_to_say_whether_mg_sft_collapses():
    """A partial table (the SmolLM2 ablation while its runs finish) with mg_sft and no GRPO said "does **not**
    collapse here ... GRPO n/a": the collapse is a drop below GRPO, so without GRPO there is nothing to say."""
    import pandas as pd

    from experiments.report import readme

    def frame(avgs):
        return pd.DataFrame([{"method": m, "avg": v, "avg_lo": v - 0.3, "avg_hi": v + 0.3} for m, v in avgs.items()])

    for avgs in ({"mg_sft": 32.2}, {"mg_sft": 32.2, "trapo": 42.0}, {"grpo": float("nan"), "mg_sft": 32.2}):
        lines = readme.compare_ablation(frame(avgs))
        assert not any("collapse" in s for s in lines), (avgs, lines)
    # likewise TrSFT against LUFFY's shaping without mg_luffy, and "the highest average" of TRAPO alone
    lines = readme.compare_ablation(frame({"mg_luffy": float("nan"), "trapo": 42.0}))
    assert not any("LUFFY's shaping" in s for s in lines), lines
    assert not any("highest" in s for s in readme.compare_main(frame({"trapo": 42.0}))), "TRAPO alone"
    assert any("is the lowest of the chain, 7.8 points below GRPO" in s
               for s in readme.compare_ablation(frame({"grpo": 40.0, "mg_sft": 32.2, "trapo": 42.0})))
    # the collapse is claimed only where orderings.md says GRPO > mg_sft holds (one seed: not resolved)
    chain = frame({"grpo": 45.1, "mg_prefix": 44.6, "mg_sft": 32.2, "trapo": 42.0})
    for verdict, says in (("not resolved", "so the collapse is not established"),
                          ("mg_sft < grpo", "the collapse is reproduced (paper: 32.3 vs 50.4, 18.1 points below); "
                                            "the difference holds")):
        from experiments.report import orderings as od

        holds = od.holds_in(pd.DataFrame([{"a": "mg_sft", "b": "grpo", "verdict": verdict}]))
        lines = readme.compare_ablation(chain, holds)
        assert any(says in s for s in lines), (verdict, lines)
        assert not any("reproduced" in s for s in lines) or verdict != "not resolved"


def test_a_pair_with_a_row_not_made_is_not_checked_rather_than_unresolved():
    """results/smollm2 listed "TRAPO vs SFT (+nan)" among the orderings "not resolved" while SFT had no run at all:
    a pair no seed has both rows of was never compared, and says so apart from real ties."""
    ids = [str(i) for i in range(100)]
    a = [{"s": {i: 1.0 for i in ids}}, {"s": {i: 1.0 for i in ids}}]
    r = od.compare("a", "b", {"a": [60.0, 61.0], "b": [None, None]}, {"a": a, "b": [None, None]}, ["s"])
    assert r["verdict"] == "not made" and r["n_seeds"] == 0
    tied = od.compare("a", "c", {"a": [60.0, 61.0], "c": [60.5, 60.0]}, {"a": a, "c": a}, ["s"], n_boot=200)
    assert tied["verdict"] == "not resolved"
    df = od.frame([r, tied])
    lines = od.sentences(df)
    assert any(s.startswith("Not resolved") and "a vs c" in s and "a vs b" not in s for s in lines), lines
    assert any(s.startswith("Not checked yet") and "a vs b" in s and "nan" not in s for s in lines), lines
    assert "no: not made" in od.markdown(df)
    holds = od.holds_in(df)
    assert holds("a", "b") is None and holds("a", "c") is False


def test_the_notes_say_which_model_the_preset_trains():
    """results/smollm2's notes called SmolLM2-135M "a ~1M-parameter model": the note now comes from the runs' model."""
    from omegaconf import OmegaConf

    from experiments.report.pipeline import _notes

    rcfg = OmegaConf.create({"preset": "smollm2"})
    real_lm = " ".join(_notes(rcfg, False, OmegaConf.create({"kind": "gguf", "name": "smollm2-135m-instruct"})))
    assert "smollm2-135m-instruct" in real_lm and "1M-parameter" not in real_lm
    tiny = " ".join(_notes(OmegaConf.create({"preset": "mini"}), False, OmegaConf.create({"kind": "tiny"})))
    assert "~1M-parameter" in tiny and "miniature" in tiny
