"""`python -m cbir.stack.watchdog`: restarts what the launcher started when it exits, as a
compose restart policy or systemd would. `cbir stack up` starts it (CBIR_STACK__SUPERVISE),
`cbir stack down` stops it first.

A service whose pid file is there but whose process is gone (killed, crashed, OOM) is started
again and waited for until ready; a failed restart is tried again after a pause that doubles
up to a minute. Each restart is a log line and is counted (`cbir stack status` shows it).

A stack with an owner (CBIR_STACK__OWNER_PID: a benchmark's, started beside the main one) is
stopped by its watchdog once the owner is gone, however it ended (killed, timed out): it
would otherwise keep running, restarted by this very watchdog, with nobody to stop it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType

from cbir.logs import configure_logging
from cbir.settings import get_settings
from cbir.stack.errors import StackError
from cbir.stack.launcher import Launcher, StackErrors, count_restart

log = logging.getLogger("cbir.stack.watchdog")
CHECK_EVERY_S = 2.0
MAX_PAUSE_S = 60.0


@dataclass
class Backoff:
    pause: float = 0.0  # before the next try; doubles after each failed restart
    next_try: float = 0.0


def check(launcher: Launcher, backoff: dict[str, Backoff], now: float) -> list[str]:
    """Restart every service that exited; the names restarted."""
    restarted = []
    for svc in launcher.services:
        if not svc.process.pid_file.exists() or svc.process.record() is not None:
            continue  # never started, stopped by `down`, or running
        state = backoff.setdefault(svc.name, Backoff())
        if now < state.next_try:
            continue
        log.warning("restarting", extra={"service": svc.name, "after_failures_s": state.pause})
        try:
            launcher.restart(svc)
        except (StackError, StackErrors) as exc:
            state.pause = min(max(state.pause * 2, 1.0), MAX_PAUSE_S)
            state.next_try = now + state.pause
            log.error(
                "restart failed",
                extra={"service": svc.name, "error": str(exc), "retry_in_s": state.pause},
            )
            continue
        backoff.pop(svc.name, None)
        count_restart(launcher.layout, svc.name)
        log.info("restarted", extra={"service": svc.name, "pid": svc.process.pid})
        restarted.append(svc.name)
    return restarted


def owner_gone(pid: int) -> bool:
    """Whether the stack's owner (0: none) has exited."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def main() -> int:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    launcher = Launcher(settings)
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff: dict[str, Backoff] = {}
    log.info("watching", extra={"services": [s.name for s in launcher.services]})
    owner = settings.stack.owner_pid
    while not stopping:
        reap()
        if owner_gone(owner):
            log.warning("owner gone, stopping the stack", extra={"owner_pid": owner})
            launcher.stop_services()
            launcher.watchdog.pid_file.unlink(missing_ok=True)
            break
        check(launcher, backoff, time.monotonic())
        time.sleep(CHECK_EVERY_S)
    return 0


def reap() -> None:
    """Collect the exit status of services this watchdog restarted that died since (its
    children): a zombie would otherwise linger."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


if __name__ == "__main__":
    sys.exit(main())
