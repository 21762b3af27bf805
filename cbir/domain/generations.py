"""Index generations and their lifecycle.

A generation is one physical Milvus collection, filled from one embeddings topic with the
vectors of one model, under one set of index parameters. Its life: `building` (being filled
by a replay while the live one serves), `live` (the alias points at it), `retired` (replaced;
kept for a grace period), `dropped` (its collection is gone), or `abandoned` (a build given up
before it went live). At most one generation is live. The processors write every event to
every building and live generation of the event's topic, and a replay fills the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cbir.domain.errors import InvalidValue
from cbir.domain.models import ModelId


class GenerationState(StrEnum):
    BUILDING = "building"
    LIVE = "live"
    RETIRED = "retired"
    DROPPED = "dropped"
    ABANDONED = "abandoned"

    @property
    def written(self) -> bool:
        """The processors write new events to it."""
        return self in (GenerationState.BUILDING, GenerationState.LIVE)

    @property
    def holds_topic(self) -> bool:
        """Its embeddings topic is still needed (not to be deleted)."""
        return self in (GenerationState.BUILDING, GenerationState.LIVE, GenerationState.RETIRED)

    def can_become(self, state: GenerationState) -> bool:
        return state in _NEXT[self]

    def check_move(self, state: GenerationState) -> None:
        if not self.can_become(state):
            raise InvalidValue(f"a {self} generation cannot become {state}")


_NEXT: dict[GenerationState, frozenset[GenerationState]] = {
    GenerationState.BUILDING: frozenset({GenerationState.LIVE, GenerationState.ABANDONED}),
    GenerationState.LIVE: frozenset({GenerationState.RETIRED}),
    GenerationState.RETIRED: frozenset({GenerationState.DROPPED}),
    GenerationState.DROPPED: frozenset(),
    GenerationState.ABANDONED: frozenset(),
}


@dataclass(frozen=True)
class Generation:
    id: int
    name: str  # the Milvus collection
    model: str  # the Triton model that embeds for it
    model_id: str
    dim: int
    embeddings_topic: str
    index_type: str
    index_params: dict[str, Any]
    state: GenerationState
    created_at: datetime | None = None
    live_at: datetime | None = None
    retired_at: datetime | None = None
    drop_after: datetime | None = None
    evaluation: dict[str, Any] | None = None  # the gate's (domain.gate.Evaluation), if any

    @property
    def live(self) -> bool:
        return self.state is GenerationState.LIVE


def generation_name(alias: str, number: int, model_id: str) -> str:
    """The physical collection of generation `number` behind the alias, e.g.
    `images__g3_mobilenet_v1_1a2b3c4d`: the alias, the generation, the model."""
    return f"{alias}__g{number}_{ModelId.parse(model_id).slug}"


def embeddings_topic_of(base_topic: str, model_id: str) -> str:
    """The embeddings topic a re-embed with another model fills: `<base>.<model slug>`."""
    return f"{base_topic}.{ModelId.parse(model_id).slug}"
