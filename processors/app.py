"""The Faust apps, one per role (`cbir.wiring.consumer_roles`), each its own consumer group:

- core (the indexing group, `APP_ID`): the `bridge` agent (MinIO bucket notifications ->
  images), the `embed` agent (images -> embeddings topics, one per model) and the `index`
  agent (embeddings topics -> every building and live generation in Milvus, and MySQL);
- features (`APP_ID.features`): images -> each image's SIFT local features in their bucket;
- duplicates (`APP_ID.duplicates`): live embeddings -> each image's near-duplicates on the
  duplicates topic;
- thumbnails (`APP_ID.thumbnails`): images -> each image's thumbnail and preview.

Features and duplicates run with local features on, thumbnails with thumbnails on; no
derived role's backlog ever holds back the
indexing group's offsets, so an image is searchable as soon as it is embedded and indexed.
Run them with `cbir process` (or the launcher), whose supervisor starts each role's workers
(`CBIR_PROCESSORS_ROLE` tells a worker its role); a worker restarts itself to follow new
embeddings topics.

Each agent takes events in batches (size and time bound), hands the batch to its stage in a
worker thread, produces what the stage returns, waits until Kafka has it, and only then lets
Faust acknowledge the batch; Faust commits acknowledged offsets (after flushing its producer).
A crash at any point before that replays the batch: at-least-once, made harmless by
idempotent sinks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

import faust

from cbir.domain.log import DeadLettered, LogMessage, Outcome
from cbir.logs import configure_logging
from cbir.settings import Settings, get_settings
from cbir.wiring import (
    CORE,
    DUPLICATES,
    FEATURES,
    THUMBNAILS,
    Adapters,
    consumer_role,
    indexed_topics,
)
from processors import WORKER_INDEX, WORKER_ROLE
from processors.stages import Stage

log = logging.getLogger("cbir.processors")


def _source(event: Any) -> LogMessage:
    message = event.message
    return LogMessage(message.topic, message.partition, message.offset, message.key, message.value)


def create_app(settings: Settings, role_name: str = CORE) -> faust.App:
    config = settings.processors
    role = consumer_role(settings, role_name)
    adapters = Adapters(settings)
    # one folder per worker of each role (the supervisor numbers them)
    worker = f"worker-{os.environ.get(WORKER_INDEX, '0')}"
    app = faust.App(
        role.group,
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        store="memory://",
        web_enabled=False,
        datadir=str(
            settings.stack.resolved_data_dir
            / "processors"
            / (worker if role.name == CORE else f"{role.name}-{worker}")
        ),
        topic_replication_factor=1,
        topic_partitions=settings.kafka.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=1.0,
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    images = app.topic(settings.kafka.images_topic, **raw)
    subscribed = indexed_topics(settings) or [settings.kafka.embeddings_topic]
    embeddings = app.topic(*subscribed, **raw)
    dead_letters = app.topic(settings.kafka.dead_letter_topic, **raw)
    object_events = app.topic(settings.kafka.object_events_topic, **raw)
    by_name: dict[str, Any] = {}

    def named(topic: str) -> Any:
        if topic not in by_name:
            by_name[topic] = app.topic(topic, **raw)
        return by_name[topic]

    async def run(stream: Any, stage: Stage, name: str, next_topic: Any) -> None:
        def _target(outcome: Outcome) -> Any:
            if isinstance(outcome, DeadLettered):
                return dead_letters
            return named(outcome.topic) if outcome.topic else next_topic

        configure_logging(settings.log_level, settings.log_format)  # after Faust's own set-up
        async for events in stream.take_events(config.batch_size, within=config.batch_wait_s):
            started = time.perf_counter()
            outcomes: list[Outcome] = await asyncio.to_thread(
                stage.process, [_source(e) for e in events]
            )
            pending = [
                await _target(o).send(key=o.key, value=o.value, force=True) for o in outcomes
            ]
            for delivery in pending:
                await delivery
            seconds = time.perf_counter() - started
            log.info(
                "batch",
                extra={
                    "agent": name,
                    "events": len(events),
                    "dead_letters": sum(isinstance(o, DeadLettered) for o in outcomes),
                    "seconds": round(seconds, 3),
                    "events_per_s": round(len(events) / seconds, 1),
                },
            )

    if role.name == CORE:

        @app.agent(images, name="embed")
        async def embed(stream: Any) -> None:
            stage = await asyncio.to_thread(adapters.embed_stage)
            await run(stream, stage, "embed", embeddings)

        @app.agent(embeddings, name="index")
        async def index(stream: Any) -> None:
            stage = await asyncio.to_thread(adapters.index_stage)
            await run(stream, stage, "index", dead_letters)

        @app.agent(object_events, name="bridge")
        async def bridge(stream: Any) -> None:
            stage = await asyncio.to_thread(adapters.object_events_stage)
            await run(stream, stage, "bridge", images)

    if role.name == FEATURES:

        @app.agent(images, name="features")
        async def features(stream: Any) -> None:
            stage = await asyncio.to_thread(adapters.features_stage)
            await run(stream, stage, "features", dead_letters)

    if role.name == THUMBNAILS:

        @app.agent(images, name="thumbnails")
        async def thumbnails(stream: Any) -> None:
            stage = await asyncio.to_thread(adapters.thumbnails_stage)
            await run(stream, stage, "thumbnails", dead_letters)

    if role.name == DUPLICATES:

        @app.agent(embeddings, name="duplicates")
        async def duplicates(stream: Any) -> None:
            stage = await asyncio.to_thread(adapters.duplicates_stage)
            await run(stream, stage, "duplicates", named(settings.kafka.duplicates_topic))

    if role.name in (CORE, DUPLICATES):

        @app.timer(interval=config.resubscribe_check_s)
        async def follow_generations() -> None:
            """A generation filled from another topic was registered, or one retired: stop,
            so that the supervisor starts the worker again with the new subscriptions."""
            wanted = await asyncio.to_thread(indexed_topics, settings)
            # an empty registry (a rebuild from nothing under way) names nothing to follow
            if wanted and set(wanted) != set(subscribed):
                log.info("resubscribing", extra={"subscribed": subscribed, "wanted": wanted})
                os.kill(os.getpid(), signal.SIGTERM)

    return app


app = create_app(get_settings(), os.environ.get(WORKER_ROLE, CORE))
