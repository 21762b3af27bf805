"""MySQL / MariaDB holding image metadata. The schema is a list of numbered migrations,
applied once each and recorded in `schema_migrations`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pymysql
from pymysql.connections import Connection

from cbir.settings import MySQLSettings

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
