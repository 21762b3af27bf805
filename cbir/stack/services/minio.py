"""The MinIO server, built from source with `go install` (no prebuilt download here)."""

from __future__ import annotations

import os
from pathlib import Path

from cbir.adapters import object_store
from cbir.stack.install import marker_matches, require_tool, run_checked
from cbir.stack.services.base import LocalService, Port, probe_http

# MinIO publishes no semver tags, so the module proxy knows its commits as pseudo-versions.
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
CONSOLE_PORT = 9001


class MinioService(LocalService):
    name = "minio"

    @property
    def ports(self) -> list[Port]:
        return [
            Port("s3", self.settings.minio.port, "CBIR_MINIO__ENDPOINT"),
            Port("console", self.internal_port(CONSOLE_PORT), "CBIR_STACK__INTERNAL_PORT_OFFSET"),
        ]

    @property
    def binary(self) -> Path:
        return self.layout.home / "minio" / MINIO_VERSION / "minio"

    def is_installed(self) -> bool:
        return self.binary.exists() and marker_matches(
            self.binary.with_name(".complete"), MINIO_VERSION
        )

    def install(self) -> None:
        if self.is_installed():
            return
        go = require_tool(
            self.name,
            "go",
            "install Go 1.24+ (https://go.dev/doc/install or apt-get install golang)",
        )
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "GOBIN": str(self.binary.parent),
            "GOFLAGS": "-trimpath",
            "CGO_ENABLED": "0",
        }
        run_checked(
            self.name,
            [go, "install", f"github.com/minio/minio@{MINIO_VERSION}"],
            "building MinIO with go install (takes a few minutes the first time)",
            "check that the Go module proxy is reachable (go env GOPROXY), then run "
            "`cbir stack install` again",
            env=env,
        )
        self.binary.with_name(".complete").write_text(MINIO_VERSION)

    def command(self) -> list[str]:
        s3, console = (p.number for p in self.ports)
        return [
            str(self.binary),
            "server",
            str(self.data_dir / "export"),
            "--address",
            f"127.0.0.1:{s3}",
            "--console-address",
            f"127.0.0.1:{console}",
        ]

    def environment(self) -> dict[str, str]:
        minio = self.settings.minio
        return {
            **os.environ,
            "MINIO_ROOT_USER": minio.access_key,
            "MINIO_ROOT_PASSWORD": minio.secret_key.get_secret_value(),
            "MINIO_UPDATE": "off",
            "MINIO_BROWSER_LOGIN_ANIMATION": "off",
            # bucket notifications to Kafka; queued on disk while Kafka is away
            "MINIO_NOTIFY_KAFKA_ENABLE_CBIR": "on",
            "MINIO_NOTIFY_KAFKA_BROKERS_CBIR": self.settings.kafka.bootstrap_servers,
            "MINIO_NOTIFY_KAFKA_TOPIC_CBIR": self.settings.kafka.object_events_topic,
            "MINIO_NOTIFY_KAFKA_QUEUE_DIR_CBIR": str(self.data_dir / "notify-queue"),
        }

    def probe(self) -> None:
        probe_http(f"{self.settings.minio.url}/minio/health/ready")

    def provision(self) -> None:
        object_store.ensure_bucket(self.settings.minio)
        object_store.ensure_bucket(self.settings.minio, self.settings.local_features.bucket)
        object_store.ensure_bucket(self.settings.minio, self.settings.thumbnails.bucket)
        object_store.ensure_notifications(self.settings.minio)
