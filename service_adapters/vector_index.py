"""Milvus holding the image embeddings."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

with warnings.catch_warnings():
    # pymilvus 2.3 imports pkg_resources, which warns on every start
    warnings.simplefilter("ignore")
    from pymilvus import connections, utility

from cbir.settings import MilvusSettings


@contextmanager
def connection(settings: MilvusSettings, timeout_s: float = 10.0) -> Iterator[str]:
    """A pymilvus connection alias, closed on exit."""
    alias = f"cbir-{uuid.uuid4().hex[:8]}"
    connections.connect(alias=alias, host=settings.host, port=str(settings.port), timeout=timeout_s)
    try:
        yield alias
    finally:
        connections.disconnect(alias)


def list_collections(settings: MilvusSettings, timeout_s: float = 10.0) -> list[str]:
    with connection(settings, timeout_s) as alias:
        return list(utility.list_collections(timeout=timeout_s, using=alias))
