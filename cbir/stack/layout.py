"""Where the launcher keeps installed servers (HOME) and service data (DATA)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cbir.settings import Settings


@dataclass(frozen=True)
class StackLayout:
    home: Path
    data: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> StackLayout:
        stack = settings.stack
        return cls(
            home=stack.home.expanduser().resolve(),
            data=stack.resolved_data_dir.expanduser().resolve(),
        )

    @property
    def logs(self) -> Path:
        return self.data / "logs"

    @property
    def run(self) -> Path:
        return self.data / "run"

    @property
    def servers_venv(self) -> Path:
        return self.home / "venv"

    def service_data(self, service: str) -> Path:
        return self.data / service

    def log_file(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.run / f"{service}.pid"
