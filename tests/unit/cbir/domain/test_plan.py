"""Per-image ordering in the index stage's plan, whatever the batching."""

from __future__ import annotations

import numpy as np

from cbir.domain.plan import plan_index
from schemas.events import EmbeddingComputed, ImageDeleted, ImageMetadata, now


def embedding(image_id: str, value: float = 1.0) -> EmbeddingComputed:
    image = ImageMetadata(
        image_id, "images", f"k/{image_id}", "f.jpg", "cli", "image/jpeg", 1, 1, 1, now()
    )
    return EmbeddingComputed.of(image, "m:1:2d:gap:f", np.array([value, 0.0]))


def test_upload_then_delete_ends_deleted_and_the_reverse_ends_indexed() -> None:
    plan = plan_index(
        [
            ("a", embedding("a")),
            ("a", ImageDeleted("a", "cli")),
            ("b", ImageDeleted("b", "cli")),
            ("b", embedding("b")),
            ("c", embedding("c")),
            ("c", None),
        ]
    )
    assert set(plan.upserts) == {"b"}
    assert set(plan.deletes) == {"a", "c"}


def test_the_last_upload_of_an_image_wins_and_counts_once() -> None:
    plan = plan_index([("a", embedding("a", 1.0)), ("a", embedding("a", 2.0))])
    assert list(plan.upserts) == ["a"]
    assert plan.upserts["a"].vector[0] == 2.0


def test_any_split_into_batches_ends_the_same() -> None:
    events: list[tuple[str, EmbeddingComputed | ImageDeleted | None]] = [
        ("a", embedding("a")),
        ("b", embedding("b")),
        ("a", ImageDeleted("a", "cli")),
        ("b", None),
        ("b", embedding("b")),
        ("c", embedding("c")),
    ]
    whole = plan_index(events)
    state: dict[str, bool] = {}
    for cut in range(len(events) + 1):
        state.clear()
        for part in (events[:cut], events[cut:]):
            plan = plan_index(part)
            state.update(dict.fromkeys(plan.deletes, False))
            state.update(dict.fromkeys(plan.upserts, True))
        assert {k for k, present in state.items() if present} == set(whole.upserts)
