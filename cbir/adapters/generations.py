"""The generation registry (the `GenerationRegistry` port) in MySQL beside the metadata.
What a generation is and its lifecycle: `cbir/domain/generations.py`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pymysql
from pymysql.connections import Connection

from cbir.adapters.metadata_store import open_connection, translated_errors
from cbir.domain.errors import RegistryBusy
from cbir.domain.generations import Generation, GenerationState, generation_name
from cbir.settings import MySQLSettings

LOCK = "cbir.generations"


def _generation(row: dict[str, Any]) -> Generation:
    params = row["index_params"]
    return Generation(
        id=int(row["id"]),
        name=str(row["name"]),
        model=str(row["model"]),
        model_id=str(row["model_id"]),
        dim=int(row["dim"]),
        embeddings_topic=str(row["embeddings_topic"]),
        index_type=str(row["index_type"]),
        index_params=json.loads(params) if isinstance(params, str | bytes) else dict(params),
        state=GenerationState(str(row["state"])),
        created_at=row.get("created_at"),
        live_at=row.get("live_at"),
        retired_at=row.get("retired_at"),
        drop_after=row.get("drop_after"),
        evaluation=json.loads(row["evaluation"]) if row.get("evaluation") else None,
    )


def _select(conn: Connection, where: str = "", params: tuple[Any, ...] = ()) -> list[Generation]:
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT * FROM generations {where} ORDER BY id", params)
        return [_generation(row) for row in cur.fetchall()]


def all_generations(conn: Connection) -> list[Generation]:
    return _select(conn)


def active(conn: Connection) -> list[Generation]:
    """The generations the processors write to: building and live."""
    return _select(conn, "WHERE state IN ('building', 'live')")


def live(conn: Connection) -> Generation | None:
    found = _select(conn, "WHERE state = 'live'")
    return found[-1] if found else None


def by_id(conn: Connection, generation_id: int) -> Generation | None:
    found = _select(conn, "WHERE id = %s", (generation_id,))
    return found[0] if found else None


def expired(conn: Connection) -> list[Generation]:
    """Retired generations whose grace period is over."""
    return _select(conn, "WHERE state = 'retired' AND drop_after <= UTC_TIMESTAMP(6)")


@contextmanager
def locked(conn: Connection, timeout_s: int = 30) -> Iterator[None]:
    """The registry's lock (MySQL GET_LOCK), so that two processes never register the first
    generation twice or switch at the same moment."""
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, %s)", (LOCK, timeout_s))
        (got,) = cur.fetchone() or (0,)
    if got != 1:
        raise RegistryBusy(
            f"the generation registry stayed locked for {timeout_s} s: another reindex or "
            "processor is switching; run again when it is done"
        )
    try:
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT RELEASE_LOCK(%s)", (LOCK,))


@contextmanager
def transaction(conn: Connection) -> Iterator[None]:
    """Statements that commit together or not at all (the connection is autocommit)."""
    conn.begin()
    try:
        yield
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def register(
    conn: Connection,
    *,
    alias: str,
    model: str,
    model_id: str,
    dim: int,
    embeddings_topic: str,
    index_type: str,
    index_params: dict[str, Any],
    state: GenerationState,
    taken: Callable[[str], bool] = lambda _name: False,
) -> Generation:
    """A new generation with its collection name (the alias, its number, its model); the
    caller holds the lock and creates the collection. A name `taken` already (a collection
    left from before the registry was lost) is passed over: the next number is used."""
    columns = (model, model_id, dim, embeddings_topic, index_type, json.dumps(index_params))
    while True:
        # the name holds the row's number, known only once it is inserted: the row is written
        # and named in one transaction, so that no reader (the processors read the registry
        # every batch) ever sees it under its placeholder, which is no collection name
        with transaction(conn), conn.cursor() as cur:
            cur.execute(
                "INSERT INTO generations (name, model, model_id, dim, embeddings_topic,"
                " index_type, index_params, state, live_at) VALUES (UUID(), %s, %s, %s,"
                " %s, %s, %s, %s, IF(%s = 'live', UTC_TIMESTAMP(6), NULL))",
                (*columns, str(state), str(state)),
            )
            number = int(cur.lastrowid)
            name = generation_name(alias, number, model_id)
            cur.execute("UPDATE generations SET name = %s WHERE id = %s", (name, number))
        if not taken(name):
            found = by_id(conn, number)
            assert found is not None
            return found
        set_state(conn, number, GenerationState.ABANDONED)


def record_evaluation(conn: Connection, generation_id: int, evaluation: dict[str, Any]) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE generations SET evaluation = %s WHERE id = %s",
            (json.dumps(evaluation), generation_id),
        )


def set_state(conn: Connection, generation_id: int, state: GenerationState) -> None:
    with conn.cursor() as cur:
        cur.execute("UPDATE generations SET state = %s WHERE id = %s", (str(state), generation_id))


def make_live(conn: Connection, new: Generation, grace_s: float, milvus_ts: int) -> list[str]:
    """In one transaction: `new` live, the live one retired (dropped after `grace_s`), every
    indexed image's row pointing at `new`, the index generation bumped (cached results and the
    API's view of the alias are refreshed). Returns the names of the generations retired."""
    with transaction(conn), conn.cursor() as cur:
        cur.execute("SELECT name FROM generations WHERE state = 'live' AND id != %s", (new.id,))
        retired = [str(row[0]) for row in cur.fetchall()]
        cur.execute(
            "UPDATE generations SET state = 'retired', retired_at = UTC_TIMESTAMP(6),"
            " drop_after = UTC_TIMESTAMP(6) + INTERVAL %s SECOND"
            " WHERE state = 'live' AND id != %s",
            (int(grace_s), new.id),
        )
        cur.execute(
            "UPDATE generations SET state = 'live', live_at = UTC_TIMESTAMP(6) WHERE id = %s",
            (new.id,),
        )
        cur.execute(
            "UPDATE images SET model_id = %s, generation = %s WHERE status = 'indexed'",
            (new.model_id, new.name),
        )
        cur.execute(
            "UPDATE index_state SET generation = generation + 1,"
            " milvus_ts = GREATEST(milvus_ts, %s) WHERE id = 1",
            (milvus_ts,),
        )
    return retired


class MySQLGenerationRegistry:
    """The `GenerationRegistry` port: one connection of its own (the registry's lock is held
    by a MySQL session), opened again after it breaks; one caller at a time."""

    def __init__(self, settings: MySQLSettings) -> None:
        self.settings = settings
        self._conn: Connection | None = None
        self._mutex = threading.RLock()

    def _connection(self) -> Connection:
        if self._conn is not None:
            try:
                self._conn.ping(reconnect=False)
            except pymysql.MySQLError:
                self._conn.close()
                self._conn = None
        if self._conn is None:
            self._conn = open_connection(self.settings)
        return self._conn

    def _run(self, action: Callable[[Connection], Any]) -> Any:
        with self._mutex, translated_errors(self.settings):
            return action(self._connection())

    def active(self) -> list[Generation]:
        return list(self._run(active))

    def live(self) -> Generation | None:
        found: Generation | None = self._run(live)
        return found

    def all(self) -> list[Generation]:
        return list(self._run(all_generations))

    def expired(self) -> list[Generation]:
        return list(self._run(expired))

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._mutex, translated_errors(self.settings), locked(self._connection()):
            yield

    def register(
        self,
        *,
        alias: str,
        model: str,
        model_id: str,
        dim: int,
        embeddings_topic: str,
        index_type: str,
        index_params: dict[str, Any],
        state: GenerationState,
        taken: Callable[[str], bool],
    ) -> Generation:
        found: Generation = self._run(
            lambda c: register(
                c,
                alias=alias,
                model=model,
                model_id=model_id,
                dim=dim,
                embeddings_topic=embeddings_topic,
                index_type=index_type,
                index_params=index_params,
                state=state,
                taken=taken,
            )
        )
        return found

    def record_evaluation(self, generation: Generation, evaluation: dict[str, Any]) -> None:
        self._run(lambda c: record_evaluation(c, generation.id, evaluation))

    def set_state(self, generation: Generation, state: GenerationState) -> None:
        generation.state.check_move(state)
        self._run(lambda c: set_state(c, generation.id, state))

    def make_live(self, new: Generation, grace_s: float, milvus_ts: int) -> list[str]:
        new.state.check_move(GenerationState.LIVE)
        return list(self._run(lambda c: make_live(c, new, grace_s, milvus_ts)))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
