"""The project's query API and web page (`cbir serve`), run by the launcher after the servers."""

from __future__ import annotations

import sys

from cbir.stack.services.base import ApplicationService, Port, probe_http


class QueryApiService(ApplicationService):
    name = "query-api"
    start_hint = "the log says which setting or service the API could not use"

    @property
    def ports(self) -> list[Port]:
        return [Port("http", self.settings.api.port, "CBIR_API__PORT")]

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

    def probe(self) -> None:
        probe_http(f"http://{self.settings.api.host}:{self.settings.api.port}/health/live", "live")
