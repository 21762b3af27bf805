"""Category prediction from the features: a similarity-weighted vote over the tags of an
image's nearest neighbours (the design's online flow predicts a category from the
descriptor; a k-NN vote needs no classifier to train and follows the index as it grows)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float  # the label's share of the neighbours' similarity, 0..1
    neighbours: int  # how many of the neighbours carry it


def predict_labels(
    neighbours: Sequence[tuple[Sequence[str], float]], top: int = 3
) -> list[Prediction]:
    """Labels for a query from its neighbours, given as (tags, similarity) best first.

    Each neighbour's weight is its similarity (negative ones count 0), shared by its tags;
    a label's confidence is its weight over the weight of every neighbour, untagged ones
    included, so that neighbours without tags lower the confidence instead of vanishing.
    Ties go to the label met first (the nearer)."""
    total = sum(max(score, 0.0) for _, score in neighbours)
    if total <= 0:
        return []
    weights: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for tags, score in neighbours:
        if score <= 0:  # a neighbour no more similar than a random one votes for nothing
            continue
        distinct = list(dict.fromkeys(tags))
        for tag in distinct:
            weights[tag] += max(score, 0.0) / len(distinct)
            counts[tag] += 1
    ranked = sorted(weights, key=lambda tag: -weights[tag])  # stable: nearer first on ties
    return [Prediction(tag, round(weights[tag] / total, 4), counts[tag]) for tag in ranked[:top]]
