"""Waiting for the pipeline, shared by the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil

from cbir.adapters import metadata_store
from cbir.settings import Settings
from cbir.stack.launcher import Launcher
from processors import WORKER_ROLE


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def rows(settings: Settings, image_ids: set[str]) -> dict[str, dict[str, object]]:
    with metadata_store.connect(settings.mysql) as conn:
        return metadata_store.lookup(conn, sorted(image_ids))


def indexed(settings: Settings, image_ids: set[str]) -> int:
    return sum(r["status"] == "indexed" for r in rows(settings, image_ids).values())


def role_workers(launcher: Launcher, role: str) -> list[psutil.Process]:
    """The processors supervisor's workers of one role (`cbir.wiring.consumer_roles`)."""
    pid = launcher.service("processors").process.pid
    assert pid is not None, "the processors are not running"
    return [
        child
        for child in psutil.Process(pid).children()
        if child.environ().get(WORKER_ROLE) == role
    ]
