"""Retrieval metrics on ranked lists, pure numpy.

A ranking is judged by its relevance vector: relevant[i] is True when the item at rank i+1 is
relevant to the query. `total_relevant` counts every relevant item in the collection, retrieved
or not (recall, AP and NDCG need it). Definitions follow the usual ones (and scikit-learn's
where it has the metric; the tests compare):

- precision@k = relevant in the top k / k;  recall@k = relevant in the top k / total relevant;
- AP = mean over all relevant items of the precision at its rank (an item never retrieved
  contributes 0); mAP@k = the same over the top k, divided by min(k, total relevant);
- NDCG@k = DCG@k / ideal DCG@k with binary gains and log2(rank + 1) discounts;
- the precision-recall curve: interpolated precision (the best precision at any recall at or
  above each level) at recall levels 0, 0.1, ..., 1, averaged over queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

RECALL_LEVELS = np.linspace(0.0, 1.0, 11)


def precision_at_k(relevant: np.ndarray, k: int) -> float:
    return float(np.sum(relevant[:k])) / k


def recall_at_k(relevant: np.ndarray, k: int, total_relevant: int) -> float:
    return float(np.sum(relevant[:k])) / total_relevant if total_relevant else 0.0


def average_precision(relevant: np.ndarray, total_relevant: int) -> float:
    """Mean of the precision at each relevant item's rank, over all relevant items."""
    if total_relevant == 0:
        return 0.0
    hits = np.flatnonzero(relevant)
    precisions = np.arange(1, len(hits) + 1) / (hits + 1)
    return float(precisions.sum()) / total_relevant


def average_precision_at_k(relevant: np.ndarray, k: int, total_relevant: int) -> float:
    """AP over the top k, normalised by the most relevant items the top k could hold."""
    if total_relevant == 0:
        return 0.0
    hits = np.flatnonzero(relevant[:k])
    precisions = np.arange(1, len(hits) + 1) / (hits + 1)
    return float(precisions.sum()) / min(k, total_relevant)


def ndcg_at_k(relevant: np.ndarray, k: int, total_relevant: int) -> float:
    if total_relevant == 0:
        return 0.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    gains = relevant[:k].astype(float)
    dcg = float(np.sum(gains * discounts[: len(gains)]))
    ideal = float(np.sum(discounts[: min(k, total_relevant)]))
    return dcg / ideal


def interpolated_precision(relevant: np.ndarray, total_relevant: int) -> np.ndarray:
    """Precision at each of RECALL_LEVELS, interpolated (0 where the recall is never reached)."""
    if total_relevant == 0:
        return np.zeros(len(RECALL_LEVELS))
    ranks = np.arange(1, len(relevant) + 1)
    found = np.cumsum(relevant)
    precision, recall = found / ranks, found / total_relevant
    # the best precision at this recall or any higher one
    best_after = np.maximum.accumulate(precision[::-1])[::-1]
    result = np.zeros(len(RECALL_LEVELS))
    for i, level in enumerate(RECALL_LEVELS):
        reached = np.flatnonzero(recall >= level - 1e-12)
        result[i] = best_after[reached[0]] if len(reached) else 0.0
    return result


@dataclass(frozen=True)
class QualityReport:
    """Means over queries."""

    queries: int
    mean_average_precision: float
    map_at: dict[int, float]
    precision_at: dict[int, float]
    recall_at: dict[int, float]
    ndcg_at: dict[int, float]
    pr_curve: list[float] = field(default_factory=list)  # precision at RECALL_LEVELS

    def as_dict(self) -> dict[str, object]:
        return {
            "queries": self.queries,
            "mAP": round(self.mean_average_precision, 4),
            **{f"mAP@{k}": round(v, 4) for k, v in self.map_at.items()},
            **{f"P@{k}": round(v, 4) for k, v in self.precision_at.items()},
            **{f"R@{k}": round(v, 4) for k, v in self.recall_at.items()},
            **{f"NDCG@{k}": round(v, 4) for k, v in self.ndcg_at.items()},
            "pr_curve": {
                "recall": [round(float(r), 2) for r in RECALL_LEVELS],
                "precision": [round(p, 4) for p in self.pr_curve],
            },
        }


def evaluate(
    relevant: np.ndarray, totals: Sequence[int] | np.ndarray, ks: Sequence[int] = (1, 5, 10, 100)
) -> QualityReport:
    """Metrics of many rankings: `relevant` is (queries, ranked items), `totals` the relevant
    items each query has in the collection."""
    rows = [(relevant[i], int(totals[i])) for i in range(len(totals))]

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else 0.0

    return QualityReport(
        queries=len(rows),
        mean_average_precision=mean([average_precision(r, t) for r, t in rows]),
        map_at={k: mean([average_precision_at_k(r, k, t) for r, t in rows]) for k in ks},
        precision_at={k: mean([precision_at_k(r, k) for r, _ in rows]) for k in ks},
        recall_at={k: mean([recall_at_k(r, k, t) for r, t in rows]) for k in ks},
        ndcg_at={k: mean([ndcg_at_k(r, k, t) for r, t in rows]) for k in ks},
        pr_curve=[float(v) for v in np.mean([interpolated_precision(r, t) for r, t in rows], 0)]
        if rows
        else [],
    )


def exhaustive_rankings(embeddings: np.ndarray) -> np.ndarray:
    """Leave-one-out rankings by cosine similarity (L2-normalised embeddings): row i lists
    every other item, best first; ties broken by index, so results are reproducible."""
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :-1]  # the query itself is last


def judge(
    rankings: np.ndarray, labels: np.ndarray, query_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Relevance of each ranked item to its query (same label), and each query's total of
    relevant items in the collection (itself excluded)."""
    relevant = labels[rankings] == labels[query_ids][:, None]
    counts = np.bincount(labels)
    totals = counts[labels[query_ids]] - 1
    return relevant, totals


@dataclass(frozen=True)
class LeaveOneOut:
    mean_average_precision: float
    precision_at: dict[int, float]


def leave_one_out(
    embeddings: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 10)
) -> LeaveOneOut:
    """Every item queries all the others by cosine similarity (exhaustive search)."""
    rankings = exhaustive_rankings(embeddings)
    relevant, totals = judge(rankings, labels, np.arange(len(labels)))
    report = evaluate(relevant, totals, ks)
    return LeaveOneOut(report.mean_average_precision, report.precision_at)
