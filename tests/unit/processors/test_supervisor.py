"""The supervisor's workers: how a derived role's worker yields the cores."""

from __future__ import annotations

import os
import sys

import pytest

from processors.supervisor import Worker

REPORT = "import os; print(os.sched_getscheduler(0), os.nice(0))"


def report(idle: bool, nice: int, capfd: pytest.CaptureFixture[str]) -> list[int]:
    worker = Worker("features", 0, [sys.executable, "-c", REPORT], nice, idle)
    worker.start()
    assert worker.process is not None
    assert worker.process.wait(timeout=30) == 0
    return [int(part) for part in capfd.readouterr().out.split()]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_an_idle_worker_runs_under_sched_idle(capfd: pytest.CaptureFixture[str]) -> None:
    policy, _ = report(True, 10, capfd)
    assert policy == os.SCHED_IDLE


def test_a_worker_that_is_not_idle_runs_niced(capfd: pytest.CaptureFixture[str]) -> None:
    policy, nice = report(False, 7, capfd)
    assert policy == os.SCHED_OTHER
    assert nice == os.nice(0) + 7
