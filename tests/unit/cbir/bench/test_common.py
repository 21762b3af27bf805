"""A result's provenance names the commit measured, dirty only when the code differs from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cbir.bench.common import commit


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_results_written_during_a_run_leave_the_commit_clean_and_code_does_not(
    tmp_path: Path,
) -> None:
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "query.md").write_text("old figures\n")
    (tmp_path / "engine.py").write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first")
    head = git(tmp_path, "rev-parse", "--short", "HEAD")
    assert commit(tmp_path) == head

    (tmp_path / "bench" / "results" / "query.md").write_text("new figures\n")
    (tmp_path / "bench" / "results" / "profile.txt").write_text("samples\n")
    assert commit(tmp_path) == head

    (tmp_path / "engine.py").write_text("x = 2\n")
    assert commit(tmp_path) == f"{head}-dirty"


def test_outside_a_repository_the_commit_is_unknown(tmp_path: Path) -> None:
    assert commit(tmp_path) == "unknown"
