"""The profile summaries: shares computed from collapsed stacks; py-spy found."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cbir.bench.profiles import Profiler, summarise

FOLDED = """\
process 1:worker;main (app.py:10);handle (stage.py:20);upsert (vector_index.py:30) 60
process 1:worker;main (app.py:10);handle (stage.py:21);decode (codec.py:5) 30
process 1:worker;main (app.py:10);idle (loop.py:1) 10
not a stack line
"""


def test_shares_are_inclusive_and_self_with_lines_merged() -> None:
    text = summarise(FOLDED, "worker")
    assert "100 samples" in text
    inclusive = text.split("## self")[0]
    assert "100.0%  main (app.py)" in inclusive
    assert " 90.0%  handle (stage.py)" in inclusive  # two lines of one function, merged
    own = text.split("## self")[1].split("## hottest")[0]
    assert " 60.0%  upsert (vector_index.py)" in own
    assert " 10.0%  idle (loop.py)" in own
    assert "main (app.py)" not in own


def test_no_samples_says_so() -> None:
    assert "no samples" in summarise("", "idle")


def test_py_spy_is_found_beside_this_python_without_the_venv_on_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # as `.venv/bin/cbir bench ...` runs it
    found = Profiler.executable()
    assert found == str(Path(sys.executable).parent / "py-spy")
    assert Path(found).exists()
