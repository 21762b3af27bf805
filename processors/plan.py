"""What a batch of events on the embeddings topic does to the stores: pure logic.

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
    deletes: dict[str, str] = field(default_factory=dict)  # image id -> object key


def plan_index(
    events: list[tuple[str, EmbeddingComputed | ImageDeleted | None]],
    object_key: dict[str, str] | None = None,
) -> IndexPlan:
    """`events` are (image id, event) in log order; None is a tombstone (a delete)."""
    plan = IndexPlan()
    keys = object_key or {}
    for image_id, event in events:
        if isinstance(event, EmbeddingComputed):
            plan.deletes.pop(image_id, None)
            plan.upserts[image_id] = event
        else:
            plan.upserts.pop(image_id, None)
            plan.deletes[image_id] = keys.get(image_id, "")
    return plan
