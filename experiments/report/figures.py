"""Figures (matplotlib, PNG) from per-step histories (metrics.jsonl) and pass@k summaries.

Each curve is the mean over seeds (a light band: min-max over seeds), smoothed with a running mean over
`window` steps. Training reward, response length and entropy are logged over unguided samples only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.report.tables import ABLATION_LABELS, LABELS  # noqa: E402

COLORS = {"base": "#7f7f7f", "sft": "#8c564b", "grpo": "#1f77b4", "sft_rl": "#9467bd", "luffy": "#ff7f0e",
          "relift": "#e377c2", "trapo": "#d62728", "mg_prefix": "#17becf", "mg_sft": "#bcbd22", "mg_luffy": "#2ca02c"}


def _color(label: str):
    return COLORS.get(label)


def _name(label: str) -> str:
    return LABELS.get(label) or {"mg_prefix": "MG, no prefix loss", "mg_sft": "MG + SFT",
                                 "mg_luffy": "MG + LUFFY shaping"}.get(label, label)


def mean_curve(histories: Sequence[pd.DataFrame], key: str, window: int = 1):
    """(steps, mean, lo, hi) of `key` over the seeds' histories (smoothed), or None if no seed logged it."""
    series = []
    for h in histories:
        if h is None or key not in h.columns:
            continue
        s = pd.Series(h[key].to_numpy(dtype=float), index=h["step"].to_numpy())
        s = s[~s.index.duplicated(keep="last")].sort_index()
        if s.notna().any():
            series.append(s.rolling(window, min_periods=1).mean() if window > 1 else s)
    if not series:
        return None
    df = pd.concat(series, axis=1)
    df = df[df.notna().any(axis=1)]
    return df.index.to_numpy(), df.mean(axis=1).to_numpy(), df.min(axis=1).to_numpy(), df.max(axis=1).to_numpy()


def _plot_curves(ax, histories: Mapping[str, Sequence[pd.DataFrame]], labels: Sequence[str], key: str,
                 window: int) -> bool:
    drawn = False
    for label in labels:
        c = mean_curve(histories.get(label, []), key, window)
        if c is None:
            continue
        steps, mean, lo, hi = c
        line, = ax.plot(steps, mean, label=_name(label), color=_color(label), lw=1.6)
        if len(histories.get(label, [])) > 1:
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        drawn = True
    return drawn


def window_for(histories: Mapping[str, Sequence[pd.DataFrame]]) -> int:
    n = max((len(h) for hs in histories.values() for h in hs if h is not None), default=1)
    return max(1, n // 20)


def training_curve(histories, key: str, ylabel: str, title: str, groups: Sequence[tuple[str, Sequence[str]]],
                   path: Path) -> Path | None:
    """One panel per group of methods (e.g. Table 1 methods, the ablation chain)."""
    window = window_for(histories)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.6), squeeze=False)
    any_drawn = False
    for ax, (name, labels) in zip(axes[0], groups):
        drawn = _plot_curves(ax, histories, labels, key, window)
        any_drawn |= drawn
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
    fig.suptitle(title + (f" (running mean over {window} steps)" if window > 1 else ""), fontsize=11)
    return _save(fig, path) if any_drawn else _discard(fig)


def expert_tokens(histories, labels: Sequence[str], alpha: float, path: Path) -> Path | None:
    window = window_for(histories)
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.6))
    d1 = _plot_curves(axes[0], histories, labels, "train/expert_token_prob", window)
    d2 = _plot_curves(axes[1], histories, labels, "train/expert_low_prob_frac", window)
    axes[0].set_ylabel("mean p of expert tokens")
    axes[1].set_ylabel(f"share of expert tokens with p < α = {alpha:g}")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        if d1 or d2:
            ax.legend(fontsize=8)
    fig.suptitle("Expert-token probability under the policy" + (f" (running mean over {window} steps)"
                                                                if window > 1 else ""), fontsize=11)
    return _save(fig, path) if (d1 or d2) else _discard(fig)


def guidance_levels(histories, labels: Sequence[str], path: Path, n_levels: int = 4) -> Path | None:
    """Stacked fractions of prompts at each guidance level over training, one panel per adaptive method."""
    window = window_for(histories)
    keys = [f"train/guidance_level_{i}" for i in range(n_levels)]
    shown = [lb for lb in labels if mean_curve(histories.get(lb, []), keys[0]) is not None]
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown), 3.6), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, label in zip(axes[0], shown):
        curves = [mean_curve(histories[label], k, window) for k in keys]
        steps = curves[0][0]
        ys = [np.interp(steps, c[0], c[1]) if c is not None else np.zeros_like(steps, dtype=float) for c in curves]
        ax.stackplot(steps, *ys, labels=[f"level {i}" for i in range(n_levels)],
                     colors=[cmap(i / max(1, n_levels - 1)) for i in range(n_levels)], alpha=0.85)
        ax.set_ylim(0, 1)
        ax.set_title(_name(label) if label in LABELS else ABLATION_LABELS.get(label, label), fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("fraction of prompts")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.suptitle("Guidance level per prompt (0 = no prefix ... 3 = whole solution)", fontsize=11)
    return _save(fig, path)


def pass_at_k(passk: Mapping[str, Sequence[dict]], split: str, path: Path) -> Path | None:
    """pass@k against k (log scale), mean over seeds, bars = min-max over seeds."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    drawn = False
    for label, summaries in passk.items():
        summaries = [s for s in summaries if s]
        if not summaries:
            continue
        ks = sorted({int(k) for s in summaries for k in s["pass@k"]})
        vals = np.array([[s["pass@k"].get(str(k), {}).get("value", math.nan) for k in ks] for s in summaries]) * 100
        mean = np.nanmean(vals, axis=0)
        err = np.vstack([mean - np.nanmin(vals, axis=0), np.nanmax(vals, axis=0) - mean])
        ax.errorbar(ks, mean, yerr=err if len(summaries) > 1 else None, marker="o", ms=3, capsize=2,
                    label=_name(label), color=_color(label))
        drawn = True
    if not drawn:
        return _discard(fig)
    ax.set_xscale("log", base=2)
    n = summaries[0].get("n_samples", "")
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    ax.set_title(f"pass@k on {split} ({n} samples per problem, T={summaries[0].get('temperature', '')})",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def alpha_curve(df: pd.DataFrame, path: Path, paper_alpha: float) -> Path | None:
    """Average accuracy against the trust region α (table_alpha), with the 95% interval over seeds."""
    if df.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    x, y = df["alpha"].to_numpy(float), df["avg"].to_numpy(float)
    lo, hi = df["avg_lo"].to_numpy(float), df["avg_hi"].to_numpy(float)
    has_ci = ~np.isnan(lo)
    ax.plot(x, y, marker="o", color=COLORS["trapo"])
    if has_ci.any():
        ax.errorbar(x[has_ci], y[has_ci], yerr=[y[has_ci] - lo[has_ci], hi[has_ci] - y[has_ci]], fmt="none",
                    color=COLORS["trapo"], capsize=3)
    ax.axvline(paper_alpha, color="gray", ls=":", lw=1)
    ax.set_xscale("log" if (x > 0).all() else "symlog", **({} if (x > 0).all() else {"linthresh": 0.01}))
    ax.set_xlabel("trust region α (TrSFT)")
    ax.set_ylabel("average accuracy (%)")
    ax.set_title("Final accuracy against α", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _discard(fig) -> None:
    plt.close(fig)
    return None
