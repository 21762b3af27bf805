"""Waiting for the pipeline, and namespaced settings, shared by the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from cbir.adapters import kafka_topics, metadata_store, object_store
from cbir.settings import Settings
from cbir.stack.launcher import Launcher
from cbir.stack.services.mariadb import MariaDBService
from processors import WORKER_ROLE


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def rows(settings: Settings, image_ids: set[str]) -> dict[str, dict[str, object]]:
    with metadata_store.connect(settings.mysql) as conn:
        return metadata_store.lookup(conn, sorted(image_ids))


def indexed(settings: Settings, image_ids: set[str]) -> int:
    return sum(r["status"] == "indexed" for r in rows(settings, image_ids).values())


def role_workers(launcher: Launcher, role: str) -> list[psutil.Process]:
    """The processors supervisor's workers of one role (`cbir.wiring.consumer_roles`)."""
    pid = launcher.service("processors").process.pid
    assert pid is not None, "the processors are not running"
    return [
        child
        for child in psutil.Process(pid).children()
        if child.environ().get(WORKER_ROLE) == role
    ]


def namespaced(base: Settings, name: str, data_dir: Path, **sections: dict[str, Any]) -> Settings:
    """The session stack's servers, with names of a test module's own (its topics, images
    bucket, database, Milvus alias, processors' group, data folder), so that its pipeline runs
    beside the session's and touches nothing of it; `sections`: more changes, by settings
    section (a module with local features on names its own features bucket and makes it)."""
    kafka = base.kafka.model_copy(
        update={
            "images_topic": f"{name}.images",
            "embeddings_topic": f"{name}.embeddings",
            "dead_letter_topic": f"{name}.dead-letter",
            "object_events_topic": f"{name}.object-events",
            "duplicates_topic": f"{name}.duplicates",
        }
    )
    own: dict[str, dict[str, Any]] = {
        "minio": {"bucket": f"{name}-images"},
        "milvus": {"collection": name},
        "mysql": {"database": f"cbir_{name}"},
        "processors": {"app_id": f"cbir-{name}-processors", "resubscribe_check_s": 2.0},
        "stack": {"data_dir": data_dir},
        # thumbnails are tested in the session's own pipeline: a namespace makes none unless
        # it asks (a worker less on two cores)
        "thumbnails": {"enabled": False},
    }
    for section, changes in sections.items():
        own[section] = {**own.get(section, {}), **changes}
    updates: dict[str, Any] = {"kafka": kafka}
    for section, changes in own.items():
        updates[section] = getattr(base, section).model_copy(update=changes)
    return base.model_copy(update=updates)


@contextmanager
def namespace_apps(base: Launcher, settings: Settings, only: list[str]) -> Iterator[Launcher]:
    """A namespace's database, topics and buckets made on the session's servers, and its
    applications (`only`: processors, query-api) running while the block runs."""
    MariaDBService(settings, base.layout).provision()
    kafka_topics.ensure_topics(settings.kafka)
    object_store.ensure_bucket(settings.minio)
    if settings.local_features.enabled:
        object_store.ensure_bucket(settings.minio, settings.local_features.bucket)
    apps = Launcher(settings, only=only)
    apps.up()
    try:
        yield apps
    finally:
        apps.down()
