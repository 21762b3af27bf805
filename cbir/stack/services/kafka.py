"""Kafka 3.9 in KRaft mode (one node that is broker and controller), jars from Maven Central."""

from __future__ import annotations

import base64
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from cbir.adapters import kafka_topics
from cbir.stack.errors import StackError
from cbir.stack.install import (
    apt_install,
    marker_matches,
    require_tool,
    resource_text,
    run_checked,
)
from cbir.stack.services.base import LocalService, NotReady, Port

KAFKA_VERSION = "3.9.1"
CONTROLLER_PORT = 9093


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64, without '-' (an id starting
    with one reads as an option to the storage tool, which then fails, one time in 64; Kafka's
    own Uuid.randomUuid draws again in that case, and since KAFKA-20072 whenever a '-'
    appears)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).rstrip(b"=").decode()
        if "-" not in cluster_id:
            return cluster_id


class KafkaService(LocalService):
    name = "kafka"
    start_hint = "Kafka needs a Java 17+ runtime; see the log for the broker's own error"

    @property
    def ports(self) -> list[Port]:
        return [
            Port("broker", self.settings.kafka.port, "CBIR_KAFKA__BOOTSTRAP_SERVERS"),
            Port(
                "controller",
                self.internal_port(CONTROLLER_PORT),
                "CBIR_STACK__INTERNAL_PORT_OFFSET",
            ),
        ]

    @property
    def install_dir(self) -> Path:
        return self.layout.home / "kafka" / KAFKA_VERSION

    def is_installed(self) -> bool:
        return marker_matches(self.install_dir / ".complete", KAFKA_VERSION)

    def install(self) -> None:
        if self.is_installed():
            return
        apt_install(self.name, ["openjdk-17-jre-headless", "maven"], ["java", "mvn"])
        mvn = require_tool(self.name, "mvn", "install Maven: apt-get install maven")
        self.install_dir.mkdir(parents=True, exist_ok=True)
        libs = self.install_dir / "libs"
        shutil.rmtree(libs, ignore_errors=True)
        pom = self.install_dir / "pom.xml"
        pom.write_text(resource_text("kafka-pom.xml").replace("@KAFKA_VERSION@", KAFKA_VERSION))
        run_checked(
            self.name,
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={libs}",
            ],
            "fetching the Kafka jars from Maven Central",
            "check that Maven Central is reachable (mvn's settings.xml, proxy), then run "
            "`cbir stack install` again",
        )
        (self.install_dir / "log4j.properties").write_text(resource_text("kafka-log4j.properties"))
        (self.install_dir / ".complete").write_text(KAFKA_VERSION)

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    def _java(self, main_class: str, *args: str) -> list[str]:
        return [
            require_tool(self.name, "java", "install a Java 17+ runtime"),
            *self.settings.stack.kafka_heap.split(),
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.install_dir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.data_dir / 'app-logs'}",
            "-cp",
            str(self.install_dir / "libs") + "/*",
            main_class,
            *args,
        ]

    def prepare(self) -> None:
        super().prepare()
        broker, controller = (p.number for p in self.ports)
        log_dir = self.data_dir / "log"
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller}",
            "listeners": f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(log_dir),
            "num.partitions": str(self.settings.kafka.partitions),
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.enable": "true",  # compacts the images and embeddings topics
            # topics are made by provisioning, with their settings: a client that asks for a
            # deleted topic (a retired generation's) must not bring it back with defaults
            "auto.create.topics.enable": "false",
        }
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        if not (log_dir / "meta.properties").exists():
            cluster_id = new_cluster_id()
            run_checked(
                self.name,
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(self.config_file),
                    "--ignore-formatted",
                ),
                "formatting the KRaft storage",
                f"remove {log_dir} if it holds data of another cluster, then `cbir stack up`",
            )

    def command(self) -> list[str]:
        if not self.is_installed():
            raise StackError(self.name, "not installed", "run `cbir stack install`")
        return self._java("kafka.Kafka", str(self.config_file))

    def probe(self) -> None:
        try:
            if kafka_topics.broker_count(self.settings.kafka, timeout_s=2.0) < 1:
                raise NotReady("metadata lists no broker")
        except NotReady:
            raise
        except Exception as exc:
            raise NotReady(f"metadata request failed: {exc}") from exc

    def provision(self) -> None:
        kafka_topics.ensure_topics(self.settings.kafka)
