"""The results manifest's `git.dirty`: uncommitted changes to tracked files, not counting the files the reproduce
call itself rewrites (results/<preset>/ and the index); before, every regenerated results/mini said "with uncommitted
changes" because its own tables differed from the committed ones."""

import subprocess

from experiments.report.readme import git_info


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_dirty_counts_tracked_changes_outside_the_regenerated_files(tmp_path):
    repo = tmp_path / "repo"
    (repo / "results" / "mini").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "results" / "mini" / "table.md").write_text("old\n")
    (repo / "results" / "README.md").write_text("index\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    out, index = repo / "results" / "mini", repo / "results" / "README.md"

    (out / "table.md").write_text("new\n")  # what the call writes
    index.write_text("new index\n")
    assert git_info(repo, exclude=[out, index])["dirty"] is False
    assert git_info(repo)["dirty"] is True

    (repo / "code.py").write_text("x = 2\n")  # the code the runs came from
    assert git_info(repo, exclude=[out, index])["dirty"] is True
    assert git_info(repo, exclude=[tmp_path / "elsewhere"])["dirty"] is True  # a path outside the repo is ignored
