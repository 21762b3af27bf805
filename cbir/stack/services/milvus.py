"""Milvus 2.3.5 standalone, the server inside the `milvus` PyPI wheel.

The wheel's own `milvus-server` wrapper is not used: it keeps a lock in /run/milvus and, when
sent SIGTERM, leaves the real server running. The launcher renders the wheel's config template
itself (ports, data paths, loopback addresses, a short WAL retention) and runs the binary.

Milvus 2.3 listens on 0.0.0.0 for its gRPC ports and offers no setting to bind them to one
address; the launcher advertises 127.0.0.1 for every component, so nothing talks over other
interfaces, but the ports are open on them: firewall them on a shared host.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
from pathlib import Path

from cbir.adapters import vector_index
from cbir.stack.errors import StackError
from cbir.stack.install import ensure_servers_venv, marker_matches, site_packages
from cbir.stack.services.base import LocalService, NotReady, Port, probe_http

MILVUS_VERSION = "2.3.5"
METRICS_PORT = 9091
ETCD_PEER_PORT = 2380
GRACEFUL_STOP_S = 10
INTERNAL_PORTS = {
    "etcd_port": 2379,
    "root_coord_port": 53100,
    "proxy_internal_port": 19529,
    "query_coord_port": 19531,
    "query_node_port": 21123,
    "index_coord_port": 22930,
    "index_node_port": 21121,
    "data_coord_port": 13333,
    "data_node_port": 21124,
}
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)(?:\((\w+)\))?\s*(?::\s*([^}]*?))?\s*\}\}")


def render_config(template: str, values: dict[str, str]) -> str:
    """Fill the wheel's `{{ key(type): default }}` placeholders; unknown keys keep defaults."""

    def fill(match: re.Match[str]) -> str:
        key, default = match.group(1), (match.group(3) or "").strip()
        return values.get(key, default)

    rendered = _PLACEHOLDER.sub(fill, template)
    # the component-level `ip:` (two-space indent) is the address each component advertises
    return re.sub(r"(?m)^(  ip:)[^\n]*$", r"\1 127.0.0.1", rendered)


class MilvusService(LocalService):
    name = "milvus"

    @property
    def ports(self) -> list[Port]:
        ports = [
            Port("grpc", self.settings.milvus.port, "CBIR_MILVUS__PORT", all_interfaces=True),
            Port(
                "health",
                self.internal_port(METRICS_PORT),
                "CBIR_STACK__INTERNAL_PORT_OFFSET",
                all_interfaces=True,
            ),
        ]
        ports += [
            Port(
                key.removesuffix("_port"),
                self.internal_port(default),
                "CBIR_STACK__INTERNAL_PORT_OFFSET",
                all_interfaces=True,
            )
            for key, default in INTERNAL_PORTS.items()
        ]
        ports.append(
            Port(
                "etcd-peer", self.internal_port(ETCD_PEER_PORT), "CBIR_STACK__INTERNAL_PORT_OFFSET"
            )
        )
        return ports

    @property
    def wheel_dir(self) -> Path:
        return site_packages(self.layout.servers_venv) / "milvus"

    @property
    def bin_dir(self) -> Path:
        return self.layout.home / "milvus" / MILVUS_VERSION / "bin"

    def _archive_digest(self) -> str:
        digest = hashlib.sha256()
        for archive in sorted((self.wheel_dir / "data" / "bin").glob("*.lzma")):
            digest.update(archive.name.encode())
            digest.update(str(archive.stat().st_size).encode())
        return digest.hexdigest()

    def is_installed(self) -> bool:
        return self.wheel_dir.is_dir() and marker_matches(
            self.bin_dir / ".complete", self._archive_digest()
        )

    def install(self) -> None:
        ensure_servers_venv(self.layout)
        if self.is_installed():
            return
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        for archive in (self.wheel_dir / "data" / "bin").glob("*.lzma"):
            target = self.bin_dir / archive.name.removesuffix(".lzma")
            with lzma.open(archive) as packed, target.open("wb") as out:
                shutil.copyfileobj(packed, out)
            target.chmod(0o755)
        (self.bin_dir / ".complete").write_text(self._archive_digest())

    @property
    def config_dir(self) -> Path:
        return self.data_dir / "configs"

    def prepare(self) -> None:
        super().prepare()
        if not self.is_installed():
            raise StackError(self.name, "not installed", "run `cbir stack install`")
        storage, logs = self.data_dir / "data", self.data_dir / "logs"
        for directory in (self.config_dir, storage, logs, self.data_dir / "run"):
            directory.mkdir(parents=True, exist_ok=True)
        values = {key: str(self.internal_port(port)) for key, port in INTERNAL_PORTS.items()}
        values |= {
            "proxy_port": str(self.settings.milvus.port),
            "etcd_log_path": str(logs / "etcd.log"),
            "etcd_data_dir": str(storage / "etcd.data"),
            "local_storage_dir": str(storage),
            "rocksmq_data_dir": str(storage / "rocksmq"),
            "system_log_path": str(logs),
        }
        config = render_config(
            (self.wheel_dir / "data" / "config.yaml.template").read_text(), values
        )
        minutes = self.settings.stack.milvus_mq_retention_minutes
        config = re.sub(r"(?m)^(  retentionTimeInMinutes:)\s*\d+", rf"\1 {minutes}", config)
        # Milvus waits up to 1800 s by default to hand its segments over on SIGTERM, which a
        # standalone server never can; killed after our grace instead, it leaves stale
        # sessions that make the next start refuse to load collections for a while
        config = re.sub(r"(?m)^(  gracefulStopTimeout:)\s*\d+", rf"\1 {GRACEFUL_STOP_S}", config)
        # a restarted server waits for the session of its previous life to expire before its
        # time ticks (and so every strongly consistent search) move on: 30 s by default. The
        # same TTL is how long a stall (SIGSTOP, a long GC pause, a frozen VM) may last before
        # the server's own session expires and it exits: CBIR_STACK__MILVUS_SESSION_TTL_S
        # trades the one against the other
        ttl = self.settings.stack.milvus_session_ttl_s
        config = re.sub(r"(?m)^(    ttl:)\s*\d+(.*register service)", rf"\1 {ttl}\2", config)
        config = self._with_etcd_config(config)
        (self.config_dir / "milvus.yaml").write_text(config)
        shutil.copy(self.wheel_dir / "data" / "glog.conf", self.config_dir / "glog.conf")

    def _with_etcd_config(self, config: str) -> str:
        """Point the embedded etcd at a config file, so its peer port is ours to choose too."""
        client = self.internal_port(INTERNAL_PORTS["etcd_port"])
        peer = self.internal_port(ETCD_PEER_PORT)
        etcd_file = self.config_dir / "embed-etcd.yaml"
        etcd_file.write_text(
            "name: default\n"
            f"listen-client-urls: http://127.0.0.1:{client}\n"
            f"advertise-client-urls: http://127.0.0.1:{client}\n"
            f"listen-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-cluster: default=http://127.0.0.1:{peer}\n"
        )
        config = config.replace(f"localhost:{client}", f"127.0.0.1:{client}")
        return re.sub(
            r"(?m)^(    embed: true[^\n]*)$", rf"\1\n  config:\n    path: {etcd_file}", config
        )

    def command(self) -> list[str]:
        return [str(self.bin_dir / "milvus"), "run", "standalone"]

    def environment(self) -> dict[str, str]:
        library_path = os.environ.get("LD_LIBRARY_PATH", "")
        return {
            **os.environ,
            "DEPLOY_MODE": "STANDALONE",
            "METRICS_PORT": str(self.internal_port(METRICS_PORT)),
            "MILVUS_RUN_DIR": str(self.data_dir / "run"),
            "MILVUSCONF": str(self.config_dir) + "/",
            "LD_LIBRARY_PATH": f"{self.bin_dir}:{library_path}".rstrip(":"),
        }

    def probe(self) -> None:
        probe_http(f"http://127.0.0.1:{self.internal_port(METRICS_PORT)}/healthz", "OK")
        try:
            unready = vector_index.unready_collections(self.settings.milvus)
        except Exception as exc:
            raise NotReady(f"listing collections failed: {exc}") from exc
        if unready:
            raise NotReady(", ".join(f"{name}: {why}" for name, why in unready.items()))
