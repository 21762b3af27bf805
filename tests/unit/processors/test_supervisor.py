"""The supervisor's workers: a derived role's worker yields the cores."""

from __future__ import annotations

import os
import sys

import pytest

from processors.supervisor import Worker


def test_a_worker_runs_at_its_added_niceness(capfd: pytest.CaptureFixture[str]) -> None:
    worker = Worker("features", 0, [sys.executable, "-c", "import os; print(os.nice(0))"], 7)
    worker.start()
    assert worker.process is not None
    assert worker.process.wait(timeout=30) == 0
    assert int(capfd.readouterr().out) == os.nice(0) + 7
