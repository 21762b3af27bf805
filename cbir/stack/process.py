"""Processes the launcher starts: detached, logged to a file, remembered in a pid file.

A pid file records the pid and the process's start time, so a recycled pid is never taken
for ours and `down` never signals a process the launcher did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a text file ('' when it does not exist)."""
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64 * 1024))
        data = handle.read().decode("utf-8", errors="replace")
    return "\n".join(data.splitlines()[-lines:])


def port_owner(port: int) -> str:
    """Who listens on a TCP port, as 'name (pid N)', or '' when it cannot be told."""
    with contextlib.suppress(psutil.AccessDenied, PermissionError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    return "another process"
                with contextlib.suppress(psutil.Error):
                    return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
                return f"pid {conn.pid}"
    return ""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class PidRecord:
    pid: int
    create_time: float
    command: list[str]


class ManagedProcess:
    """One long-running server process, known by its pid file."""

    def __init__(self, name: str, pid_file: Path, log_file: Path) -> None:
        self.name = name
        self.pid_file = pid_file
        self.log_file = log_file

    def record(self) -> PidRecord | None:
        """The pid record when it still describes a live process, else None."""
        try:
            data = json.loads(self.pid_file.read_text())
            record = PidRecord(int(data["pid"]), float(data["create_time"]), list(data["command"]))
        except (OSError, ValueError, KeyError):
            return None
        try:
            proc = psutil.Process(record.pid)
            alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
            if alive and abs(proc.create_time() - record.create_time) < 0.5:
                return record
        except psutil.Error:
            pass
        return None

    @property
    def pid(self) -> int | None:
        record = self.record()
        return record.pid if record else None

    def start(self, command: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> int:
        """Start the command detached from this terminal, appending its output to the log."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        create_time = psutil.Process(proc.pid).create_time()
        self.pid_file.write_text(
            json.dumps({"pid": proc.pid, "create_time": create_time, "command": list(command)})
        )
        return proc.pid

    def exited(self) -> bool:
        """True when the process we started is gone (reaping it if it was our child)."""
        record = self.record()
        if record is None:
            return True
        with contextlib.suppress(ChildProcessError, OSError):
            pid, _ = os.waitpid(record.pid, os.WNOHANG)
            if pid == record.pid:
                return True
        return False

    def stop(self, timeout_s: float) -> bool:
        """SIGTERM the server, SIGKILL its process group after the timeout.

        Returns False when it was not running. Children it leaves behind (Triton's Python
        backend stubs) are swept with the group.
        """
        record = self.record()
        if record is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.exited():
            time.sleep(0.2)
        self._signal_group(record.pid, signal.SIGKILL)
        while not self.exited():
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def memory_rss(self) -> int:
        """Resident memory of the process and its children, in bytes (0 when stopped)."""
        record = self.record()
        if record is None:
            return 0
        try:
            proc = psutil.Process(record.pid)
            procs = [proc, *proc.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs if p.is_running())
        except psutil.Error:
            return 0
