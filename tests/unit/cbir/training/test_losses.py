"""Each loss against values computed by hand (worked in the comments), and finite
gradients."""

from __future__ import annotations

import math

import pytest
import torch

from cbir.training.losses import CrossBatchMemory, contrastive_loss, koleo_loss, triplet_loss

# five points on a line, classes A A A B B; squared distances:
# d01=1 d02=4 d03=2.25 d04=9 d12=1 d13=.25 d14=4 d23=.25 d24=1 d34=2.25
POINTS = torch.tensor([[0.0], [1.0], [2.0], [1.5], [3.0]])
LABELS = torch.tensor([0, 0, 0, 1, 1])


def test_triplet_loss_is_the_mean_over_queries_of_each_querys_mean() -> None:
    # margin 1, every triplet; per query (sum of hinges / its triplets):
    # q0 2.75/4, q1 3.5/4, q2 11.5/4, q3 7/3, q4 2.25/3
    expected = (2.75 / 4 + 3.5 / 4 + 11.5 / 4 + 7 / 3 + 2.25 / 3) / 5
    loss = triplet_loss(POINTS, LABELS, margin=1.0, mining="all", reduction="per-query")
    assert loss.item() == pytest.approx(expected)
    assert loss.item() == pytest.approx(1.5041667, abs=1e-6)


def test_plain_reduction_weighs_every_triplet_alike() -> None:
    # 27 over the 18 triplets: the A queries (4 triplets each) weigh more than the B ones
    loss = triplet_loss(POINTS, LABELS, margin=1.0, mining="all", reduction="plain")
    assert loss.item() == pytest.approx(27 / 18)


def test_batch_hard_takes_each_querys_farthest_positive_and_nearest_negative() -> None:
    # q0 4-2.25+1, q1 1-.25+1, q2 4-.25+1, q3 2.25-.25+1, q4 2.25-1+1
    loss = triplet_loss(POINTS, LABELS, margin=1.0, mining="batch-hard")
    assert loss.item() == pytest.approx((2.75 + 1.75 + 4.75 + 3 + 2.25) / 5)


def test_semi_hard_keeps_negatives_beyond_the_positive_within_the_margin() -> None:
    # margin 2, d(q,p) < d(q,n) < d(q,p) + 2: only (q0, p1, n3): 1 - 2.25 + 2 = .75 and
    # (q4, p3, n1): 2.25 - 4 + 2 = .25 survive; two queries
    loss = triplet_loss(POINTS, LABELS, margin=2.0, mining="semi-hard")
    assert loss.item() == pytest.approx((0.75 + 0.25) / 2)


def test_no_triplet_is_a_zero_loss_that_still_has_a_gradient() -> None:
    points = torch.randn(4, 3, requires_grad=True)
    loss = triplet_loss(points, torch.tensor([0, 1, 2, 3]), mining="all")
    loss.backward()
    assert loss.item() == 0.0 and points.grad is not None


# unit vectors: e0 (1,0) A, e1 (.6,.8) A, e2 (.8,.6) B; s01=.6 s02=.8 s12=.96
UNIT = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
UNIT_LABELS = torch.tensor([0, 0, 1])


def test_contrastive_pulls_positives_and_pushes_negatives_above_beta() -> None:
    # q0: (1-.6) + (.8-.5); q1: (1-.6) + (.96-.5); q2: (.8-.5) + (.96-.5)
    loss = contrastive_loss(UNIT, UNIT_LABELS, beta=0.5)
    assert loss.item() == pytest.approx((0.7 + 0.86 + 0.76) / 3)


def test_a_negative_below_beta_contributes_nothing() -> None:
    loss = contrastive_loss(UNIT, UNIT_LABELS, beta=0.97)  # every negative is below
    assert loss.item() == pytest.approx((0.4 + 0.4) / 3)


def test_the_memory_adds_earlier_batches_as_keys() -> None:
    memory = CrossBatchMemory(size=8)
    memory.push(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))  # e3, class B
    # e3 against q0 s=0 (below beta), q1 s=.8 (pushed .3), q2 s=.6 (a positive: pulled .4)
    loss = contrastive_loss(UNIT, UNIT_LABELS, beta=0.5, memory=memory)
    assert loss.item() == pytest.approx((0.7 + 1.16 + 1.16) / 3)


def test_the_memory_keeps_the_last_size_embeddings() -> None:
    memory = CrossBatchMemory(size=3)
    for step in range(3):
        memory.push(torch.full((2, 2), float(step)), torch.tensor([step, step]))
    assert len(memory) == 3
    assert memory.labels.tolist() == [1, 2, 2]
    assert not memory.embeddings.requires_grad


def test_koleo_is_minus_the_mean_log_distance_to_the_nearest_neighbour() -> None:
    points = torch.tensor([[0.0], [1.0], [3.0]])  # nearest: 1, 1, 2
    assert koleo_loss(points).item() == pytest.approx(-math.log(2) / 3, abs=1e-6)


def test_every_gradient_is_finite_even_for_equal_points() -> None:
    points = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    memory = CrossBatchMemory(size=4)
    memory.push(points.detach() * 0.5, labels)
    for loss in (
        triplet_loss(points, labels, mining="all"),
        triplet_loss(points, labels, mining="semi-hard"),
        triplet_loss(points, labels, mining="batch-hard"),
        contrastive_loss(points, labels, memory=memory),
        koleo_loss(points),
    ):
        points.grad = None
        loss.backward()
        assert points.grad is not None and torch.isfinite(points.grad).all()
