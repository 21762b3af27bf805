"""Errors a user of the launcher meets are clear and immediate: which service, why, the fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cbir.settings import PROJECT_ROOT, RedisSettings, Settings, StackSettings
from cbir.stack.errors import StackError
from cbir.stack.launcher import Launcher, StackErrors
from tests.integration.conftest import stack_settings

pytestmark = pytest.mark.integration


def test_a_taken_port_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        base = Settings()
        settings = base.model_copy(
            update={
                "redis": RedisSettings(url=f"redis://127.0.0.1:{port}/0"),
                "stack": base.stack.model_copy(update={"data_dir": tmp_path}),
            }
        )
        started = time.monotonic()
        with pytest.raises(StackErrors) as caught:
            Launcher(settings, only=["redis"]).up()
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert f"port {port}" in message
    assert "already taken by" in message
    assert "CBIR_REDIS__URL" in message
    assert not (tmp_path / "run" / "redis.pid").exists()


def test_a_missing_tool_names_the_tool_and_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with neither java nor mvn on it
    settings = Settings(stack=StackSettings(home=tmp_path / "home"))
    with pytest.raises(StackError) as caught:
        Launcher(settings, only=["kafka"]).service("kafka").install()
    assert caught.value.service == "kafka"
    assert "`java`" in caught.value.reason
    assert "apt-get install" in caught.value.fix


def test_a_service_not_ready_in_time_reports_its_log(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "data", tmp_path, offset=11000)
    settings.stack.ready_timeout_s = 0.5  # Milvus takes seconds to start
    launcher = Launcher(settings, only=["milvus"])
    try:
        with pytest.raises(StackErrors) as caught:
            launcher.up()
        message = str(caught.value)
        assert message.startswith("milvus: not ready after")
        assert "CBIR_STACK__READY_TIMEOUT_S" in message
        assert "last lines of its log" in message
    finally:
        launcher.down()
    assert launcher.status()[0].health == "stopped"


def test_status_exit_code_says_whether_every_service_is_healthy(
    launcher: Launcher, tmp_path: Path
) -> None:
    settings = launcher.settings
    env = {
        **os.environ,
        "CBIR_REDIS__URL": settings.redis.url,
        "CBIR_STACK__DATA_DIR": str(settings.stack.resolved_data_dir),
    }
    command = [sys.executable, "-m", "cbir.cli", "stack", "status", "--only", "redis"]
    healthy = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "healthy" in healthy.stdout

    env["CBIR_STACK__DATA_DIR"] = str(tmp_path)  # a stack that was never started
    stopped = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert stopped.returncode == 1
    assert "stopped" in stopped.stdout
