"""`cbir stack install | up | down | status | logs`: the local services as one system."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cbir.domain.errors import CbirError
from cbir.settings import Settings, settings_environment
from cbir.stack.errors import StackError
from cbir.stack.layout import StackLayout
from cbir.stack.process import ManagedProcess, port_is_free, port_owner, tail
from cbir.stack.services import ALL_SERVICES, LocalService
from cbir.stack.services.base import NotReady, Port

log = logging.getLogger("cbir.stack")

Health = Literal["healthy", "unhealthy", "stopped"]


class StackErrors(CbirError):
    """Several services failed; each error says which and what to do."""

    def __init__(self, errors: Sequence[StackError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class ServiceState:
    name: str
    health: Health
    pid: int | None
    ports: list[Port]
    data_dir: Path
    log_file: Path
    rss_bytes: int
    detail: str = ""
    restarts: int = 0  # by the watchdog, since the data folder was made


def restart_counts(layout: StackLayout) -> dict[str, int]:
    """How often the watchdog restarted each service (kept in the data folder)."""
    try:
        counts = json.loads((layout.run / "restarts.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in counts.items()}


def count_restart(layout: StackLayout, service: str) -> None:
    counts = restart_counts(layout)
    counts[service] = counts.get(service, 0) + 1
    target = layout.run / "restarts.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_suffix(".tmp")
    scratch.write_text(json.dumps(counts))
    scratch.replace(target)


# a server that has just exited may hold its ports a moment longer (the leader of a
# many-threaded process, Milvus in Go, is reported gone while its other threads still close
# their sockets): `down` waits for them, so that an `up` right after finds them free
PORT_RELEASE_S = 10.0


def wait_until_free(port: int, host: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not port_is_free(port, host):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


class Launcher:
    def __init__(self, settings: Settings, only: Sequence[str] = ()) -> None:
        self.settings = settings
        self.layout = StackLayout.from_settings(settings)
        known = {cls.name for cls in ALL_SERVICES}
        unknown = set(only) - known
        if unknown:
            raise StackError(
                ", ".join(sorted(unknown)),
                "no such service",
                f"choose among {', '.join(sorted(known))}",
            )
        self.services: list[LocalService] = [
            cls(settings, self.layout) for cls in ALL_SERVICES if not only or cls.name in only
        ]

    def service(self, name: str) -> LocalService:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise StackError(
            name, "no such service", f"choose among {', '.join(s.name for s in self.services)}"
        )

    def _each(
        self, action: Callable[[LocalService], None], services: Sequence[LocalService] | None = None
    ) -> None:
        """Run the action for every service in parallel; raise all failures together."""
        chosen = list(self.services if services is None else services)
        if not chosen:
            return
        errors: list[StackError] = []
        with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
            futures = [(svc, pool.submit(action, svc)) for svc in chosen]
            for svc, future in futures:
                exc = future.exception()
                if isinstance(exc, StackError):
                    errors.append(exc)
                elif exc is not None:
                    errors.append(
                        StackError(
                            svc.name,
                            f"{type(exc).__name__}: {exc}",
                            f"see {svc.process.log_file}",
                            tail(svc.process.log_file),
                        )
                    )
        if errors:
            raise StackErrors(errors)

    def install(self) -> dict[str, float]:
        """Install every service (idempotent); returns the seconds each took."""
        seconds: dict[str, float] = {}

        def install_one(svc: LocalService) -> None:
            started = time.monotonic()
            svc.install()
            seconds[svc.name] = time.monotonic() - started
            log.info(
                "installed", extra={"service": svc.name, "seconds": round(seconds[svc.name], 1)}
            )

        self._each(install_one)
        return seconds

    def up(self) -> list[ServiceState]:
        """Start what is not running, wait until all are ready, then provision them; then
        (CBIR_STACK__SUPERVISE) the watchdog that restarts what exits."""
        self.layout.data.mkdir(parents=True, exist_ok=True)
        servers = [svc for svc in self.services if not svc.application]
        applications = [svc for svc in self.services if svc.application]
        for phase in (servers, applications):
            self._each(self._start, phase)
            self._each(self._wait_ready, phase)
            self._each(lambda svc: svc.provision(), phase)
        if self.settings.stack.supervise:
            self.start_watchdog()
        return self.status()

    @property
    def watchdog(self) -> ManagedProcess:
        return ManagedProcess(
            "watchdog", self.layout.pid_file("watchdog"), self.layout.log_file("watchdog")
        )

    def start_watchdog(self) -> None:
        """The watchdog (`python -m cbir.stack.watchdog`), unless it runs already."""
        if self.watchdog.record() is None:
            pid = self.watchdog.start(
                [sys.executable, "-m", "cbir.stack.watchdog"],
                {**os.environ, **settings_environment(self.settings)},
            )
            log.info("watchdog started", extra={"pid": pid})

    def stop_watchdog(self) -> None:
        self.watchdog.stop(self.settings.stack.stop_timeout_s)

    def restart(self, svc: LocalService) -> None:
        """Start a service that exited, and wait until it is ready (the watchdog's step)."""
        self._start(svc)
        self._wait_ready(svc)

    def _start(self, svc: LocalService) -> None:
        if svc.process.record() is not None:
            log.info("already running", extra={"service": svc.name, "pid": svc.process.pid})
            return
        if not svc.is_installed():
            raise StackError(svc.name, "it is not installed", "run `cbir stack install`")
        for port in svc.ports:
            if not 0 < port.number < 65536:
                raise StackError(
                    svc.name,
                    f"port {port.number} ({port.label}) is out of range",
                    f"choose a smaller {port.setting}",
                )
            host = "0.0.0.0" if port.all_interfaces else "127.0.0.1"
            if not port_is_free(port.number, host):
                owner = port_owner(port.number) or "another process"
                raise StackError(
                    svc.name,
                    f"port {port.number} ({port.label}) is already taken by {owner}, "
                    "which this launcher did not start",
                    f"stop that process, or move this service with {port.setting}",
                )
        svc.prepare()
        pid = svc.process.start(svc.command(), svc.environment(), svc.working_directory())
        log.info(
            "started", extra={"service": svc.name, "pid": pid, "log": str(svc.process.log_file)}
        )

    def _wait_ready(self, svc: LocalService) -> None:
        timeout = self.settings.stack.ready_timeout_s
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if svc.process.exited():
                raise StackError(
                    svc.name,
                    "it exited while starting",
                    svc.start_hint or f"read {svc.process.log_file}",
                    tail(svc.process.log_file),
                )
            try:
                svc.probe()
                return
            except NotReady as exc:
                last = str(exc)
            time.sleep(0.5)
        raise StackError(
            svc.name,
            f"not ready after {timeout:.0f} s (last probe: {last})",
            (svc.start_hint + "; " if svc.start_hint else "")
            + "raise CBIR_STACK__READY_TIMEOUT_S on a slow machine, or `cbir stack down` and retry",
            tail(svc.process.log_file),
        )

    def down(self) -> dict[str, bool]:
        """Stop the services this launcher started; True for each that was running."""
        self.stop_watchdog()  # first, or it would start again what is being stopped
        return self.stop_services()

    def stop_services(self) -> dict[str, bool]:
        """Stop every service (not the watchdog); True for each that was running."""
        stopped: dict[str, bool] = {}

        def stop_one(svc: LocalService) -> None:
            stopped[svc.name] = svc.process.stop(self.settings.stack.stop_timeout_s)
            for port in svc.ports if stopped[svc.name] else []:
                host = "0.0.0.0" if port.all_interfaces else "127.0.0.1"
                wait_until_free(port.number, host, PORT_RELEASE_S)

        # the reverse of `up`: applications first, while the servers they talk to are still
        # there (a Faust worker stopped after Kafka cannot leave its consumer group, and its
        # ghost member forces a rebalance on the next start when its session expires)
        self._each(stop_one, [svc for svc in self.services if svc.application])
        self._each(stop_one, [svc for svc in self.services if not svc.application])
        return stopped

    def status(self) -> list[ServiceState]:
        return [self._state(svc) for svc in self.services]

    def _state(self, svc: LocalService) -> ServiceState:
        pid = svc.process.pid
        health: Health = "stopped"
        detail = ""
        if pid is not None:
            try:
                svc.probe()
                health = "healthy"
            except NotReady as exc:
                health, detail = "unhealthy", str(exc)
        elif not svc.is_installed():
            detail = "not installed"
        return ServiceState(
            svc.name,
            health,
            pid,
            svc.ports,
            svc.data_dir,
            svc.process.log_file,
            svc.process.memory_rss(),
            detail,
            restart_counts(self.layout).get(svc.name, 0),
        )
