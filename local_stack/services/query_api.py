"""The project's query API and web page (`cbir serve`), run by the launcher after the servers."""

from __future__ import annotations

import os
import sys

from cbir.settings import settings_environment
from local_stack.services.base import LocalService, Port, probe_http


class QueryApiService(LocalService):
    name = "query-api"
    application = True  # starts once the servers are ready
    start_hint = "the log says which setting or service the API could not use"

    @property
    def ports(self) -> list[Port]:
        return [Port("http", self.settings.api.port, "CBIR_API__PORT")]

    def is_installed(self) -> bool:
        return True

    def install(self) -> None:
        """Part of the project: nothing to install."""

    def command(self) -> list[str]:
        api = self.settings.api
        return [
            sys.executable,
            "-m",
            "cbir.cli",
            "serve",
            "--host",
            api.host,
            "--port",
            str(api.port),
        ]

    def environment(self) -> dict[str, str]:
        # the child reads its settings from the environment: hand it this launcher's
        return {**os.environ, **settings_environment(self.settings)}

    def probe(self) -> None:
        probe_http(f"http://{self.settings.api.host}:{self.settings.api.port}/health/live", "live")
