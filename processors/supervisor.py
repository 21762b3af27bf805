"""`python -m processors.supervisor`: runs the Faust worker and starts it again when it exits
on its own.

A Faust agent's topics are fixed when the worker starts (pattern subscriptions do not work in
Faust: faust-streaming issue #62), so when a reindex registers a generation filled from a new
embeddings topic, or retires one, the worker stops itself gracefully and this loop starts it
again with the new subscriptions. A crash is restarted the same way, with a growing pause.
SIGTERM or SIGINT to the supervisor stops the worker and then the supervisor.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import time
from types import FrameType

from cbir.logs import configure_logging
from cbir.settings import get_settings

log = logging.getLogger("cbir.processors.supervisor")
PR_SET_PDEATHSIG = 1
QUICK_EXIT_S = 30.0  # a worker that lived less than this is restarting too often


def _die_with_parent() -> None:
    """In the child: the kernel kills the worker if the supervisor dies (even by SIGKILL)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main(argv: list[str]) -> int:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    command = [sys.executable, "-m", "processors", "worker", "--without-web", *argv]
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pause = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command, preexec_fn=_die_with_parent)
        code = child.wait()
        if stopping:
            return code
        lived = time.monotonic() - started
        pause = 1.0 if lived > QUICK_EXIT_S else min(pause * 2, 30.0)
        log.info(
            "worker exited", extra={"code": code, "lived_s": round(lived, 1), "restart_in_s": pause}
        )
        time.sleep(pause)
        if stopping:
            return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
