"""Tables as pandas DataFrames, written as CSV (numbers), Markdown and LaTeX (mean [95% interval]).

Accuracies are in percent. Each cell aggregates one value per seed: the mean and a 95% percentile bootstrap
interval over the seeds (`evaluation.metrics.bootstrap_ci`); with one seed the value alone. The CSV has a
`method` column, one column per benchmark and `avg`, then `<column>_lo`/`<column>_hi` (the interval),
`n_seeds`, and the paper's numbers (`paper_avg`, and `paper_<benchmark>` where the paper states them).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from experiments.report import paper_numbers as paper

LABELS = {
    "base": "Base model", "sft": "SFT", "grpo": "GRPO", "sft_rl": "SFT→RL", "luffy": "LUFFY", "trapo": "TRAPO",
    "relift": "ReLIFT",
}
ABLATION_LABELS = {
    "grpo": "GRPO", "mg_prefix": "+ micro-groups with prefixes, no prefix loss", "mg_sft": "+ plain SFT loss on prefixes",
    "mg_luffy": "+ LUFFY shaping on prefixes (instead)", "trapo": "+ TrSFT (= TRAPO)",
}


def aggregate(values: Sequence[float], n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n) over seeds; lo = hi = nan with fewer than two values."""
    from evaluation.metrics import bootstrap_ci

    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return float("nan"), float("nan"), float("nan"), 0
    if len(v) < 2:
        return v[0], float("nan"), float("nan"), 1
    lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=seed)
    return float(np.mean(v)), lo, hi, len(v)


def scores_frame(per_seed: Mapping[str, Sequence[Mapping[str, float]]], columns: Sequence[str],
                 n_boot: int = 1000) -> pd.DataFrame:
    """rows: {row key: [{column: percent} per seed]} -> method, <col>..., <col>_lo/_hi..., n_seeds."""
    out = []
    for key, seeds in per_seed.items():
        row: dict = {"method": key}
        n = 0
        for col in columns:
            m, lo, hi, k = aggregate([s.get(col) for s in seeds], n_boot)
            row[col], row[f"{col}_lo"], row[f"{col}_hi"] = m, lo, hi
            n = max(n, k)
        row["n_seeds"] = n
        out.append(row)
    cols = ["method", *columns, *(f"{c}_{b}" for c in columns for b in ("lo", "hi")), "n_seeds"]
    return pd.DataFrame(out, columns=cols)


def table_main(per_seed, benchmarks: Sequence[str], n_boot: int = 1000, real_benchmarks: bool = False) -> pd.DataFrame:
    """Table 1: methods x benchmarks + avg, with the paper's average (and its per-benchmark numbers when the
    benchmarks are the paper's)."""
    df = scores_frame(per_seed, [*benchmarks, "avg"], n_boot)
    df["paper_avg"] = [paper.paper_avg(m) for m in df["method"]]
    if real_benchmarks:
        for b in benchmarks:
            df[f"paper_{b}"] = [paper.paper_benchmark(m, b) for m in df["method"]]
    return df


def table_ablation(per_seed, benchmarks: Sequence[str], n_boot: int = 1000) -> pd.DataFrame:
    df = scores_frame(per_seed, [*benchmarks, "avg"], n_boot)
    df.insert(1, "variant", [ABLATION_LABELS.get(m, m) for m in df["method"]])
    df["paper_avg"] = [paper.ABLATION_AVG.get(m) for m in df["method"]]
    return df


def table_alpha(per_seed, alphas: Mapping[str, float], benchmarks: Sequence[str], n_boot: int = 1000) -> pd.DataFrame:
    df = scores_frame(per_seed, [*benchmarks, "avg"], n_boot)
    df.insert(1, "alpha", [alphas[m] for m in df["method"]])
    return df.sort_values("alpha").reset_index(drop=True)


# the training curves as numbers (the figures draw them): the question of the ablation is whether plain SFT on the
# prefixes destabilises training (entropy up, reward down, larger updates) where TrSFT holds
DYNAMICS = (("train/reward_mean", "reward"), ("train/entropy", "entropy"), ("train/grad_norm", "grad norm"),
            ("train/expert_low_prob_frac", "expert p < α"), ("train/response_length", "length"))


def table_dynamics(histories: Mapping[str, Sequence[pd.DataFrame]], window: int = 10) -> pd.DataFrame:
    """Per run, each metric's mean over its first and last `window` logged steps of RL (SFT steps have no reward,
    entropy or expert statistics) and its maximum; then the mean over the runs (seeds) of a row. A row with no
    history is left out; a metric a method does not log is NaN."""
    rows = []
    for label, hists in histories.items():
        per_run = []
        for h in hists:
            if h is None or h.empty:
                continue
            rl = h["train/phase_rl"].fillna(1.0) > 0 if "train/phase_rl" in h else None
            if rl is not None and rl.any():  # sft has no RL step: all of its steps
                h = h[rl]
            vals = {}
            for key, short in DYNAMICS:
                v = h[key].dropna().to_numpy(float) if key in h else np.array([])
                vals[f"{short}_first"] = float(v[:window].mean()) if len(v) else math.nan
                vals[f"{short}_last"] = float(v[-window:].mean()) if len(v) else math.nan
                vals[f"{short}_max"] = float(v.max()) if len(v) else math.nan
            per_run.append(vals)
        if per_run:
            mean = pd.DataFrame(per_run).mean(skipna=True)
            rows.append({"method": label, **mean.to_dict(), "n_seeds": len(per_run)})
    return pd.DataFrame(rows)


def display_dynamics(df: pd.DataFrame, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """'first → last (max)' per metric, 3 significant digits."""
    rows = []
    for _, r in df.iterrows():
        row = {"method": (labels or {}).get(r["method"], r["method"]), "seeds": int(r["n_seeds"])}
        for _, short in DYNAMICS:
            first, last, top = (r[f"{short}_{k}"] for k in ("first", "last", "max"))
            row[short] = "" if math.isnan(first) else f"{first:.3g} → {last:.3g} ({top:.3g})"
        rows.append(row)
    return pd.DataFrame(rows)


# ---- display ---------------------------------------------------------------------------------------
def cell(mean: float, lo: float, hi: float, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _num(v, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{float(v):.{digits}f}"


def display(df: pd.DataFrame, columns: Sequence[str], labels: Mapping[str, str] | None = None,
            extra: Sequence[tuple[str, str]] = ()) -> pd.DataFrame:
    """Strings for Markdown/LaTeX: first column the row name, `columns` as mean [lo, hi], `extra` (column, header)
    copied as numbers."""
    rows = []
    for _, r in df.iterrows():
        name = r["method"]
        row = {"method": (labels or {}).get(name, name)}
        if "alpha" in df.columns:
            row = {"α": f"{r['alpha']:g}"}
        for c in columns:
            row[c] = cell(r[c], r[f"{c}_lo"], r[f"{c}_hi"])
        for c, header in extra:
            row[header] = _num(r.get(c))
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in df.columns) + " |")
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "→": r"$\to$", "α": r"$\alpha$",
        "±": r"$\pm$"}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    cols = list(df.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "r" * (len(cols) - 1) + "}",
             r"\toprule", " & ".join(tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for _, r in df.iterrows():
        lines.append(" & ".join(tex_escape(r[c]) for c in cols) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + tex_escape(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(numeric: pd.DataFrame, shown: pd.DataFrame, out_dir: Path, name: str, caption: str) -> list[Path]:
    """<name>.csv (numbers), <name>.md and <name>.tex (mean [95% interval])."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.csv", out_dir / f"{name}.md", out_dir / f"{name}.tex"]
    numeric.round(4).to_csv(paths[0], index=False)
    paths[1].write_text(markdown(shown))
    paths[2].write_text(latex(shown, caption, f"tab:{name}"))
    return paths
