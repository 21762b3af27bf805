"""`python -m processors.supervisor`: runs the Faust workers of every role (`cbir.wiring.
consumer_roles`: `CBIR_PROCESSORS__WORKERS` indexing workers in the indexing group, and with
local features on `FEATURE_WORKERS` and `DUPLICATE_WORKERS` in groups of their own), and
starts each again when it exits on its own. The derived roles' workers run at a higher
niceness (`DERIVED_NICE`): on a busy machine the scheduler gives the cores to indexing first,
and features and duplicates catch up in what is left; the thumbnail workers run under the
idle scheduling class (`THUMBNAILS_IDLE`): only on CPU time nothing else wants.

Scale-out: a role's workers share the partitions of its topics (Kafka assigns them, and moves a
dead worker's to the others until it is back). Beyond one machine, run this supervisor on
each with the same settings: the group is the same, so the partitions spread over all of
them (more partitions than workers, `CBIR_KAFKA__PARTITIONS`, leaves room to grow).

A Faust agent's topics are fixed when the worker starts (pattern subscriptions do not work in
Faust: faust-streaming issue #62), so when a reindex registers a generation filled from a new
embeddings topic, or retires one, a worker stops itself gracefully and this loop starts it
again with the new subscriptions. A crash is restarted the same way, with a growing pause.
SIGTERM or SIGINT to the supervisor stops the workers and then the supervisor.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from cbir.logs import configure_logging
from cbir.settings import get_settings
from cbir.wiring import CORE, THUMBNAILS, consumer_roles
from processors import WORKER_INDEX, WORKER_ROLE

log = logging.getLogger("cbir.processors.supervisor")
PR_SET_PDEATHSIG = 1
QUICK_EXIT_S = 30.0  # a worker that lived less than this is restarting too often


def _die_with_parent() -> None:
    """In the child: the kernel kills the worker if the supervisor dies (even by SIGKILL)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Worker:
    role: str
    index: int
    command: list[str]
    nice: int = 0  # added to its scheduling niceness: a derived role yields the cores
    idle: bool = False  # SCHED_IDLE: it runs only on CPU time nothing else wants
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    pause: float = 1.0
    restart_at: float = field(default=0.0)

    def start(self) -> None:
        environment = {**os.environ, WORKER_INDEX: str(self.index), WORKER_ROLE: self.role}
        nice, idle = self.nice, self.idle

        def prepare() -> None:  # in the child, before it runs the worker
            _die_with_parent()
            if nice:
                os.nice(nice)
            if idle:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

        self.process = subprocess.Popen(self.command, env=environment, preexec_fn=prepare)
        self.started = time.monotonic()
        log.info(
            "worker started",
            extra={"role": self.role, "worker": self.index, "pid": self.process.pid},
        )

    def exited(self, now: float) -> int | None:
        """The exit code if the worker exited since it was looked at (and when to restart)."""
        if self.process is None or (code := self.process.poll()) is None:
            return None
        lived = now - self.started
        self.pause = 1.0 if lived > QUICK_EXIT_S else min(self.pause * 2, 30.0)
        self.restart_at = now + self.pause
        log.info(
            "worker exited",
            extra={
                "role": self.role,
                "worker": self.index,
                "code": code,
                "lived_s": round(lived, 1),
                "restart_in_s": self.pause,
            },
        )
        self.process = None
        return code


def main(argv: list[str]) -> int:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    command = [sys.executable, "-m", "processors", "worker", "--without-web", *argv]
    processors = settings.processors
    workers = [
        Worker(
            role.name,
            i,
            command,
            0 if role.name == CORE else processors.derived_nice,
            idle=role.name == THUMBNAILS and processors.thumbnails_idle,
        )
        for role in consumer_roles(settings)
        for i in range(role.workers)
    ]
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        worker.start()
    code = 0
    while True:
        time.sleep(0.2)
        now = time.monotonic()
        for worker in workers:
            exited = worker.exited(now)
            code = exited if exited is not None else code
            if not stopping and worker.process is None and now >= worker.restart_at:
                worker.start()
        if stopping and all(w.process is None or w.process.poll() is not None for w in workers):
            return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
