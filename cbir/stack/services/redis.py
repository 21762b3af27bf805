"""Redis from Debian's redis-server, persisted with an append-only file."""

from __future__ import annotations

import shutil

import redis

from cbir.stack.install import apt_install, require_tool
from cbir.stack.services.base import LocalService, NotReady, Port


class RedisService(LocalService):
    name = "redis"

    @property
    def ports(self) -> list[Port]:
        return [Port("redis", self.settings.redis.port, "CBIR_REDIS__URL")]

    def is_installed(self) -> bool:
        return shutil.which("redis-server") is not None

    def install(self) -> None:
        apt_install(self.name, ["redis-server"], ["redis-server"])

    def command(self) -> list[str]:
        return [
            require_tool(self.name, "redis-server", "run `cbir stack install`"),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.ports[0].number),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--save",
            "",
            "--logfile",
            "",
        ]

    def probe(self) -> None:
        try:
            redis.Redis.from_url(self.settings.redis.url, socket_timeout=2).ping()
        except redis.RedisError as exc:
            raise NotReady(f"PING failed: {exc}") from exc
