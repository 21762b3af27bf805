"""The generation registry on the real MariaDB: a generation being registered is never seen
by a reader under its placeholder name (the processors read the registry every batch, and
a duplicates stage once searched a "collection" named by MariaDB's UUID() for ever)."""

from __future__ import annotations

import threading

import pytest

from cbir.adapters import generations, metadata_store
from cbir.domain.generations import GenerationState
from cbir.stack.launcher import Launcher
from cbir.stack.services.mariadb import MariaDBService

pytestmark = pytest.mark.integration


def test_a_registering_generation_is_never_read_under_a_placeholder(launcher: Launcher) -> None:
    base = launcher.settings
    mysql = base.mysql.model_copy(update={"database": "cbir_registry_race"})
    settings = base.model_copy(update={"mysql": mysql})
    MariaDBService(settings, launcher.layout).provision()
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        with metadata_store.connect(mysql) as conn:
            while not stop.is_set():
                seen.update(g.name for g in generations.active(conn))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with metadata_store.connect(mysql) as conn:
            registered = [
                generations.register(
                    conn,
                    alias="race",
                    model="mobilenet",
                    model_id="mobilenet:1:8d:gap:aaaaaaaaaaaa",
                    dim=8,
                    embeddings_topic="race.embeddings",
                    index_type="FLAT",
                    index_params={},
                    state=GenerationState.BUILDING,
                ).name
                for _ in range(200)
            ]
    finally:
        stop.set()
        reader.join(10)
    assert seen, "the reader read nothing"
    assert seen <= set(registered), sorted(seen - set(registered))[:3]
