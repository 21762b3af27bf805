"""The watchdog's owner check, and the settings that give a side-by-side stack its owner."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cbir.settings import Settings, side_by_side
from cbir.stack.watchdog import owner_gone


def test_no_owner_and_a_living_owner_keep_the_stack() -> None:
    assert not owner_gone(0)
    assert not owner_gone(os.getpid())
    assert not owner_gone(1)  # init: alive, whoever may signal it


def test_an_owner_that_exited_is_gone() -> None:
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its pid names no process now
    assert owner_gone(child.pid)


def test_a_side_by_side_stack_is_owned_by_the_process_that_made_it(tmp_path: Path) -> None:
    moved = side_by_side(Settings(), 11000, tmp_path / "data", tmp_path / "models")
    assert moved.stack.owner_pid == os.getpid()
    assert Settings().stack.owner_pid == 0  # `cbir stack up`'s stack outlives the command
