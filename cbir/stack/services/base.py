"""What every local service provides to the launcher."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import httpx

from cbir.settings import Settings, settings_environment
from cbir.stack.layout import StackLayout
from cbir.stack.process import ManagedProcess


class NotReady(Exception):
    """The service is not (yet) answering; the message says what the probe saw."""


def probe_http(url: str, must_contain: str = "") -> None:
    """Raise NotReady unless GET url answers 200 (with `must_contain` in the body)."""
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError as exc:
        raise NotReady(f"{url}: {exc}") from exc
    if response.status_code != 200 or must_contain not in response.text:
        raise NotReady(f"{url} answered {response.status_code} {response.text[:80]!r}")


@dataclass(frozen=True)
class Port:
    label: str
    number: int
    setting: str  # the environment variable that moves it
    all_interfaces: bool = False  # the server binds 0.0.0.0 and offers no setting against it


class LocalService(ABC):
    """A server run as a plain local process on 127.0.0.1."""

    name: str = ""
    #: what to say when it is installed but does not start or get ready
    start_hint: str = ""
    #: the project's own services start only once every server is ready
    application: bool = False

    def __init__(self, settings: Settings, layout: StackLayout) -> None:
        self.settings = settings
        self.layout = layout
        self.process = ManagedProcess(
            self.name, layout.pid_file(self.name), layout.log_file(self.name)
        )

    @property
    def data_dir(self) -> Path:
        return self.layout.service_data(self.name)

    def internal_port(self, default: int) -> int:
        return default + self.settings.stack.internal_port_offset

    @property
    @abstractmethod
    def ports(self) -> list[Port]:
        """Every port it listens on, the one clients use first."""

    @abstractmethod
    def is_installed(self) -> bool:
        """True when `install` has nothing left to do."""

    @abstractmethod
    def install(self) -> None:
        """Install the server idempotently under the stack home."""

    def prepare(self) -> None:
        """Write configuration and initialise the data directory (first start only)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def working_directory(self) -> Path | None:
        return self.data_dir

    @abstractmethod
    def probe(self) -> None:
        """Raise NotReady unless the server answers a real request."""

    def provision(self) -> None:
        """Create what the pipeline needs in it (topics, bucket, tables); idempotent.

        Services that hold nothing of the pipeline's (Redis, Triton) keep this default.
        """
        return


class ApplicationService(LocalService):
    """One of the project's own processes (processors, query API): part of the project, so
    nothing to install; started once the servers are ready, with this launcher's settings
    handed over as CBIR_* variables."""

    application = True

    def is_installed(self) -> bool:
        return True

    def install(self) -> None:
        """Part of the project: nothing to install."""

    def environment(self) -> dict[str, str]:
        return {**os.environ, **settings_environment(self.settings)}
