"""Every command block of README.md, run as written in a copy of the repository, in one bash session (a user's
terminal after the set-up), with a `.venv` of its own and nothing of the test's own environment on PATH: a bare
`python` without the README's activation, or a missing `.venv/bin/` prefix, fails here as it does for a user.

The `.venv` is a fresh venv layered over the installed packages (a .pth file; console scripts copied with their
shebang pointing at the new venv): `bash scripts/install.sh` itself is what CI (.ci/run) runs just before the
suite. Long commands run as smoke variants (SMOKE, printed); commands that need what CI has not (a Ray cluster,
the Hugging Face hub) are listed in OFFLINE and skipped with the reason printed.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# command prefix -> how the block runs it here (a function of the command as written)
SMOKE = {
    "bash scripts/install.sh": (lambda c: "true", "the venv is made by the test; CI runs scripts/install.sh itself"),
    "python experiments/run.py -m method=": (lambda c: f"{c} preset=smoke", "smoke preset"),
    "python -m pytest": (lambda c: f"{c} --collect-only", "collected only: CI runs the suite itself"),
    ".venv/bin/mlflow ui": (lambda c: f"serve_briefly {c}", "started, /health answered, stopped"),
    "python scripts/prepare_openr1.py": (lambda c: "python scripts/prepare_openr1.py --help", "needs the hub"),
}
OFFLINE = {"engine.ray_address=http://<head>": "needs a Ray cluster"}

SERVE = r'''
serve_briefly() {  # start a server command on a free port, wait for /health, stop it
    "$@" --port "$PORT" > serve.log 2>&1 &
    local pid=$!
    for _ in $(seq 120); do
        if python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=2)" 2>/dev/null; then
            kill $pid; wait $pid 2>/dev/null || true; echo "served on port $PORT"; return 0
        fi
        kill -0 $pid 2>/dev/null || { cat serve.log; return 1; }
        sleep 1
    done
    kill $pid; cat serve.log; return 1
}
'''


def readme_blocks() -> list[list[str]]:
    """The commands of each ```bash block (continuation lines joined, comments and blank lines dropped)."""
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        cmds = [line.split("  #")[0].strip() for line in body.replace("\\\n", " ").splitlines()]
        blocks.append([c for c in cmds if c and not c.startswith("#")])
    return blocks


def as_run_here(cmd: str) -> tuple[str, str | None]:
    """(what runs, why it differs from the README or None)."""
    for key, why in OFFLINE.items():
        if key in cmd:
            return f"echo {shq('skipped (' + why + '): ' + cmd)}", why
    if " && " in cmd:  # e.g. `install && activate && run`: each part on its own
        parts = [as_run_here(part) for part in cmd.split(" && ")]
        whys = [w for _, w in parts if w]
        return " && ".join(h for h, _ in parts), "; ".join(whys) or None
    for prefix, (variant, why) in SMOKE.items():
        if cmd.startswith(prefix):
            return variant(cmd), why
    return cmd, None


def copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def layered_venv(venv: Path) -> None:
    """A new venv that sees the installed packages, with the console scripts (mlflow, pytest, ...) of its own."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "_installed.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    outer_bin = Path(sys.prefix) / "bin"
    for script in outer_bin.iterdir():
        if script.name.startswith(("python", "activate", "Activate", "pip")) or not script.is_file():
            continue
        try:
            text = script.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        first, _, rest = text.partition("\n")
        if first.startswith("#!") and str(outer_bin) in first:
            (venv / "bin" / script.name).write_text(f"#!{venv / 'bin' / 'python'}\n{rest}")
            (venv / "bin" / script.name).chmod(0o755)


def user_env(tmp: Path) -> dict[str, str]:
    """The environment of a new terminal: no venv on PATH, no PYTHONPATH, the test's MLflow store unset."""
    venv_bins = {str(Path(sys.prefix) / "bin"), os.path.join(os.environ.get("VIRTUAL_ENV", "/nonexistent"), "bin")}
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "MLFLOW_TRACKING_URI", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p not in venv_bins)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        env["PORT"] = str(s.getsockname()[1])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", HOME=env.get("HOME", str(tmp)))
    return env


def run_script(clone: Path, lines: list[str], env: dict[str, str], timeout: int = 1200):
    script = "\n".join(["set -euo pipefail", SERVE, *lines])
    return subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def clone(tmp_path):
    dest = tmp_path / "trapo"
    copy_repo(dest)
    layered_venv(dest / ".venv")
    return dest


def test_readme_has_the_blocks_this_test_knows():
    blocks = readme_blocks()
    assert blocks and blocks[0][0].startswith("bash scripts/install.sh")
    used = {p for b in blocks for c in b for p in SMOKE if p in c} | {k for b in blocks for c in b for k in OFFLINE
                                                                     if k in c}
    assert used == set(SMOKE) | set(OFFLINE), f"stale smoke variants: {set(SMOKE) | set(OFFLINE) - used}"


@pytest.mark.slow
def test_every_readme_block_runs_as_written(clone):
    env = user_env(clone)
    lines, notes = [], []
    for block in readme_blocks():
        for cmd in block:
            here, why = as_run_here(cmd)
            if why:
                notes.append(f"{cmd}\n    -> {here} ({why})")
            lines += [f"echo {shq('$ ' + here)}", here]
    print("README commands run as smoke variants or skipped:\n" + "\n".join(notes))
    res = run_script(clone, lines, env)
    assert res.returncode == 0, (res.stdout[-4000:] + "\n--- stderr ---\n" + res.stderr[-6000:])
    out = res.stdout + res.stderr
    assert "served on port" in out  # the mlflow ui block
    assert "eval/avg_accuracy=" in out  # the set-up's training runs finished
    assert (clone / "mlflow.db").exists()  # the default store the README's `mlflow ui` block opens


def test_a_bare_python_without_the_venv_fails_here(clone):
    """The harness can fail: the same session without `. .venv/bin/activate` has no hydra on its PATH."""
    env = user_env(clone)
    probe = run_script(clone, ["python -c 'import hydra'"], env, timeout=120)
    if probe.returncode == 0:
        pytest.skip(f"the `python` on PATH without a venv has hydra installed ({shutil.which('python', path=env['PATH'])})")
    res = run_script(clone, ["python experiments/run.py --help"], env, timeout=120)
    assert res.returncode != 0
    res = run_script(clone, [". .venv/bin/activate", "python experiments/run.py --help"], env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def shq(s: str) -> str:
    import shlex

    return shlex.quote(s)
