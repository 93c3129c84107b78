"""Provenance (command, date, machine, git commit), the comparison with the paper, and the README files.

`<output_dir>/manifest.json` records how the tables and figures of one output dir were made;
`<output_dir>/README.md` shows them; `results/README.md` (the index) is regenerated from every
`results/*/manifest.json`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from experiments.report import paper_numbers as paper
from experiments.report.tables import LABELS

ROOT = Path(__file__).resolve().parents[2]


def git_info(root: Path = ROOT, exclude: Sequence[Path | str] = ()) -> dict:
    """Commit, branch, and whether tracked files differ from it, not counting `exclude` (the files the caller is
    regenerating: a reproduce that rewrites results/<preset> is not made from uncommitted code because of it)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD")
    root_abs = Path(root).resolve()
    skip = [f":(exclude){Path(p).resolve().relative_to(root_abs)}" for p in exclude
            if Path(p).resolve().is_relative_to(root_abs)]
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", *skip))
    return {"commit": commit or "unknown", "branch": git("rev-parse", "--abbrev-ref", "HEAD") or "unknown",
            "dirty": dirty}


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError):
        pass
    info = {"host": platform.node(), "os": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # noqa: BLE001
        info["gpu"] = "unknown"
    return info


def machine_line(m: Mapping) -> str:
    mem = f", {m['memory_gb']} GB RAM" if m.get("memory_gb") else ""
    return (f"{m.get('cpu') or 'CPU'} ({m.get('cores')} cores{mem}), GPU: {m.get('gpu')}, {m.get('os')}, "
            f"Python {m.get('python')}, torch {m.get('torch', '?')} (host {m.get('host')})")


# ---- the comparison with the paper, in words -------------------------------------------------------
def _fmt(v) -> str:
    return "n/a" if v is None or pd.isna(v) else f"{v:.1f}"


def _ci_overlap(a: pd.Series, b: pd.Series) -> bool | None:
    if pd.isna(a.get("avg_lo")) or pd.isna(b.get("avg_lo")):
        return None
    return not (a["avg_lo"] > b["avg_hi"] or b["avg_lo"] > a["avg_hi"])


def _order(values: pd.Series) -> str:
    """'A 3.0 > B 2.0 = C 2.0' (values sorted, ties joined by '=')."""
    out, prev = "", None
    for m, v in values.items():
        sep = "" if prev is None else (" = " if round(v, 1) == round(prev, 1) else " > ")
        out += f"{sep}{LABELS.get(m, m)} {v:.1f}"
        prev = v
    return out


SMOKE_CAVEAT = ("preset=smoke is a check that every path runs (a few steps of a small model), not a comparison: "
                "the orderings below say nothing about the methods. `preset=mini` is the comparison.")


def smoke_caveat(preset: str) -> list[str]:
    """The line that comes first in a smoke reproduce's comparison (its verdicts would otherwise alarm)."""
    return [SMOKE_CAVEAT] if preset == "smoke" else []


# holds(a, b): whether "a ranks above b" holds by orderings.md's rule (both intervals exclude zero); None when the
# pair was not checked. Given, a sentence that claims an ordering says whether it holds instead of reading the
# tables' intervals over seeds (a bootstrap of three seeds is narrower than the t interval the rule uses).
Holds = Callable[[str, str], "bool | None"]


def _held(holds: Holds | None, a: str, b: str) -> str:
    """'holds' / 'is **not resolved**' for "a above b" by orderings.md, '' when not checked."""
    v = holds(a, b) if holds else None
    return "" if v is None else ("holds" if v else "is **not resolved**")


def compare_main(df: pd.DataFrame, holds: Holds | None = None) -> list[str]:
    """Where our Table 1 ordering agrees with the paper's (by the average over benchmarks)."""
    d = df.set_index("method")
    ours = d["avg"].dropna().sort_values(ascending=False, kind="stable")
    if ours.empty:
        return []
    lines = ["Ordering by average accuracy (ours): " + _order(ours)]
    common = [m for m in ours.index if paper.paper_avg(m) is not None]
    paper_order = sorted(common, key=lambda m: -paper.paper_avg(m))
    lines.append("The paper's ordering of the same methods: "
                 + _order(pd.Series({m: paper.paper_avg(m) for m in paper_order})))
    pairs = [(a, b) for i, a in enumerate(paper_order) for b in paper_order[i + 1:]
             if paper.paper_avg(a) != paper.paper_avg(b)]
    agree = [(a, b) for a, b in pairs if ours[a] > ours[b]]
    if pairs:
        lines.append(f"Pairs ordered as in the paper{' (point estimates)' if holds else ''}: {len(agree)} of "
                     f"{len(pairs)}; reversed or tied: "
                     + (", ".join(f"{LABELS.get(a, a)} vs {LABELS.get(b, b)}" for a, b in pairs if (a, b) not in agree)
                        or "none") + ".")
    if "trapo" in ours.index and len(ours) > 1:  # TRAPO alone (a partial table) is highest of nothing
        best = ours.max()
        top = [m for m in ours.index if ours[m] == best]
        others = [m for m in ours.index if m != "trapo"]
        if top == ["trapo"]:
            second = others[0] if others else None
            ov = _ci_overlap(d.loc["trapo"], d.loc[second]) if second else None
            held = _held(holds, "trapo", second) if second else ""
            lead = f"{ours['trapo'] - ours[second]:+.1f}" if second else ""
            lines.append("TRAPO has the highest average, as in the paper"
                         + (f"; its lead over {LABELS.get(second, second)} (the next, {lead}) {held} (orderings.md)"
                            if held else
                            f" (its 95% interval overlaps {LABELS.get(second, second)}'s)" if ov else
                            f" (95% intervals do not overlap with {LABELS.get(second, second)}'s)" if ov is False else "")
                         + ".")
        elif "trapo" in top:
            lines.append("TRAPO ties for the highest average with " + ", ".join(LABELS.get(m, m) for m in top
                                                                                if m != "trapo")
                         + f" ({best:.1f}); the paper has TRAPO alone on top (56.6).")
        else:
            lines.append(f"TRAPO does **not** have the highest average: {LABELS.get(top[0], top[0])} "
                         f"{best:.1f} vs TRAPO {ours['trapo']:.1f} (the paper: TRAPO best with 56.6).")
    if "base" in ours.index:
        below = [m for m in ours.index if m != "base" and ours[m] < ours["base"]]
        if below:
            lines.append("Below the untrained base model (in the paper every method improves on it): "
                         + ", ".join(LABELS.get(m, m) for m in below) + ".")
    return lines


def _present(d: pd.DataFrame, *methods: str) -> bool:
    """Every one of `methods` is a row of `d` with an average (a partial table may have the row and no runs)."""
    return all(m in d.index and not pd.isna(d.loc[m, "avg"]) for m in methods)


def compare_ablation(df: pd.DataFrame, holds: Holds | None = None) -> list[str]:
    d = df.set_index("method")
    if d.empty:
        return []
    chain = [m for m in paper.ABLATION_AVG if m in d.index]
    lines = ["Ablation chain (ours vs the paper's average): "
             + " → ".join(f"{m} {_fmt(d.loc[m, 'avg'])} ({paper.ABLATION_AVG[m]})" for m in chain)]
    # the collapse is a drop below GRPO: without both (a partial table) there is nothing to say about it
    if _present(d, "mg_sft", "grpo"):
        others = [m for m in chain if m != "mg_sft" and not pd.isna(d.loc[m, "avg"])]
        lowest = all(d.loc["mg_sft", "avg"] < d.loc[m, "avg"] for m in others)
        ref = d.loc["grpo", "avg"]
        drop = ref - d.loc["mg_sft", "avg"]
        verdict = holds("grpo", "mg_sft") if holds else None  # orderings.md: True holds, False not resolved
        if lowest and drop > 0 and verdict is False:  # e.g. one seed: a drop, not yet an ordering
            lines.append(f"The plain-SFT variant (mg_sft) is the lowest of the chain, {_fmt(drop)} points below GRPO "
                         "(paper: 32.3 vs 50.4, 18.1 points below); that GRPO ranks above it is **not resolved** "
                         "(orderings.md), so the collapse is not established.")
        elif lowest and drop > 0:
            lines.append(f"The plain-SFT variant (mg_sft) is the lowest of the chain, {_fmt(drop)} points below GRPO: "
                         "the collapse is reproduced (paper: 32.3 vs 50.4, 18.1 points below)"
                         + ("; the difference holds (orderings.md)." if verdict else ".")
                         if drop >= 5 else
                         f"The plain-SFT variant (mg_sft) is the lowest of the chain but only {_fmt(drop)} points "
                         "below GRPO: no clear collapse (paper: 18.1 points below).")
        else:
            above = [m for m in others if d.loc["mg_sft", "avg"] > d.loc[m, "avg"]]
            held = [m for m in above if holds and holds("mg_sft", m)]
            lines.append("The plain-SFT variant (mg_sft) does **not** collapse here: it is not the lowest of the chain "
                         f"(mg_sft {_fmt(d.loc['mg_sft', 'avg'])}, GRPO {_fmt(ref)}; paper 32.3 vs 50.4)"
                         + (f"; its lead over {', '.join(held)} holds (orderings.md)" if held else "") + ".")
    if _present(d, "trapo", "mg_luffy"):
        t, lf = round(d.loc["trapo", "avg"], 1), round(d.loc["mg_luffy", "avg"], 1)
        held = _held(holds, *(("trapo", "mg_luffy") if t > lf else ("mg_luffy", "trapo"))) if t != lf else ""
        lines.append(("TrSFT beats LUFFY's shaping on the prefixes" if t > lf else
                      "TrSFT ties with LUFFY's shaping on the prefixes" if t == lf else
                      "TrSFT does **not** beat LUFFY's shaping on the prefixes")
                     + f" ({_fmt(d.loc['trapo', 'avg'])} vs {_fmt(d.loc['mg_luffy', 'avg'])}; paper 56.6 vs 53.6)"
                     + (f"; the difference {held} (orderings.md)" if held else "") + ".")
    return lines


# ---- README files -----------------------------------------------------------------------------------
def section(manifest: Mapping, out_dir: Path, link_base: Path, level: int = 2) -> str:
    """A README section for one output dir; links are relative to `link_base`."""
    h = "#" * level
    rel = os.path.relpath(out_dir, link_base)
    g = manifest["git"]
    lines = [f"{h} `{manifest['preset']}` preset — {manifest['date']}", "",
             f"- command: `{manifest['command']}`",
             f"- date: {manifest['date']} (wall time {manifest['seconds']:.0f} s; runs trained {manifest['n_trained']}, "
             f"reused {manifest['n_reused']}"
             + (f", re-evaluated from a finished run's weights {manifest['n_reevaluated']}"
                if manifest.get("n_reevaluated") else "")
             + (f", missing {manifest['n_missing']}" if manifest.get("n_missing") else "") + ")",
             f"- machine: {machine_line(manifest['machine'])}",
             f"- git: `{g['commit']}` on `{g['branch']}`" + (" (with uncommitted changes)" if g["dirty"] else ""),
             f"- seeds: {manifest['seeds']}; cells are mean [95% bootstrap interval over seeds] in percent"
             + ("" if len(manifest["seeds"]) > 1 else " (one seed: the value alone)")
             + (f"; {manifest['eval_n']:,} problems an evaluation split" if manifest.get("eval_n") else ""),
             f"- MLflow: experiment `{manifest['experiment']}` at `{manifest['tracking_uri']}`; run dirs under "
             f"`{manifest['run_root']}`", ""]
    if manifest.get("comparison"):
        lines += [f"{h}# Against the paper", ""] + [f"- {s}" for s in manifest["comparison"]] + [""]
    if manifest.get("orderings"):
        lines += [f"{h}# Which orderings hold ([orderings.md]({rel}/orderings.md))",
                  ""] + [f"- {s}" for s in manifest["orderings"]] + [""]
    for t in manifest["tables"]:
        files = ", ".join(f"[{Path(f).suffix[1:]}]({rel}/{Path(f).name})" for f in t["files"])
        lines += [f"{h}# {t['title']}", "", f"{t['caption']} Files: {files}. Made by: `{manifest['command']}`.", "",
                  (out_dir / f"{t['name']}.md").read_text() if (out_dir / f"{t['name']}.md").exists() else "", ""]
    if manifest["figures"]:
        lines += [f"{h}# Figures", ""]
        for f in manifest["figures"]:
            lines += [f"**{f['title']}** — {f['caption']} Made by: `{manifest['command']}`.", "",
                      f"![{f['title']}]({rel}/{Path(f['file']).name})", ""]
    if manifest.get("notes"):
        lines += [f"{h}# Notes", ""] + [f"- {n}" for n in manifest["notes"]] + [""]
    return "\n".join(lines)


def write_output_readme(manifest: Mapping, out_dir: Path) -> Path:
    text = ["# Reproduction results", "",
            "Generated by `experiments/reproduce.py` (docs/reproduce.md); do not edit by hand.", "",
            section(manifest, out_dir, out_dir)]
    path = out_dir / "README.md"
    path.write_text("\n".join(text))
    return path


def write_index(index: Path, manifests: Sequence[tuple[Path, Mapping]]) -> Path:
    """results/README.md: every output dir under results/ with its command, date, machine and commit."""
    order = {"paper": 0, "mini": 1, "smoke": 2}
    manifests = sorted(manifests, key=lambda x: (order.get(x[1].get("preset"), 9), str(x[0])))
    lines = ["# Results", "",
             "Generated by `experiments/reproduce.py` from each `results/<preset>/manifest.json`; do not edit by hand. "
             "Each section states the exact command that produced its tables and figures, when, on which machine and "
             "at which git commit. Rerunning the command reuses finished runs (MLflow tag `config_hash`) and only "
             "trains what is missing (docs/reproduce.md).", ""]
    lines += ["| preset | date | command | commit |", "|---|---|---|---|"]
    for d, m in manifests:
        lines.append(f"| [{m['preset']}]({os.path.relpath(d, index.parent)}/README.md) | {m['date']} | "
                     f"`{m['command']}` | `{m['git']['commit'][:10]}`{' (dirty)' if m['git']['dirty'] else ''} |")
    lines.append("")
    for d, m in manifests:
        lines.append(section(m, d, index.parent))
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text("\n".join(lines))
    return index


def collect_manifests(results_dir: Path) -> list[tuple[Path, dict]]:
    out = []
    for p in sorted(results_dir.glob("*/manifest.json")):
        try:
            out.append((p.parent, json.loads(p.read_text())))
        except (OSError, json.JSONDecodeError):
            continue
    return out
