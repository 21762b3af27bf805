"""MySQL / MariaDB holding image metadata. The schema is a list of numbered migrations,
applied once each and recorded in `schema_migrations`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import pymysql
from pymysql.connections import Connection

from cbir.settings import MySQLSettings
from schemas.events import ImageMetadata

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
)


@contextmanager
def connect(settings: MySQLSettings, database: bool = True) -> Iterator[Connection]:
    conn = pymysql.connect(
        host=settings.host,
        port=settings.port,
        user=settings.user,
        password=settings.password.get_secret_value(),
        database=settings.database if database else None,
        connect_timeout=5,
        autocommit=True,
        charset="utf8mb4",
    )
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


def insert_pending(conn: Connection, images: Sequence[ImageMetadata]) -> None:
    """A `pending` row per image sent into the pipeline; an existing row is left alone."""
    if not images:
        return
    rows = [
        (
            i.image_id,
            i.object_key,
            i.file_name,
            i.source,
            i.content_type,
            i.size_bytes,
            i.width,
            i.height,
            json.dumps(list(i.tags)),
            _utc(i.uploaded_at),
        )
        for i in images
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT IGNORE INTO images (image_id, object_key, file_name, source, content_type,"
            " size_bytes, width, height, tags, status, uploaded_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s)",
            rows,
        )


def _utc(moment: datetime) -> datetime:
    """MySQL DATETIME holds no zone: store UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
