"""experiments/reproduce.py's work: plan the runs, reuse or run them, write tables, figures and READMEs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

from experiments.report import figures as figs
from experiments.report import paper_numbers as paper
from experiments.report import readme
from experiments.report import tables as tab
from experiments.report.jobs import Reproducer
from experiments.report.plan import ROOT, Job, alpha_label, build_jobs, plan_specs
from experiments.report.store import RunResult, Store
from trapo.rl_step import is_adaptive, logs_guidance


def _p(msg: str) -> None:
    print(msg, flush=True)


def benchmarks_of(rcfg, cfg) -> list[str]:
    """The tables' columns: reproduce's `benchmarks` when set, else what the run config evaluates: a generated task's
    splits (synthetic, word_problems), then any benchmark files beside them."""
    if rcfg.get("benchmarks"):
        return [str(b) for b in rcfg.benchmarks]
    splits = list(cfg.data.get("eval_splits") or {}) if cfg.data.kind in ("synthetic", "word_problems") else []
    return [str(b) for b in [*splits, *(cfg.data.get("eval_benchmarks") or [])]]


def scores(res: RunResult | None, benchmarks) -> dict[str, float]:
    """Percent per benchmark and their mean (`avg`) from a run's final metrics."""
    if res is None:
        return {}
    out = {b: 100 * float(res.final[f"eval/{b}/accuracy"]) for b in benchmarks if f"eval/{b}/accuracy" in res.final}
    if out and len(out) == len(benchmarks):
        out["avg"] = sum(out.values()) / len(out)
    return out


def _rel(p: Path | str | None) -> str | None:
    if p is None:
        return None
    p = Path(p).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def run(rcfg, command: str) -> dict:
    """Everything `python experiments/reproduce.py` does; returns the manifest (also written to output_dir)."""
    t_start = time.monotonic()
    specs = plan_specs(rcfg)
    paper_mode = str(rcfg.preset) == "paper"
    extra = None
    if paper_mode:
        from experiments.report import paper_runs

        extra = paper_runs.extra_overrides(rcfg)
    jobs, index = build_jobs(rcfg, specs, extra, fresh=None if rcfg.reuse else time.strftime("%Y%m%d-%H%M%S"))
    cfg0 = jobs[0].cfg
    benchmarks = benchmarks_of(rcfg, cfg0)
    _p(f"reproduce preset={rcfg.preset}: {len(specs)} (row, seed) cells -> {len(jobs)} distinct runs "
       f"(seeds {list(rcfg.seeds)}; benchmarks {', '.join(benchmarks)})")
    store = None
    if not (paper_mode and rcfg.dry_run):
        store = Store(str(rcfg.experiment))
    results: dict[str, RunResult] = {}
    if paper_mode:
        results = _paper(rcfg, jobs, benchmarks, store)
        if rcfg.dry_run:
            return {}
    else:
        rep = Reproducer(rcfg, store)
        try:
            if rcfg.dry_run:
                for job in jobs:
                    found = rep.lookup(job)
                    before = None if found else rep.trained_before(job)
                    if found:
                        what, how = "reuse", found.status
                    elif before:
                        what, how = "REEVAL", (f"evaluate the final weights of MLflow run {before[0].info.run_id[:8]} "
                                               f"({_rel(before[1])}) under this config")
                    else:
                        what, how = ("TRAIN" if job.kind == "train" else "EVAL"), job.command(rcfg)
                    _p(f"{what:6s} {job.name:28s} {job.hash[:12]}  {how}")
                return {}
            for i, job in enumerate(jobs, 1):
                _p(f"[{i}/{len(jobs)}] {job.name} ({', '.join(job.labels)}) ...")
                res = rep.run(job)
                results[job.hash] = res
                avg = scores(res, benchmarks).get("avg")
                _p(f"[{i}/{len(jobs)}] {job.name}: {res.status} in {res.seconds:.0f} s"
                   + (f", avg accuracy {avg:.1f}%" if avg is not None else "") + f"  ({_rel(res.run_dir)})")
        finally:
            rep.close()
    return write_outputs(rcfg, command, jobs, index, results, benchmarks, time.monotonic() - t_start, store)


def _paper(rcfg, jobs: list[Job], benchmarks, store) -> dict[str, RunResult]:
    from experiments.report import paper_runs

    results = {}
    cmds = [paper_runs.commands(rcfg, job, benchmarks) for job in jobs]
    if rcfg.dry_run:
        for pc in cmds:
            _p(paper_runs.describe(pc, "reuse" if paper_runs.finished(pc.job) else "to run"))
        _p(f"# dry run: {sum(not paper_runs.finished(pc.job) for pc in cmds)} of {len(cmds)} runs would be started; "
           "nothing was started")
        return results
    for i, pc in enumerate(cmds, 1):
        job = pc.job
        if paper_runs.finished(job) and rcfg.reuse:
            results[job.hash] = paper_runs.result_from_dir(job, "reused (run dir)", store)
        else:
            _p(f"[{i}/{len(cmds)}] {job.name}")
            results[job.hash] = paper_runs.run(rcfg, pc, store)
    return results


def _orderings(rcfg, out: Path, index, results, benchmarks, main, alphas):
    """orderings.csv/.md: the orderings the tables state, each with its intervals over problems and over seeds
    (experiments/report/orderings.py); returns the README's sentences and `holds(a, b)` for the comparisons."""
    from experiments.report import orderings as od

    seeds = [int(s) for s in rcfg.seeds]
    labels = list(dict.fromkeys([*rcfg.methods, *rcfg.ablation, *alphas]))

    def runs_of(label):
        return [results.get(index[(label, s)].hash) if (label, s) in index else None for s in seeds]

    avg = {lb: [scores(r, benchmarks).get("avg") if r else None for r in runs_of(lb)] for lb in labels}
    read: dict = {}  # one read of a run's rows, though several labels share the run (trapo, trapo@alpha=0.1)

    def rows_of(r):
        if r is None:
            return None
        if r.run_dir not in read:
            read[r.run_dir] = od.per_problem(r.run_dir, benchmarks)
        return read[r.run_dir]

    rows = {lb: [rows_of(r) for r in runs_of(lb)] for lb in labels}
    main_order = [m for m in main.sort_values("avg", ascending=False, kind="stable")["method"] if m in labels]
    checks = [od.compare(a, b, avg, rows, benchmarks) for a, b in od.pairs_to_check(main_order, list(rcfg.ablation),
                                                                                      list(alphas))]
    df = od.frame(checks)
    df.round(3).to_csv(out / "orderings.csv", index=False)
    names = {**tab.LABELS, **{k: k for k in alphas}}
    (out / "orderings.md").write_text(od.document(df, names))
    return od.sentences(df, names), od.holds_in(df)


def eval_n_of(cfg) -> int | None:
    """Problems per evaluation split of a run config (the task's `data.eval_n`; None where the splits are whole
    benchmark files)."""
    n = cfg.data.get("eval_n")
    return int(n) if n is not None else None


def write_outputs(rcfg, command: str, jobs: list[Job], index: Mapping[tuple[str, int], Job],
                  results: Mapping[str, RunResult], benchmarks, seconds: float, store) -> dict:
    out = Path(str(rcfg.output_dir))
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in rcfg.seeds]
    n_boot = int(rcfg.bootstrap)
    real = str(rcfg.preset) == "paper"

    def per_seed(label: str) -> list[dict]:
        return [scores(results.get(index[(label, s)].hash), benchmarks) for s in seeds if (label, s) in index]

    def of_label(label: str, attr: str) -> list:
        return [getattr(results.get(index[(label, s)].hash), attr, None) for s in seeds if (label, s) in index]

    bench_word = "benchmark" if real else "evaluation split"
    tables = []
    # a table whose rows are not asked for (methods=[] while one ablation run is made) is not written
    main = tab.table_main({m: per_seed(m) for m in rcfg.methods}, benchmarks, n_boot, real_benchmarks=real)
    if rcfg.methods:
        extra = [("paper_avg", "paper avg")] + ([(f"paper_{b}", f"paper {b}") for b in benchmarks] if real else [])
        shown = tab.display(main, [*benchmarks, "avg"], tab.LABELS, extra)
        cap = (f"Table 1: accuracy (%) per {bench_word} and their average; mean [95% bootstrap interval] over seeds "
               f"{seeds}; 'paper avg' is the paper's five-benchmark math average"
               + ("" if real else " (different benchmarks: compare orderings, not values)") + ".")
        tables.append(_table(out, "table_main", "Table 1 — main comparison", main, shown, cap))

    abl = tab.table_ablation({m: per_seed(m) for m in rcfg.ablation}, benchmarks, n_boot)
    if rcfg.ablation:
        shown = tab.display(abl, [*benchmarks, "avg"], tab.ABLATION_LABELS, [("paper_avg", "paper avg")])
        cap = ("The ablation chain: GRPO → + micro-group sampling with expert prefixes but no loss on them → + plain "
               "SFT loss on the prefixes (collapses in the paper) → LUFFY's shaping instead → TrSFT (TRAPO); "
               "accuracy (%).")
        tables.append(_table(out, "table_ablation", "Ablation chain", abl, shown, cap))

    alphas = {alpha_label(a): float(a) for a in (rcfg.alphas or [])}
    alpha_df = None
    if alphas:
        alpha_df = tab.table_alpha({lb: per_seed(lb) for lb in alphas}, alphas, benchmarks, n_boot)
        shown = tab.display(alpha_df, [*benchmarks, "avg"])
        cap = (f"TRAPO's final accuracy (%) against the trust region α of TrSFT (the paper uses α = {paper.ALPHA}; "
               "α → 0 is plain SFT on the prefixes, α = 1 DFT-style weighting).")
        tables.append(_table(out, "table_alpha", "Accuracy against α", alpha_df, shown, cap))

    trained_labels = list(dict.fromkeys([*(m for m in rcfg.methods if m != "base"), *rcfg.ablation]))
    dyn = tab.table_dynamics({lb: [h for h in of_label(lb, "history") if h is not None] for lb in trained_labels})
    if not dyn.empty:
        labels = {**tab.LABELS, **{m: tab.ABLATION_LABELS[m] for m in ("mg_prefix", "mg_sft", "mg_luffy")}}
        cap = ("Training dynamics: each metric's mean over the first 10 → the last 10 RL steps (maximum), mean over "
               "seeds; reward, entropy and length over the unguided samples, grad norm before clipping, expert "
               "p < α the share of expert tokens outside TrSFT's trust region (methods that train on them).")
        tables.append(_table(out, "table_dynamics", "Training dynamics", dyn, tab.display_dynamics(dyn, labels),
                             cap))

    figures = []
    if rcfg.figures:
        figures = _figures(rcfg, out, jobs, index, results, alpha_df, of_label)

    orderings, holds = _orderings(rcfg, out, index, results, benchmarks, main, alphas)

    runs = []
    for label, s in index:
        job = index[(label, s)]
        r = results.get(job.hash)
        runs.append({"label": label, "seed": s, "method": job.method, "status": r.status if r else "missing",
                     "config_hash": job.hash, "run_dir": _rel(r.run_dir if r and r.run_dir else job.run_dir),
                     "mlflow_run_id": r.run_id if r else None, "seconds": round(r.seconds, 1) if r else None,
                     **{f"acc_{k}": round(v, 2) for k, v in scores(r, benchmarks).items()}})
    import pandas as pd

    pd.DataFrame(runs).to_csv(out / "runs.csv", index=False)
    trained = sum(1 for r in results.values() if r.status in ("trained", "evaluated"))
    from trapo.tracking import tracking_uri

    index_path = Path(str(rcfg.index))
    # uncommitted changes, not counting the files this call rewrites (the output dir and the index)
    git = readme.git_info(exclude=[out, index_path])
    manifest = {
        "preset": str(rcfg.preset), "command": command, "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "seconds": seconds, "machine": readme.machine_info(), "git": git, "seeds": seeds,
        "benchmarks": benchmarks, "experiment": str(rcfg.experiment), "tracking_uri": tracking_uri(),
        "run_root": _rel(rcfg.run_root), "eval_n": eval_n_of(jobs[0].cfg) if jobs else None, "n_trained": trained,
        "n_reused": sum(1 for r in results.values() if r.status.startswith("reused")),
        "n_reevaluated": sum(1 for r in results.values() if r.status.startswith("re-evaluated")),
        "n_missing": sum(1 for r in results.values() if r.status.startswith("missing")),
        "tables": tables, "figures": figures, "runs": "runs.csv",
        "comparison": (readme.smoke_caveat(str(rcfg.preset)) + readme.compare_main(main, holds)
                       + readme.compare_ablation(abl, holds)),
        "orderings": orderings,
        "notes": _notes(rcfg, real, jobs[0].cfg.model if jobs else None),
    }
    if manifest["n_missing"]:
        manifest["notes"].append(f"{manifest['n_missing']} runs were not found and not trained (missing=skip): "
                                 "their cells are empty and `n_seeds` in the CSVs counts the seeds each row has; "
                                 "runs.csv lists them as missing.")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    readme.write_output_readme(manifest, out)
    if _inside(out, index_path.parent):
        readme.write_index(index_path, readme.collect_manifests(index_path.parent))
    _p(f"wrote {len(tables)} tables and {len(figures)} figures to {out} in {seconds:.0f} s")
    for line in manifest["comparison"]:
        _p("  " + line)
    return manifest


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return path.resolve() != parent.resolve()
    except ValueError:
        return False


def _table(out: Path, name: str, title: str, numeric, shown, caption: str) -> dict:
    files = tab.write_table(numeric, shown, out, name, caption)
    return {"name": name, "title": title, "caption": caption, "files": [str(f.name) for f in files]}


def _figures(rcfg, out: Path, jobs, index, results, alpha_df, of_label) -> list[dict]:
    methods = [m for m in rcfg.methods if m != "base"]
    labels = list(dict.fromkeys([*methods, *rcfg.ablation]))
    histories = {lb: [h for h in of_label(lb, "history") if h is not None] for lb in labels}
    groups = [("Table 1 methods", methods), ("Ablation chain", list(rcfg.ablation))]
    made = []

    def add(path, title, caption):
        if path is not None:
            made.append({"file": path.name, "title": title, "caption": caption})

    unguided = "over the unguided samples of each step (samples without an expert prefix), mean over seeds (band: min-max)."
    add(figs.training_curve(histories, "train/reward_mean", "reward", "Training reward", groups,
                            out / "fig_reward.png"), "Training reward", "Mean reward " + unguided)
    add(figs.training_curve(histories, "train/response_length", "tokens", "Response length", groups,
                            out / "fig_response_length.png"), "Response length", "Mean response length " + unguided)
    add(figs.training_curve(histories, "train/entropy", "nats per token", "Policy entropy", groups,
                            out / "fig_entropy.png"), "Entropy", "Mean token entropy " + unguided)
    job_of = {lb: next((index[(lb, s)] for s in rcfg.seeds if (lb, s) in index), None) for lb in labels}
    prefixed = [lb for lb in labels if job_of[lb] is not None and logs_guidance(job_of[lb].cfg.method)]
    adaptive = [lb for lb in prefixed if is_adaptive(job_of[lb].cfg.method)]
    if prefixed:  # the alpha the runs counted p < alpha with (trapo's, else the first prefixed method's)
        alpha = float(job_of["trapo" if "trapo" in prefixed else prefixed[0]].cfg.method.alpha)
        add(figs.expert_tokens(histories, prefixed, alpha, out / "fig_expert_tokens.png"), "Expert tokens",
            "Mean probability of the expert (prefix / reference) tokens under the policy and the share with p < α, "
            "for the methods that train on expert tokens.")
    add(figs.guidance_levels(histories, adaptive, out / "fig_guidance_levels.png"), "Guidance levels",
        "Fraction of prompts at each guidance level per step (level i = the last micro-group that got a prefix), "
        "mean over seeds.")
    p = rcfg.passk or {}
    if p.get("split"):
        passk = {lb: of_label(lb, "passk") for lb in (p.get("methods") or [])}
        add(figs.pass_at_k(passk, str(p.split), out / "fig_pass_at_k.png"), "pass@k",
            f"Unbiased pass@k on {p.split} from {p.n_samples} samples per problem at temperature {p.temperature}, "
            "mean over seeds (bars: min-max).")
    if alpha_df is not None and len(alpha_df) > 1:
        add(figs.alpha_curve(alpha_df, out / "fig_alpha.png", paper.ALPHA), "Accuracy against α",
            "Average accuracy against TrSFT's α (table_alpha), 95% interval over seeds.")
    return made


def _notes(rcfg, real: bool, model=None) -> list[str]:
    notes = [f"The paper's numbers: {paper.SOURCE}, as listed in TRAPO-SPEC.md (experiments/report/paper_numbers.py); "
             "Table 1 states per-benchmark scores for TRAPO only."]
    if not real:
        # the runs' own model says what was trained (smollm2 is a real LM on the synthetic task, not a miniature)
        what = ("a miniature: a ~1M-parameter model built here" if model is None or model.get("kind") == "tiny"
                else f"the pretrained {model.get('name')} (a real LM, not the paper's 7B)")
        notes.append(f"preset={rcfg.preset} trains {what}, on the project's synthetic problems; the evaluation "
                     "splits stepsN (N-step problems) stand in for the five math benchmarks, so only orderings and "
                     "the ablation's shape are comparable with the paper, not values.")
    else:
        notes.append("The paper's AMC column is AMC 2022+2023 (83 problems); amc23 here is the 40-problem AMC23 set.")
    notes.append("Guidance levels of LUFFY are not shown: it has no adaptive prefixes (its reference solution is "
                 "an off-policy group member).")
    return notes
