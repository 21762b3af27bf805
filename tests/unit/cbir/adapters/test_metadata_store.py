"""The batched row writes: one multi-row statement per batch, not a round trip per row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymysql.cursors import RE_INSERT_VALUES

from cbir.adapters.metadata_store import (
    INSERT_PENDING,
    UPSERT_INDEXED,
    _metadata_columns,
    insert_pending,
    upsert_indexed,
)
from schemas.events import ImageMetadata


class RecordingCursor:
    """A fake cursor: what executemany was given."""

    def __init__(self, calls: list[tuple[str, list[tuple[object, ...]]]]) -> None:
        self.calls = calls

    def __enter__(self) -> RecordingCursor:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def executemany(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        self.calls.append((sql, rows))


class RecordingConnection:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[object, ...]]]] = []

    def cursor(self) -> RecordingCursor:
        return RecordingCursor(self.calls)


def _image(n: int) -> ImageMetadata:
    return ImageMetadata(
        f"{n:064x}", "images", f"k/{n}", "a.jpg", "cli", "image/jpeg", 10, 4, 3,
        datetime(2026, 1, 1, tzinfo=UTC), ("cat",),
    )  # fmt: skip


@pytest.mark.parametrize("sql", [INSERT_PENDING, UPSERT_INDEXED])
def test_statements_are_ones_pymysql_sends_as_one_multi_row_insert(sql: str) -> None:
    match = RE_INSERT_VALUES.match(sql)
    assert match is not None, "a literal inside VALUES (...) makes executemany go row by row"
    assert match.group(2).count("%s") == sql.split("(")[1].count(",") + 1  # one per column


def test_every_row_fills_every_placeholder_with_its_status() -> None:
    conn = RecordingConnection()
    images = [_image(1), _image(2)]
    insert_pending(conn, images)  # type: ignore[arg-type]
    upsert_indexed(conn, images, "m:1", "gen_1")  # type: ignore[arg-type]
    (pending_sql, pending), (indexed_sql, indexed) = conn.calls
    assert pending == [(*_metadata_columns(i), "pending") for i in images]
    assert indexed == [(*_metadata_columns(i), "indexed", "m:1", "gen_1") for i in images]
    assert all(len(row) == pending_sql.count("%s") for row in pending)
    assert all(len(row) == indexed_sql.count("%s") for row in indexed)
