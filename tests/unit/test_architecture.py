"""The layers import one way: evaluation/ <- trapo/ <- baselines/ <- experiments/ (and hydra_plugins/, beside it).

Every import of every .py file counts, those inside functions too (a lazy import is still a dependency): its
AST is walked, relative imports resolved, and each import becomes an edge to the deepest module of the repo it
names. A layer may import only the layers below it, and the modules of trapo/ import each other without a cycle.
The walker is tested on a planted tree first, so that a green run means something.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# what each layer may import (besides itself), bottom first; hydra_plugins/ (the Optuna sweeper) sits beside
# experiments/: the experiment scripts use it, and it imports trapo/ (trapo.tracking)
ALLOWED = {
    "evaluation": (),
    "trapo": ("evaluation",),
    "baselines": ("evaluation", "trapo"),
    "experiments": ("evaluation", "trapo", "baselines", "hydra_plugins"),
    "hydra_plugins": ("evaluation", "trapo", "baselines"),
}
LAYERS = tuple(ALLOWED)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path, packages=LAYERS) -> dict[str, Path]:
    """module name -> file, for every .py file under the given top-level folders of `root`."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")) if (root / pkg).is_dir() else []:
            out[module_name(root, path)] = path
    return out


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The repo modules `name` imports anywhere in its file (module level or inside functions), each resolved
    to the deepest module that exists (`from trapo import losses` -> trapo.losses)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()

    def deepest(dotted: str) -> str | None:
        parts = dotted.split(".")
        while parts:
            cand = ".".join(parts)
            if cand in modules:
                return cand
            parts.pop()
        return None

    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{a.name}" if base else a.name for a in node.names]
        for dotted in names:
            target = deepest(dotted)
            if target is not None and target != name:
                targets.add(target)
    return targets


def import_graph(root: Path = ROOT, packages=LAYERS) -> dict[str, set[str]]:
    modules = find_modules(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_of(module: str) -> str:
    return module.split(".")[0]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a layer that `ALLOWED` does not allow."""
    bad = []
    for mod, targets in sorted(graph.items()):
        for t in sorted(targets):
            a, b = layer_of(mod), layer_of(t)
            if a != b and b not in ALLOWED[a]:
                bad.append(f"{mod} imports {t} ({a}/ may not import {b}/)")
    return bad


def cycles(graph: dict[str, set[str]], within: str) -> list[list[str]]:
    """The import cycles among the modules of one layer: strongly connected components of more than one module
    (Tarjan's algorithm)."""
    nodes = sorted(m for m in graph if layer_of(m) == within)
    edges = {m: sorted(t for t in graph[m] if layer_of(t) == within) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def reaches(graph: dict[str, set[str]], a: str, b: str) -> bool:
    seen, todo = set(), [a]
    while todo:
        m = todo.pop()
        if m == b:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return False


# ---- the walker finds what is planted -------------------------------------------------------------------
def _plant(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_walker_finds_planted_violations_and_cycles(tmp_path):
    _plant(tmp_path, {
        "evaluation/__init__.py": "",
        "evaluation/grader.py": "def f():\n    from trapo.losses import policy_loss\n",  # lazy, still counts
        "evaluation/ok.py": "from evaluation import grader\nfrom .grader import f\n",
        "trapo/__init__.py": "",
        "trapo/losses.py": "import evaluation.ok\n",
        "trapo/config.py": "from trapo import losses\n\ndef g():\n    from trapo.trainer import x\n",
        "trapo/trainer.py": "from .config import g\n",
        "trapo/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from experiments import run\n",
        "trapo/engines/__init__.py": "",
        "trapo/engines/local.py": "from ..losses import policy_loss\nfrom baselines.relift import step\n",
        "baselines/__init__.py": "",
        "baselines/relift.py": "import trapo.trainer\nimport experiments.report.jobs\n",
        "experiments/__init__.py": "",
        "experiments/report/__init__.py": "",
        "experiments/report/jobs.py": "import baselines.relift, trapo.config, evaluation.grader\n",
        "experiments/run.py": "import hydra_plugins.sweeper\n",
        "hydra_plugins/__init__.py": "",
        "hydra_plugins/sweeper.py": "import trapo.config\n\ndef f():\n    import experiments.run\n",
    })
    graph = import_graph(tmp_path)
    assert graph["evaluation.ok"] == {"evaluation.grader"}  # relative and package-attribute imports resolve
    assert graph["trapo.config"] == {"trapo.losses", "trapo.trainer"}
    assert graph["trapo.engines.local"] == {"trapo.losses", "baselines.relift"}
    assert graph["trapo.typed"] == set()  # TYPE_CHECKING imports do not run
    assert layer_violations(graph) == [
        "baselines.relift imports experiments.report.jobs (baselines/ may not import experiments/)",
        "evaluation.grader imports trapo.losses (evaluation/ may not import trapo/)",
        "hydra_plugins.sweeper imports experiments.run (hydra_plugins/ may not import experiments/)",
        "trapo.engines.local imports baselines.relift (trapo/ may not import baselines/)",
    ]
    assert cycles(graph, "trapo") == [["trapo.config", "trapo.trainer"]]
    assert reaches(graph, "trapo.config", "trapo.trainer") and reaches(graph, "trapo.trainer", "trapo.config")


# ---- the repository -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph():
    g = import_graph(ROOT)
    assert {"trapo.trainer", "trapo.config", "trapo.rl_step", "evaluation.runner", "experiments.report.jobs"} <= set(g)
    return g


def test_layers_import_one_way(graph):
    """evaluation/ imports nothing of the rest; trapo/ nothing of baselines/ or experiments/; baselines/ nothing of
    experiments/."""
    bad = layer_violations(graph)
    assert bad == [], "\n".join(bad)


def test_evaluation_is_a_leaf(graph):
    outside = {t for m, ts in graph.items() if layer_of(m) == "evaluation" for t in ts if layer_of(t) != "evaluation"}
    assert outside == set()


def test_no_import_cycle_inside_trapo(graph):
    assert cycles(graph, "trapo") == []
    assert not (reaches(graph, "trapo.config", "trapo.trainer") and reaches(graph, "trapo.trainer", "trapo.config"))


@pytest.mark.parametrize("layer", ["evaluation", "experiments", "baselines"])
def test_no_import_cycle_inside_the_other_layers(graph, layer):
    assert cycles(graph, layer) == []


def calls_of(path: Path, names: set[str]) -> set[str]:
    """The functions of `names` that a file calls (as `f(...)` or `mod.f(...)`)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in names:
                out.add(name)
    return out


def test_the_rl_step_glue_is_one_module(graph):
    """The trainer, the engines and the benchmark call trapo.rl_step for the step's glue (advantages from rewards
    and groups, the Dr.GRPO normaliser, LUFFY's prefix scale, the loss diagnostics) instead of writing it again:
    group advantages are computed there only."""
    for mod in ("trapo.trainer", "trapo.engines.local", "trapo.engines.openrlhf.agent", "trapo.engines.openrlhf.actor",
                "trapo.engines.openrlhf.mlflow_logger", "experiments.benchmark_systems"):
        assert "trapo.rl_step" in graph[mod], mod
    modules = find_modules(ROOT, ("trapo", "experiments"))
    computing = sorted(m for m, path in modules.items() if calls_of(path, {"group_advantages"}))
    assert computing == ["trapo.rl_step"]


def test_the_trainer_and_the_actor_name_no_baseline():
    """A baseline plugs into the RL step through step hooks (trapo/hooks.py) its runner hands over: the TRAPO trainer
    and the OpenRLHF actor neither import baselines/ nor name a baseline runner (sft is also a phase of the trainer)."""
    from baselines import RUNNERS

    words = {r for r in RUNNERS if r != "sft"} | {"baselines"}
    for rel in ("trapo/trainer.py", "trapo/engines/openrlhf/actor.py"):
        text = (ROOT / rel).read_text().lower()
        named = sorted(w for w in words if w in text)
        assert named == [], f"{rel} names {named}"
    nothing_above = {m for m, ts in import_graph(ROOT).items() if layer_of(m) == "trapo" for t in ts
                     if layer_of(t) == "baselines"}
    assert nothing_above == set()


def test_engines_import_the_algorithm_not_the_recipe(graph):
    """What an engine and the recipe both need lies below both (the data order in trapo/data/order.py, the schedules
    in trapo/guidance.py, the evaluation metrics in evaluation/runner.py): no engine imports the trainer, and only
    the OpenRLHF launcher imports trapo.config (to check a user's config before a job starts)."""
    engines = {m: ts for m, ts in graph.items() if m.startswith("trapo.engines")}
    assert sorted(m for m, ts in engines.items() if "trapo.trainer" in ts) == []
    assert sorted(m for m, ts in engines.items() if "trapo.config" in ts) == ["trapo.engines.openrlhf.launch"]


KINDS = {"unit": "the algorithm, configs and scripts' pure parts, in milliseconds to seconds",
         "engine": "the local engine: sampling, the update, devices and dtypes",
         "openrlhf_engine": "the OpenRLHF engine on CPU (the `openrlhf` marker; its stubs and support module)",
         "grader": "evaluation/: answer extraction and grading, benchmarks, metrics, the evaluation loop",
         "e2e": "whole commands: runs, resume, reproduce, sweeps, the README, benchmarks and cross-checks"}


def test_tests_are_laid_out_by_kind():
    """Every test module sits in the folder of its kind, and no two share a name (pytest imports them by name)."""
    tests = ROOT / "tests"
    found = sorted(tests.rglob("test_*.py"))
    assert found, "no test modules found"
    misplaced = [str(p.relative_to(tests)) for p in found
                 if p.parent.parent != tests or p.parent.name not in KINDS]
    assert not misplaced, f"test modules outside tests/<kind>/ ({', '.join(KINDS)}): {misplaced}"
    names = [p.name for p in found]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
    openrlhf = [p.name for p in found if p.name.startswith("test_openrlhf") and p.parent.name != "openrlhf_engine"]
    assert not openrlhf, openrlhf
