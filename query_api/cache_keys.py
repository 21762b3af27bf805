"""Redis keys of the query cache (pure: no I/O).

- A query embedding is keyed by the model and the sha256 of the query image's bytes: the same
  bytes through the same model always give the same vector, so it never goes stale.
- A result list is keyed by everything that decides it: what was asked (an image's content
  hash, or a stored image's id), k, the filters, the search effort, the collection searched
  and the index generation. The generation is bumped after every change of the index, so a
  list cached before a change is never read after it (it just ages out).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

PREFIX = "cbir:v2"


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def embedding_key(model_id: str, image_hash: str) -> str:
    return f"{PREFIX}:embedding:{model_id}:{image_hash}"


def result_key(
    query: str,
    k: int,
    filters: dict[str, Any],
    effort: int | None,
    collection: str,
    generation: int,
) -> str:
    """`query` is `image:<sha256>` or `id:<image id>`; `filters` a JSON-able canonical form."""
    canonical = json.dumps(
        {"q": query, "k": k, "f": filters, "e": effort, "c": collection, "g": generation},
        sort_keys=True,
        separators=(",", ":"),
    )
    return f"{PREFIX}:results:{hashlib.sha256(canonical.encode()).hexdigest()}"
