"""Supervision: the watchdog that `cbir stack up` starts restarts a server killed with
SIGKILL, counts it, and `cbir stack down` stops it first; the watchdog of a stack with an
owner stops it when the owner is gone."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from cbir.settings import Settings, side_by_side
from cbir.stack.launcher import Launcher
from tests.integration.conftest import TEST_PORT_OFFSET
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration
OWNED_STACK_OFFSET = TEST_PORT_OFFSET + 500  # beside the test stack: Redis alone


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


def test_a_stack_whose_owner_is_gone_is_stopped_by_its_watchdog(
    settings: Settings, tmp_path: Path
) -> None:
    """A benchmark killed mid-run (SIGKILL: no `finally`) leaves nothing running: here a
    one-service stack of its own, owned by a process that is then killed."""
    owner = subprocess.Popen(["sleep", "600"])
    moved = side_by_side(
        settings, OWNED_STACK_OFFSET, tmp_path / "data", settings.triton.model_repository
    )
    stack = moved.stack.model_copy(update={"owner_pid": owner.pid, "supervise": True})
    launcher = Launcher(moved.model_copy(update={"stack": stack}))
    redis = launcher.service("redis")
    try:
        launcher._start(redis)
        launcher._wait_ready(redis)
        launcher.start_watchdog()
        watchdog = launcher.watchdog.pid
        assert watchdog is not None
        owner.kill()
        owner.wait()
        wait_for(lambda: redis.process.record() is None, 90, "the watchdog to stop Redis")
        wait_for(lambda: launcher.watchdog.record() is None, 30, "the watchdog to exit")
        assert "owner gone" in launcher.watchdog.log_file.read_text()
    finally:
        owner.kill()
        launcher.down()
