"""MySQL / MariaDB holding image metadata. The schema is a list of numbered migrations,
applied once each and recorded in `schema_migrations`."""

from __future__ import annotations

import json
import queue
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import pymysql
from pymysql.connections import Connection

from cbir.domain.errors import NotProvisioned, Rejected, ServiceUnavailable
from cbir.domain.rows import ANY_TIME, ImageRow, ImageStatus, TakenWindow
from cbir.settings import MySQLSettings
from schemas.events import ImageMetadata

T = TypeVar("T")
# MySQL's ER_NO_SUCH_TABLE: the tables are not made yet
NO_SUCH_TABLE = 1146

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE IF NOT EXISTS images (
            image_id CHAR(64) NOT NULL PRIMARY KEY COMMENT 'sha256 of the image bytes',
            object_key VARCHAR(255) NOT NULL,
            file_name VARCHAR(1024) NOT NULL DEFAULT '',
            source VARCHAR(255) NOT NULL DEFAULT '',
            content_type VARCHAR(100) NOT NULL DEFAULT '',
            size_bytes BIGINT NOT NULL DEFAULT 0,
            width INT NOT NULL DEFAULT 0,
            height INT NOT NULL DEFAULT 0,
            tags JSON NOT NULL,
            status ENUM('pending', 'indexed', 'failed', 'deleted') NOT NULL DEFAULT 'pending',
            error TEXT NULL,
            model_id VARCHAR(255) NULL COMMENT 'the model whose vector is indexed',
            generation VARCHAR(255) NULL COMMENT 'the Milvus collection holding the vector',
            uploaded_at DATETIME(6) NOT NULL,
            updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
                ON UPDATE CURRENT_TIMESTAMP(6),
            KEY images_source (source),
            KEY images_uploaded_at (uploaded_at),
            KEY images_status (status)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
        """,
    ),
    (
        2,
        """
        CREATE TABLE IF NOT EXISTS index_state (
            id TINYINT NOT NULL PRIMARY KEY,
            generation BIGINT NOT NULL COMMENT 'bumped after every change of the index',
            milvus_ts BIGINT UNSIGNED NOT NULL DEFAULT 0
                COMMENT 'Milvus timestamp of the last write: searches wait for no more'
        ) ENGINE=InnoDB
        """,
    ),
    (3, "INSERT IGNORE INTO index_state (id, generation) VALUES (1, 0)"),
    (
        4,
        """
        CREATE TABLE IF NOT EXISTS generations (
            id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            name VARCHAR(255) NOT NULL UNIQUE COMMENT 'the Milvus collection',
            model VARCHAR(255) NOT NULL COMMENT 'the Triton model that embeds for it',
            model_id VARCHAR(255) NOT NULL COMMENT 'name:version:dim:pooling:fingerprint',
            dim INT NOT NULL,
            embeddings_topic VARCHAR(249) NOT NULL COMMENT 'the topic it is filled from',
            index_type VARCHAR(32) NOT NULL,
            index_params JSON NOT NULL COMMENT 'the build parameters of its vector index',
            state ENUM('building', 'live', 'retired', 'dropped', 'abandoned') NOT NULL,
            created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            live_at DATETIME(6) NULL,
            retired_at DATETIME(6) NULL,
            drop_after DATETIME(6) NULL COMMENT 'a retired generation is dropped after this',
            KEY generations_state (state)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
        """,
    ),
    # the index generation keys cached results: a database made anew (a rebuild from
    # nothing) must not count again from 0 into keys cached before it, so it starts at the
    # present in microseconds
    (
        5,
        "UPDATE index_state SET generation ="
        " GREATEST(generation, FLOOR(UNIX_TIMESTAMP(NOW(6)) * 1000000)) WHERE id = 1",
    ),
    # S3 allows object keys of 1024 bytes; a key of an S3 client longer than 255 characters
    # was refused for good (and, before the stages told permanent from transient, retried
    # for ever). No index covers the column, so its length costs nothing.
    (6, "ALTER TABLE images MODIFY object_key VARCHAR(1024) NOT NULL"),
    # the probe-set evaluation a generation passed (or failed) before its switch
    (7, "ALTER TABLE generations ADD COLUMN evaluation JSON NULL"),
    # the capture metadata of a photograph's EXIF (NULL where it does not say)
    (
        8,
        """
        ALTER TABLE images
            ADD COLUMN taken_at DATETIME(3) NULL
                COMMENT 'EXIF capture time: the camera clock, no time zone',
            ADD COLUMN camera_make VARCHAR(64) NULL,
            ADD COLUMN camera_model VARCHAR(64) NULL,
            ADD KEY images_taken_at (taken_at)
        """,
    ),
)


def open_connection(
    settings: MySQLSettings, database: bool = True, timeout_s: float | None = None
) -> Connection:
    """A connection the caller closes; `timeout_s` bounds each read and write on it (a
    paused server then fails the call instead of holding it for ever)."""
    return pymysql.connect(
        host=settings.host,
        port=settings.port,
        user=settings.user,
        password=settings.password.get_secret_value(),
        database=settings.database if database else None,
        connect_timeout=min(5.0, timeout_s or 5.0),
        read_timeout=timeout_s,
        write_timeout=timeout_s,
        autocommit=True,
        charset="utf8mb4",
        init_command="SET time_zone = '+00:00'",  # DATETIME columns hold UTC
    )


@contextmanager
def connect(settings: MySQLSettings, database: bool = True) -> Iterator[Connection]:
    conn = open_connection(settings, database)
    try:
        yield conn
    finally:
        conn.close()


def migrate(conn: Connection) -> list[int]:
    """Apply the migrations this database has not seen; returns their numbers."""
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INT NOT NULL PRIMARY KEY,"
            " applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
        )
        cur.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in cur.fetchall()}
        applied = []
        for version, ddl in MIGRATIONS:
            if version in done:
                continue
            cur.execute(ddl)
            cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied


def existing_image_ids(conn: Connection, image_ids: Iterable[str]) -> set[str]:
    """Which of these images have a row (pending, indexed or failed)."""
    wanted = list(image_ids)
    if not wanted:
        return set()
    with conn.cursor() as cur:
        placeholders = ", ".join(["%s"] * len(wanted))
        cur.execute(f"SELECT image_id FROM images WHERE image_id IN ({placeholders})", wanted)
        return {row[0] for row in cur.fetchall()}


# Every value a placeholder: pymysql's executemany sends one multi-row INSERT only for a
# statement its RE_INSERT_VALUES matches (placeholders alone inside VALUES (...)); a literal
# there makes it send one statement per row (a round trip each: 64 per index batch).
_COLUMNS = (
    "image_id, object_key, file_name, source, content_type, size_bytes, width, height, tags,"
    " uploaded_at, taken_at, camera_make, camera_model, status"
)
_PLACEHOLDERS = ", ".join(["%s"] * 14)
INSERT_PENDING = f"INSERT IGNORE INTO images ({_COLUMNS}) VALUES ({_PLACEHOLDERS})"
UPSERT_INDEXED = (
    f"INSERT INTO images ({_COLUMNS}, model_id, generation)"
    f" VALUES ({_PLACEHOLDERS}, %s, %s)"
    " ON DUPLICATE KEY UPDATE object_key = VALUES(object_key),"
    " file_name = VALUES(file_name), source = VALUES(source),"
    " content_type = VALUES(content_type), size_bytes = VALUES(size_bytes),"
    " width = VALUES(width), height = VALUES(height), tags = VALUES(tags),"
    " status = VALUES(status), error = NULL, uploaded_at = VALUES(uploaded_at),"
    " taken_at = VALUES(taken_at), camera_make = VALUES(camera_make),"
    " camera_model = VALUES(camera_model),"
    " model_id = VALUES(model_id), generation = VALUES(generation)"
)


def insert_pending(conn: Connection, images: Sequence[ImageMetadata]) -> None:
    """A `pending` row per image sent into the pipeline; an existing row is left alone."""
    if not images:
        return
    rows = [(*_metadata_columns(i), "pending") for i in images]
    with conn.cursor() as cur:
        cur.executemany(INSERT_PENDING, rows)


def _metadata_columns(image: ImageMetadata) -> tuple[Any, ...]:
    """image_id, object_key, file_name, source, content_type, size_bytes, width, height,
    tags, uploaded_at, taken_at, camera_make, camera_model: the columns both writers fill
    from an image's metadata."""
    return (
        image.image_id,
        image.object_key,
        image.file_name,
        image.source,
        image.content_type,
        image.size_bytes,
        image.width,
        image.height,
        json.dumps(list(image.tags)),
        _utc(image.uploaded_at),
        image.taken_at,  # the camera's clock, stored as it is (no zone to convert from)
        image.camera_make,
        image.camera_model,
    )


def _utc(moment: datetime) -> datetime:
    """MySQL DATETIME holds no zone: store UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def upsert_indexed(
    conn: Connection, images: Sequence[ImageMetadata], model_id: str, generation: str
) -> None:
    """Rows of images whose vectors are indexed: INSERT ... ON DUPLICATE KEY UPDATE."""
    if not images:
        return
    rows = [(*_metadata_columns(i), "indexed", model_id, generation) for i in images]
    with conn.cursor() as cur:
        cur.executemany(UPSERT_INDEXED, rows)


def mark_failed(conn: Connection, reasons: Mapping[str, str]) -> None:
    """Mark images `failed`, each with its reason (for status queries)."""
    if not reasons:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE images SET status = 'failed', error = %s WHERE image_id = %s",
            [(reason[:2000], image_id) for image_id, reason in reasons.items()],
        )


def delete_images(conn: Connection, image_ids: Sequence[str]) -> None:
    if not image_ids:
        return
    with conn.cursor() as cur:
        placeholders = ", ".join(["%s"] * len(image_ids))
        cur.execute(f"DELETE FROM images WHERE image_id IN ({placeholders})", list(image_ids))


def lookup(conn: Connection, image_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Rows by image id, as dictionaries."""
    if not image_ids:
        return {}
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        placeholders = ", ".join(["%s"] * len(image_ids))
        cur.execute(f"SELECT * FROM images WHERE image_id IN ({placeholders})", list(image_ids))
        return {row["image_id"]: row for row in cur.fetchall()}


def bump_generation(conn: Connection, milvus_ts: int) -> None:
    """Record that the index changed, after the change is written, with the Milvus timestamp
    of the write. Cached search results are keyed by the generation, so none from before a
    change is served after it; and a search made after reading the generation asks Milvus
    to include writes up to `milvus_ts` (cheap, where 'Strong' consistency waits ~200 ms)."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE index_state SET generation = generation + 1,"
            " milvus_ts = GREATEST(milvus_ts, %s) WHERE id = 1",
            (milvus_ts,),
        )


def index_generation(conn: Connection) -> tuple[int, int]:
    """The generation and the Milvus timestamp its searches must include."""
    with conn.cursor() as cur:
        cur.execute("SELECT generation, milvus_ts FROM index_state WHERE id = 1")
        row = cur.fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)


def recent(
    conn: Connection,
    limit: int,
    offset: int = 0,
    status: str | None = None,
    taken: TakenWindow = ANY_TIME,
) -> list[dict[str, Any]]:
    """Rows newest first (for browsing), optionally of one status; with a bounded `taken`
    window, the photographs taken in it, latest taken first."""
    conditions: list[str] = []
    params: list[Any] = []
    if status:
        conditions.append("status = %s")
        params.append(status)
    order = "uploaded_at DESC"
    if taken.bounded:
        conditions.append("taken_at IS NOT NULL")
        order = "taken_at DESC"
    if taken.after is not None:
        conditions.append("taken_at >= %s")
        params.append(taken.after)
    if taken.before is not None:
        conditions.append("taken_at < %s")
        params.append(taken.before)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(
            f"SELECT * FROM images {where} ORDER BY {order}, image_id LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        return list(cur.fetchall())


def indexed_after(conn: Connection, image_id: str, limit: int) -> list[dict[str, Any]]:
    """Indexed rows by image id, from just after `image_id` (the primary key's order)."""
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(
            "SELECT * FROM images WHERE status = 'indexed' AND image_id > %s "
            "ORDER BY image_id LIMIT %s",
            [image_id, limit],
        )
        return list(cur.fetchall())


class ConnectionPool:
    """A few connections shared by the threads of a server: one per request is 1-2 ms of
    handshake on loopback, a pooled one is free. A connection that saw any error is closed,
    not returned (its state is unknown: a broken socket, a half-read result)."""

    def __init__(
        self, settings: MySQLSettings, size: int = 8, timeout_s: float | None = None
    ) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue(maxsize=size)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = open_connection(self.settings, timeout_s=self.timeout_s)
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def run(self, action: Callable[[Connection], T]) -> T:
        """`action` on a pooled connection, retried once on a fresh one if the pooled one
        had gone away (the server restarted, or closed it for idleness)."""
        try:
            with self.connection() as conn:
                return action(conn)
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
            if "timed out" in str(exc):  # a server that is slow, not a stale connection:
                raise  # a second try would only wait as long again
            with self.connection() as conn:
                return action(conn)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def status_counts(conn: Connection) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("SELECT status, COUNT(*) FROM images GROUP BY status")
        return {str(status): int(count) for status, count in cur.fetchall()}


def image_ids_for_object(conn: Connection, object_key: str) -> list[str]:
    """The images whose bytes are the object at this key."""
    with conn.cursor() as cur:
        cur.execute("SELECT image_id FROM images WHERE object_key = %s", (object_key,))
        return [row[0] for row in cur.fetchall()]


def image_row(row: dict[str, Any]) -> ImageRow:
    """A row of the images table as its typed value."""
    tags = row.get("tags")
    return ImageRow(
        image_id=str(row["image_id"]),
        object_key=str(row["object_key"]),
        file_name=str(row.get("file_name") or ""),
        source=str(row.get("source") or ""),
        content_type=str(row.get("content_type") or ""),
        size_bytes=int(row.get("size_bytes") or 0),
        width=int(row.get("width") or 0),
        height=int(row.get("height") or 0),
        tags=tuple(json.loads(tags)) if isinstance(tags, str | bytes) else (),
        status=ImageStatus(str(row["status"])),
        uploaded_at=row.get("uploaded_at"),
        taken_at=row.get("taken_at"),
        camera_make=row.get("camera_make"),
        camera_model=row.get("camera_model"),
        error=row.get("error"),
        model_id=row.get("model_id"),
        generation=row.get("generation"),
    )


class MySQLMetadataStore:
    """The `MetadataStore` port on MySQL / MariaDB: pooled connections, each call one
    statement (or one transaction); a server that is away raises ServiceUnavailable, a value
    the server refuses for good raises Rejected."""

    def __init__(
        self, settings: MySQLSettings, pool_size: int = 8, timeout_s: float | None = None
    ) -> None:
        self.settings = settings
        self.pool = ConnectionPool(settings, pool_size, timeout_s)

    def _run(self, action: Callable[[Connection], T]) -> T:
        with translated_errors(self.settings):
            return self.pool.run(action)

    def migrate(self) -> list[int]:
        return self._run(migrate)

    def existing_image_ids(self, image_ids: Sequence[str]) -> set[str]:
        return self._run(lambda c: existing_image_ids(c, image_ids))

    def insert_pending(self, images: Sequence[ImageMetadata]) -> None:
        self._run(lambda c: insert_pending(c, images))

    def upsert_indexed(
        self, images: Sequence[ImageMetadata], model_id: str, generation: str
    ) -> None:
        self._run(lambda c: upsert_indexed(c, images, model_id, generation))

    def mark_failed(self, reasons: Mapping[str, str]) -> None:
        self._run(lambda c: mark_failed(c, reasons))

    def delete_images(self, image_ids: Sequence[str]) -> None:
        self._run(lambda c: delete_images(c, image_ids))

    def lookup(self, image_ids: Sequence[str]) -> dict[str, ImageRow]:
        rows = self._run(lambda c: lookup(c, image_ids))
        return {image_id: image_row(row) for image_id, row in rows.items()}

    def bump_generation(self, milvus_ts: int) -> None:
        self._run(lambda c: bump_generation(c, milvus_ts))

    def index_generation(self) -> tuple[int, int]:
        return self._run(index_generation)

    def recent(
        self, limit: int, offset: int, status: str | None, taken: TakenWindow = ANY_TIME
    ) -> list[ImageRow]:
        rows = self._run(lambda c: recent(c, limit, offset, status, taken))
        return [image_row(r) for r in rows]

    def indexed_after(self, image_id: str, limit: int) -> list[ImageRow]:
        return [image_row(r) for r in self._run(lambda c: indexed_after(c, image_id, limit))]

    def status_counts(self) -> dict[str, int]:
        return self._run(status_counts)

    def image_ids_for_object(self, object_key: str) -> list[str]:
        return self._run(lambda c: image_ids_for_object(c, object_key))

    def close(self) -> None:
        self.pool.close()


@contextmanager
def translated_errors(settings: MySQLSettings) -> Iterator[None]:
    """pymysql's errors in the project's terms: away (transient) or refused (permanent)."""
    try:
        yield
    except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
        raise ServiceUnavailable(
            "MySQL", f"{settings.host}:{settings.port}", "CBIR_MYSQL__HOST / CBIR_MYSQL__PORT", exc
        ) from exc
    except (pymysql.err.DataError, pymysql.err.IntegrityError) as exc:
        raise Rejected(f"MySQL refused the row: {exc}") from exc
    except pymysql.err.ProgrammingError as exc:
        if exc.args and exc.args[0] == NO_SUCH_TABLE:
            raise NotProvisioned(
                f"MySQL has no such table yet ({exc}): `cbir stack up` or the processors' first "
                "start make the tables"
            ) from exc
        raise
