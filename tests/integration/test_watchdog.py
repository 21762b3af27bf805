"""Supervision: the watchdog that `cbir stack up` starts restarts a server killed with
SIGKILL, counts it, and `cbir stack down` stops it first."""

from __future__ import annotations

import os
import signal

import pytest

from local_stack.launcher import Launcher
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


def test_a_killed_server_is_restarted_by_the_watchdog_and_counted(launcher: Launcher) -> None:
    redis = launcher.service("redis")
    before = {s.name: s.restarts for s in launcher.status()}
    launcher.start_watchdog()
    try:
        old = redis.process.pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: redis.process.pid not in (None, old), 60, "the watchdog to restart Redis")
        wait_for(
            lambda: launcher._state(redis).health == "healthy", 60, "Redis to be healthy again"
        )
        # counted once the watchdog has seen it ready too
        wait_for(
            lambda: launcher._state(redis).restarts == before["redis"] + 1,
            60,
            "the restart to be counted",
        )
        after = {s.name: s.restarts for s in launcher.status()}
        assert after["redis"] == before["redis"] + 1
        assert {k: v for k, v in after.items() if k != "redis"} == {
            k: v for k, v in before.items() if k != "redis"
        }
        log = launcher.watchdog.log_file.read_text()
        assert "event=restarted service=redis" in log or '"service": "redis"' in log
    finally:
        launcher.stop_watchdog()
    assert launcher.watchdog.record() is None
