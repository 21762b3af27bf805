"""The losses of the published design, on L2-normalised embeddings (torch).

- Triplet: `max(0, ||f(q) - f(p)||² - ||f(q) - f(n)||² + δ)`. The design's refinement is the
  reduction: the loss of each query is the mean over all of that query's triplets, and the
  batch loss the mean over queries, so a query with many (noisy) triplets weighs no more than
  one with few. `reduction="plain"` is the usual mean over every triplet of the batch.
  Mining chooses the triplets: `all`, `semi-hard` (negatives farther than the positive but
  within the margin, FaceNet's rule) or `batch-hard` (each query's farthest positive and
  nearest negative: one triplet per query).
- Contrastive with a cross-batch memory (XBM): each query is compared with the batch and with
  the embeddings of earlier batches kept in a FIFO memory; positives are pulled together
  (`1 - s`), and only negatives whose similarity is above the margin β contribute (`s - β`).
- KoLeo: minus the mean log distance of each point to its nearest neighbour in the batch,
  which spreads the descriptors over the sphere (an entropy estimate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

Mining = Literal["all", "semi-hard", "batch-hard"]
Reduction = Literal["per-query", "plain"]


def squared_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, B) squared Euclidean distances; for unit vectors 2 - 2·cos."""
    dots = embeddings @ embeddings.T
    norms = dots.diagonal()
    return (norms[:, None] - 2 * dots + norms[None, :]).clamp_min(0.0)


def triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.2,
    mining: Mining = "semi-hard",
    reduction: Reduction = "per-query",
) -> torch.Tensor:
    """The triplet loss of a batch (see the module's text); 0 when no triplet exists."""
    d = squared_distances(embeddings)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye  # (q, p)
    negative = ~same  # (q, n)
    if mining == "batch-hard":
        hardest_positive = torch.where(positive, d, torch.zeros_like(d)).amax(dim=1)
        hardest_negative = torch.where(negative, d, torch.full_like(d, float("inf"))).amin(dim=1)
        has = positive.any(dim=1) & negative.any(dim=1)
        losses = (hardest_positive - hardest_negative + margin).clamp_min(0.0)[has]
        return losses.mean() if len(losses) else embeddings.sum() * 0.0
    # every (q, p, n): d(q,p) - d(q,n) + margin
    gap = d[:, :, None] - d[:, None, :] + margin
    valid = positive[:, :, None] & negative[:, None, :]
    if mining == "semi-hard":
        d_qp, d_qn = d[:, :, None], d[:, None, :]
        valid = valid & (d_qn > d_qp) & (d_qn < d_qp + margin)
    losses = torch.where(valid, gap.clamp_min(0.0), torch.zeros_like(gap))
    if reduction == "plain":
        count = valid.sum()
        return losses.sum() / count if count > 0 else embeddings.sum() * 0.0
    per_query_count = valid.sum(dim=(1, 2))
    queries = per_query_count > 0
    if not queries.any():
        return embeddings.sum() * 0.0
    per_query = losses.sum(dim=(1, 2))[queries] / per_query_count[queries]
    return per_query.mean()


@dataclass
class CrossBatchMemory:
    """A FIFO of the last `size` embeddings (detached) and their labels."""

    size: int
    embeddings: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    labels: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def push(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        if self.size <= 0:
            return
        kept = torch.cat([self.embeddings.reshape(-1, embeddings.shape[1]), embeddings.detach()])
        self.embeddings = kept[-self.size :]
        self.labels = torch.cat([self.labels, labels])[-self.size :]

    def __len__(self) -> int:
        return len(self.labels)


def contrastive_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 0.5,
    memory: CrossBatchMemory | None = None,
) -> torch.Tensor:
    """Contrastive loss of each query against the batch and the memory (read before this
    batch is pushed into it): `Σ_pos (1 - s) + Σ_neg,s>β (s - β)`, averaged over queries."""
    keys, key_labels = embeddings, labels
    self_mask = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    if memory is not None and len(memory):
        keys = torch.cat([embeddings, memory.embeddings])
        key_labels = torch.cat([labels, memory.labels])
        self_mask = torch.cat(
            [self_mask, torch.zeros(len(labels), len(memory), dtype=torch.bool)], dim=1
        )
    similarity = embeddings @ keys.T
    same = labels[:, None] == key_labels[None, :]
    positive = same & ~self_mask
    negative = ~same & (similarity > beta)
    pulled = torch.where(positive, 1.0 - similarity, torch.zeros_like(similarity)).sum(dim=1)
    pushed = torch.where(negative, similarity - beta, torch.zeros_like(similarity)).sum(dim=1)
    return (pulled + pushed).mean()


def koleo_loss(embeddings: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo: -mean_i log(min_{j≠i} ||x_i - x_j||); `eps` keeps equal points finite."""
    eye = torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    nearest = squared_distances(embeddings).masked_fill(eye, float("inf")).amin(dim=1)
    return -torch.log((nearest + eps).sqrt()).mean()
