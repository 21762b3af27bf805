"""What a batch of events on an embeddings topic does to the stores: pure logic.

Within a batch the last event of an image wins, exactly as if the events were applied one by
one: an upload then a delete ends deleted, a delete then an upload ends indexed. The events
of one image share a key, hence a partition, hence their order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.events import EmbeddingComputed, ImageDeleted


@dataclass
class IndexPlan:
    upserts: dict[str, EmbeddingComputed] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)  # image ids, in log order


def plan_index(events: list[tuple[str, EmbeddingComputed | ImageDeleted | None]]) -> IndexPlan:
    """`events` are (image id, event) in log order; None is a tombstone (a delete)."""
    upserts: dict[str, EmbeddingComputed] = {}
    deletes: dict[str, None] = {}
    for image_id, event in events:
        if isinstance(event, EmbeddingComputed):
            deletes.pop(image_id, None)
            upserts[image_id] = event
        else:
            upserts.pop(image_id, None)
            deletes[image_id] = None
    return IndexPlan(upserts, list(deletes))
