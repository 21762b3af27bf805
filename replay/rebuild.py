"""Reindex, re-embed and rebuild from nothing: fill a new generation from the log while the
live one keeps answering, then switch the alias to it.

How a new generation is filled without a gap:
1. It is registered as `building` (MySQL) and its collection created. From the processors'
   next batch on, every new event is written to it as well as to the live generation.
2. A replay, a consumer group of its own named after the generation, reads the source topic
   from the beginning (the embeddings topic for a reindex, the images topic through the new
   model for a re-embed) and writes into it. Everything logged before step 1 is covered by
   the replay, everything after by the processors (and the replay too, which keeps
   following the topic until the switch). The stores are idempotent, so overlap is harmless.
3. When the replay has nothing left, the processors are not behind, and the new generation
   holds as many vectors as the live one, the alias is switched (Milvus `alter_alias`,
   atomic) and the registry, the rows' generation and the index generation are updated in
   one MySQL transaction. Searches never see a half-built generation: nothing else moves the
   alias.
4. The old generation is kept for a grace period (searches that read the alias just before
   the switch finish on it), then dropped, with its embeddings topic when nothing else uses
   it.
A replay killed at any point leaves the generation `building`; the same command continues it
from its last committed batch (`--restart` abandons it and starts a new one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from cbir.settings import Settings
from processors.stages import EmbedStage, IndexStage, Stage
from processors.status import consumer_lag
from replay.backfill import Backfill
from replay.errors import ReplayError
from replay.progress import SwitchCheck, switch_verdict
from schemas.events import EmbeddingComputed, EventSerializer
from service_adapters import generations, kafka_topics, metadata_store
from service_adapters.embedder import TritonEmbedder
from service_adapters.generations import Generation
from service_adapters.vector_index import (
    MilvusException,
    VectorIndex,
    default_index_params,
    model_slug,
    timestamp_now,
)

log = logging.getLogger("cbir.replay")
CHECK_EVERY_S = 1.0


@dataclass(frozen=True)
class ReplayOptions:
    index_type: str | None = None  # None: the live generation's (or the configured) type
    index_params: dict[str, Any] | None = None  # None: the type's defaults
    grace_s: float = 600.0
    keep_old: bool = False
    restart: bool = False
    batch_size: int = 500
    max_rate: float = 0.0  # events per second, 0: as fast as it goes


@dataclass(frozen=True)
class ReplayStatus:
    """What the progress display shows."""

    generation: str
    phase: str  # replaying, waiting, switched, grace, done
    replayed: int
    lag: int
    rate: float
    eta_s: float | None
    detail: str = ""


Report = Callable[[ReplayStatus], None]


def replay_group(settings: Settings, generation: Generation) -> str:
    """The consumer group of the replay that fills a generation (a rerun continues it)."""
    return f"{settings.processors.app_id}.replay.{generation.name}"


class Rebuilder:
    """One replay command's connections: MySQL (the registry), Milvus, Kafka."""

    def __init__(self, settings: Settings, report: Report) -> None:
        self.settings = settings
        self.report = report
        self.conn = metadata_store.open_connection(settings.mysql)
        metadata_store.migrate(self.conn)  # a rebuild from nothing starts from empty tables
        self.index = VectorIndex(settings.milvus, settings.processors)

    def close(self) -> None:
        self.index.close()
        self.conn.close()

    # -- the three commands --

    def reindex(self, options: ReplayOptions, topic: str | None = None) -> Generation:
        """A new generation from an embeddings topic (no re-embedding): other index
        parameters, or everything back after Milvus and MySQL were lost."""
        live = generations.live(self.conn)
        if live is not None:
            source = live.embeddings_topic
            model_id, dim, triton_model = live.model_id, live.dim, live.model
        else:
            source = topic or self._embeddings_topic()
            model_id, dim = self._model_in(source)
            triton_model = model_id.split(":")[0]  # export names the model id after it
        generation = self._building(options, source, triton_model, model_id, dim, live)
        stage = IndexStage(self.settings, replay=generation)
        return self._fill_and_switch(generation, source, stage, options, live)

    def re_embed(self, model: str, options: ReplayOptions) -> Generation:
        """A new generation of another model: the images topic replayed through it into an
        embeddings topic of its own, indexed into a collection of its own."""
        identity = TritonEmbedder(self.settings.triton, model).identity()
        live = generations.live(self.conn)
        if live is not None and live.model_id == identity.model_id:
            raise ReplayError(
                f"{identity.model_id} is the live model already: to change index parameters "
                "use `cbir reindex`"
            )
        topic = f"{self.settings.kafka.embeddings_topic}.{model_slug(identity.model_id)}"
        kafka_topics.ensure_topics(
            self.settings.kafka,
            specs=[kafka_topics.embeddings_topic_spec(self.settings.kafka, topic)],
        )
        generation = self._building(options, topic, model, identity.model_id, identity.dim, live)
        stage = EmbedStage(self.settings, replay=generation)
        return self._fill_and_switch(
            generation, self.settings.kafka.images_topic, stage, options, live
        )

    def prune(self) -> list[str]:
        """Drop the retired generations whose grace period is over (with their replay's
        consumer group, and their embeddings topic when no other generation uses it)."""
        dropped = []
        for old in generations.expired(self.conn):
            if self.index.aliased() == old.name:
                continue  # never drop what the alias points at
            self.index.drop(old.name)
            generations.set_state(self.conn, old.id, "dropped")
            dropped.append(old.name)
            self._forget_log_of(old)
            log.info("dropped", extra={"generation": old.name})
        return dropped

    # -- steps --

    def _embeddings_topic(self) -> str:
        """With no registry to say which, the one embeddings topic in Kafka: the configured
        one, or a re-embed's (`<configured>.<model>`), which replaces it."""
        base = self.settings.kafka.embeddings_topic
        found = sorted(
            name
            for name in kafka_topics.topic_partitions(self.settings.kafka, timeout_s=10)
            if name == base or name.startswith(f"{base}.")
        )
        if len(found) != 1:
            raise ReplayError(
                f"no generation is registered and Kafka holds {len(found)} embeddings topics "
                f"({', '.join(found) or 'none'}): name the one to rebuild from with --topic"
            )
        return found[0]

    def _model_in(self, topic: str) -> tuple[str, int]:
        """The model id and dimension of the embeddings in a topic (its first one)."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka.bootstrap_servers,
                "group.id": "cbir-replay-peek",
                "enable.auto.commit": False,
            }
        )
        serializer = EventSerializer()
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error is not None:
                raise ReplayError(
                    f"there is no topic {topic} to rebuild from: name the embeddings topic "
                    "with --topic (`cbir generations` lists each generation's topic)"
                )
            consumer.assign(
                [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                message = consumer.poll(1.0)
                if message is None or message.error() is not None or message.value() is None:
                    continue
                event = serializer.loads(message.value())
                if isinstance(event, EmbeddingComputed):
                    return event.model_id, event.dim
        finally:
            consumer.close()
        raise ReplayError(f"{topic} holds no embedding: nothing to rebuild from")

    def _building(
        self,
        options: ReplayOptions,
        topic: str,
        model: str,
        model_id: str,
        dim: int,
        live: Generation | None,
    ) -> Generation:
        """The generation this command fills from `topic`: a half-built one continued, or
        a new one."""
        index_type = options.index_type or (
            live.index_type if live else self.settings.milvus.index_type
        )
        # the type's defaults, overridden by what was asked (HNSW wants M and efConstruction)
        params = {
            **default_index_params(index_type, self.settings.processors),
            **(options.index_params or {}),
        }
        with generations.locked(self.conn):
            for started in generations.active(self.conn):
                if started.state != "building" or started.embeddings_topic != topic:
                    continue
                if options.restart:
                    self._abandon(started)
                    continue
                asked = options.index_type is not None or options.index_params is not None
                if asked and (started.index_type, started.index_params) != (index_type, params):
                    raise ReplayError(
                        f"{started.name} ({started.index_type} {started.index_params}) is half "
                        "built from the same source: run without index options to continue "
                        "it, or with --restart to abandon it and build the one asked for"
                    )
                self.index.create(
                    started.name,
                    started.model_id,
                    started.dim,
                    started.index_type,
                    started.index_params,
                )
                log.info("continuing", extra={"generation": started.name})
                return started
            generation = generations.register(
                self.conn,
                alias=self.settings.milvus.collection,
                model=model,
                model_id=model_id,
                dim=dim,
                embeddings_topic=topic,
                index_type=index_type,
                index_params=params,
                state="building",
                taken=self.index.exists,
            )
            try:
                self.index.create(generation.name, model_id, dim, index_type, params)
            except MilvusException as exc:
                self._abandon(generation)
                raise ReplayError(
                    f"Milvus refused the index {index_type} {params}: {exc}; change --param"
                ) from exc
        log.info("building", extra={"generation": generation.name, "index_type": index_type})
        return generation

    def _abandon(self, generation: Generation) -> None:
        generations.set_state(self.conn, generation.id, "abandoned")
        self.index.drop(generation.name)
        self._forget_log_of(generation)
        log.info("abandoned", extra={"generation": generation.name})

    def _forget_log_of(self, generation: Generation) -> None:
        """The replay's consumer group, and the embeddings topic if nothing else uses it."""
        kafka = self.settings.kafka
        kafka_topics.delete_consumer_group(kafka, replay_group(self.settings, generation))
        in_use = {
            g.embeddings_topic
            for g in generations.all_generations(self.conn)
            if g.state in ("building", "live", "retired")
        }
        if generation.embeddings_topic not in in_use:
            kafka_topics.delete_topic(kafka, generation.embeddings_topic)
            log.info("topic deleted", extra={"topic": generation.embeddings_topic})

    def _fill_and_switch(
        self,
        generation: Generation,
        source: str,
        stage: Stage,
        options: ReplayOptions,
        live: Generation | None,
    ) -> Generation:
        backfill = Backfill(
            self.settings,
            source,
            replay_group(self.settings, generation),
            stage,
            options.batch_size,
            options.max_rate,
        )
        try:
            self._follow_until_complete(generation, backfill, live)
        finally:
            backfill.close()
        self._switch(generation, options)
        return generation

    def _follow_until_complete(
        self, generation: Generation, backfill: Backfill, live: Generation | None
    ) -> None:
        last_check = 0.0
        start = backfill.lag(fresh=True)
        self.report(ReplayStatus(generation.name, "replaying", 0, start, 0.0, None))
        while True:
            read = backfill.step()
            behind = backfill.lag()
            due = not behind and not read and time.monotonic() - last_check >= CHECK_EVERY_S
            if due:  # the end as the last fetch saw it: confirm it with the broker
                behind = backfill.lag(fresh=True)
            status = ReplayStatus(
                generation.name,
                "replaying",
                backfill.throughput.total,
                behind,
                backfill.throughput.rate,
                backfill.throughput.eta_s(behind),
            )
            if behind or not due:
                self.report(status)
                continue
            last_check = time.monotonic()
            verdict = switch_verdict(self._check(generation, live))
            if verdict is None:
                return
            self.report(
                ReplayStatus(
                    generation.name, "waiting", status.replayed, 0, status.rate, None, verdict
                )
            )

    def _check(self, generation: Generation, live: Generation | None) -> SwitchCheck:
        processors_lag = 0
        if live is not None:  # the processors feed the new generation too: they must be done
            processors_lag = sum(
                t.lag for t in consumer_lag(self.settings, [generation.embeddings_topic])
            )
        new_count = self.index.count(generation.name)
        if live is not None:
            reference = self.index.count(live.name)
        else:
            reference = metadata_store.status_counts(self.conn).get("indexed", 0)
        return SwitchCheck(0, processors_lag, new_count, reference)

    def _switch(self, generation: Generation, options: ReplayOptions) -> None:
        with generations.locked(self.conn):
            self.index.switch_alias(generation.name)
            retired = generations.make_live(self.conn, generation, options.grace_s, timestamp_now())
        log.info("switched", extra={"generation": generation.name, "retired": retired})
        self.report(ReplayStatus(generation.name, "switched", 0, 0, 0.0, 0.0, ", ".join(retired)))
        if not retired or options.keep_old:
            return
        deadline = time.monotonic() + options.grace_s + 0.5  # past drop_after, to the second
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            self.report(ReplayStatus(generation.name, "grace", 0, 0, 0.0, left, ", ".join(retired)))
            time.sleep(min(1.0, max(left, 0.0)))
        self.prune()
