"""ManagedProcess on real throwaway processes (`sleep`), no servers involved."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from cbir.stack.process import ManagedProcess, port_is_free, tail


def test_start_record_and_stop(tmp_path: Path) -> None:
    process = ManagedProcess("sleeper", tmp_path / "run/sleeper.pid", tmp_path / "logs/s.log")
    pid = process.start(["sleep", "60"], os.environ)
    assert process.pid == pid
    assert process.memory_rss() > 0
    assert process.stop(timeout_s=5) is True
    assert process.pid is None
    assert not process.pid_file.exists()
    assert process.stop(timeout_s=5) is False


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    process = ManagedProcess("stubborn", tmp_path / "p.pid", tmp_path / "p.log")
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    process.start([sys.executable, "-c", script], os.environ)
    assert process.stop(timeout_s=0.5) is True
    assert process.pid is None


def test_a_recycled_pid_is_not_taken_for_ours(tmp_path: Path) -> None:
    pid_file = tmp_path / "other.pid"
    # this test process is alive, but it was not started at the recorded time
    pid_file.write_text(json.dumps({"pid": os.getpid(), "create_time": 1.0, "command": ["x"]}))
    process = ManagedProcess("other", pid_file, tmp_path / "other.log")
    assert process.record() is None
    assert process.stop(timeout_s=1) is False
    assert not pid_file.exists()


def test_output_goes_to_the_log_and_tail_reads_its_end(tmp_path: Path) -> None:
    process = ManagedProcess("printer", tmp_path / "p.pid", tmp_path / "p.log")
    process.start([sys.executable, "-c", "print('\\n'.join(map(str, range(100))))"], os.environ)
    while not process.exited():
        pass
    assert tail(process.log_file, 3).splitlines() == ["97", "98", "99"]
    assert tail(tmp_path / "missing.log") == ""


def test_port_is_free_sees_a_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)
