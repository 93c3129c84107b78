"""Which orderings of the tables hold: two rows compared on the same problems and the same seeds (`RULE`).

Per-problem results come from each run's `eval/<split>.jsonl` (its run dir). A pair whose runs lack them (reused
from MLflow without their run dirs) is reported without the problem interval and does not count as holding.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

RULE = """A table's cell is a mean over seeds, and its interval is over the seeds only. Whether one row ranks above
another is read here two ways, and the ordering *holds* only when both 95% intervals of the difference (row a minus
row b, in points of the average over the evaluation splits) exclude zero on one side:

- over problems: each problem's correctness averaged over a row's seeds (and samples), the two rows' difference
  per problem, a paired bootstrap over the problems (each split resampled on its own, the splits averaged as the
  table's `avg` is). Every row is evaluated on the same problems: the splits do not depend on the run seed;
- over seeds: the difference of the two rows' `avg` seed by seed (the same seed's runs), a t interval over the
  seeds (wide with three seeds: t = 4.30)."""


# verdicts that rank nothing: an interval includes zero, or no seed has both rows
UNRANKED = ("not resolved", "not made")


def per_problem(run_dir: Path | None, splits: Sequence[str]) -> dict[str, dict[str, float]] | None:
    """{split: {problem id: mean correctness over its samples}} from a run dir's eval rows, or None."""
    if run_dir is None:
        return None
    out: dict[str, dict[str, float]] = {}
    for split in splits:
        path = Path(run_dir) / "eval" / f"{split}.jsonl"
        if not path.exists():
            return None
        hits: dict[str, list[bool]] = {}
        for line in path.read_text().splitlines():
            row = json.loads(line)
            hits.setdefault(str(row["id"]), []).append(bool(row["correct"]))
        out[split] = {k: float(np.mean(v)) for k, v in hits.items()}
    return out


def _over_seeds(runs: Sequence[dict | None], split: str) -> dict[str, float] | None:
    """Each problem's correctness averaged over the seeds' runs (None when a run has no rows)."""
    if not runs or any(r is None for r in runs):
        return None
    ids = set(runs[0][split])
    if any(set(r[split]) != ids for r in runs):
        raise ValueError(f"split {split}: the runs were evaluated on different problems")
    return {i: float(np.mean([r[split][i] for r in runs])) for i in ids}


def problem_interval(a: Sequence[dict | None], b: Sequence[dict | None], splits: Sequence[str],
                     n_boot: int = 2000, seed: int = 0) -> tuple[float, float, int] | None:
    """95% paired bootstrap interval over problems of avg(a) - avg(b) in points, and the problems a split;
    None without per-problem rows for every run."""
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_boot)
    n = 0
    for split in splits:
        pa, pb = _over_seeds(a, split), _over_seeds(b, split)
        if pa is None or pb is None:
            return None
        if set(pa) != set(pb):
            raise ValueError(f"split {split}: the two rows were evaluated on different problems")
        ids = sorted(pa)
        d = np.array([pa[i] - pb[i] for i in ids])
        n = len(d)
        boots += d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    boots = 100 * boots / len(splits)
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)), n


def seed_interval(diffs: Sequence[float]) -> tuple[float, float]:
    """95% t interval of the mean of per-seed differences (nan with fewer than two seeds)."""
    from evaluation.metrics import t_interval

    d = [x for x in diffs if x is not None and not math.isnan(x)]
    if len(d) < 2:
        return float("nan"), float("nan")
    return t_interval(d)[1:]


def compare(a: str, b: str, avg_by_seed: Mapping[str, Sequence[float | None]],
            rows_by_seed: Mapping[str, Sequence[dict | None]], splits: Sequence[str], n_boot: int = 2000) -> dict:
    """Row `a` against row `b`: the mean difference of their averages and the two intervals (see the module)."""
    pairs = [(x, y) for x, y in zip(avg_by_seed[a], avg_by_seed[b]) if x is not None and y is not None
             and not (math.isnan(x) or math.isnan(y))]
    diff = float(np.mean([x - y for x, y in pairs])) if pairs else float("nan")
    s_lo, s_hi = seed_interval([x - y for x, y in pairs])
    # over problems on the seeds both rows have (a partial table: seed 1 of one row not made yet)
    both = [(x, y) for x, y in zip(rows_by_seed[a], rows_by_seed[b]) if x is not None and y is not None]
    prob = problem_interval([x for x, _ in both], [y for _, y in both], splits, n_boot) if both else None
    p_lo, p_hi, n_prob = prob if prob is not None else (float("nan"), float("nan"), 0)
    above = p_lo > 0 and s_lo > 0
    below = p_hi < 0 and s_hi < 0
    # no seed has both rows: nothing was compared (a partial table), which is not a tie
    verdict = "not made" if not pairs else f"{a} > {b}" if above else f"{a} < {b}" if below else "not resolved"
    return {"a": a, "b": b, "diff": diff, "problems_lo": p_lo, "problems_hi": p_hi, "seeds_lo": s_lo,
            "seeds_hi": s_hi, "n_seeds": len(pairs), "n_problems": n_prob,
            "verdict": verdict}


def pairs_to_check(main_order: Sequence[str], ablation: Sequence[str], alphas: Sequence[str]) -> list[tuple[str, str]]:
    """The orderings the tables and READMEs state: TRAPO against every other row of the main table, each
    neighbour pair of the main table's order, each link of the ablation chain, plain SFT on prefixes against GRPO,
    TrSFT against LUFFY's shaping, and neighbouring alphas."""
    out: list[tuple[str, str]] = []

    def add(a, b):
        if a != b and (a, b) not in out and (b, a) not in out:
            out.append((a, b))

    if "trapo" in main_order:
        for m in main_order:
            add("trapo", m)
    for x, y in zip(main_order, main_order[1:]):
        add(x, y)
    for x, y in zip(ablation, ablation[1:]):
        add(y, x)
    if "mg_sft" in ablation and "grpo" in ablation:
        add("mg_sft", "grpo")
    if "trapo" in ablation and "mg_luffy" in ablation:
        add("trapo", "mg_luffy")
    for x, y in zip(alphas, alphas[1:]):
        add(x, y)
    return out


def frame(checks: Sequence[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(checks), columns=["a", "b", "diff", "problems_lo", "problems_hi", "seeds_lo",
                                               "seeds_hi", "n_seeds", "n_problems", "verdict"])


def markdown(df: pd.DataFrame, labels: Mapping[str, str] | None = None) -> str:
    def f(x):
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.1f}"

    name = (lambda m: (labels or {}).get(m, m))
    lines = ["| a | b | a - b (points) | 95% over problems | 95% over seeds | seeds | problems a split | holds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        holds = r["verdict"] if r["verdict"] not in UNRANKED else f"no: {r['verdict']}"
        lines.append(f"| {name(r['a'])} | {name(r['b'])} | {f(r['diff'])} | [{f(r['problems_lo'])}, "
                     f"{f(r['problems_hi'])}] | [{f(r['seeds_lo'])}, {f(r['seeds_hi'])}] | {r['n_seeds']} | "
                     f"{r['n_problems'] or ''} | {holds} |")
    return "\n".join(lines) + "\n"


def document(df: pd.DataFrame, labels: Mapping[str, str] | None = None) -> str:
    """orderings.md: the rule, then the table."""
    return "# Which orderings hold\n\n" + RULE + "\n\n" + markdown(df, labels)


def holds_in(df: pd.DataFrame):
    """holds(a, b) for the README's sentences: True when "a > b" holds, False when the pair was checked and it does
    not, None when the pair was not checked or a row has no runs yet."""
    verdicts = {(r["a"], r["b"]): r["verdict"] for r in df.to_dict("records") if r["verdict"] != "not made"}

    def holds(a: str, b: str) -> bool | None:
        if (a, b) in verdicts:
            return verdicts[(a, b)] == f"{a} > {b}"
        if (b, a) in verdicts:
            return verdicts[(b, a)] == f"{b} < {a}"
        return None
    return holds


def sentences(df: pd.DataFrame, labels: Mapping[str, str] | None = None) -> list[str]:
    """One line for the README: which orderings hold and which do not."""
    name = (lambda m: (labels or {}).get(m, m))
    held = [r for r in df.to_dict("records") if r["verdict"] not in UNRANKED]
    open_ = [r for r in df.to_dict("records") if r["verdict"] == "not resolved"]
    unmade = [r for r in df.to_dict("records") if r["verdict"] == "not made"]
    out = []
    if held:
        out.append("Orderings that hold (both 95% intervals of the difference, over problems and over seeds, exclude "
                   "zero): " + "; ".join(f"{name(r['a'])} {'>' if r['diff'] > 0 else '<'} {name(r['b'])} "
                                         f"({r['diff']:+.1f})" for r in held) + ".")
    if open_:
        out.append("Not resolved (an interval includes zero, so the tables do not rank these): "
                   + "; ".join(f"{name(r['a'])} vs {name(r['b'])} ({r['diff']:+.1f})" for r in open_) + ".")
    if unmade:
        out.append("Not checked yet (a row has no seed made): "
                   + "; ".join(f"{name(r['a'])} vs {name(r['b'])}" for r in unmade) + ".")
    return out
