"""When the processors' consumer group counts as healthy: stable, with every worker in it."""

from __future__ import annotations

import pytest
from confluent_kafka import ConsumerGroupState

from cbir.stack.services.processors import group_problem

GROUP = "cbir-processors"


def test_a_stable_group_with_every_worker_is_healthy() -> None:
    assert group_problem(GROUP, ConsumerGroupState.STABLE, 2, 2) is None


def test_more_members_than_this_machine_s_workers_is_healthy() -> None:
    # the same supervisor running on a second machine joins the same group
    assert group_problem(GROUP, ConsumerGroupState.STABLE, 4, 2) is None


def test_a_stable_group_short_of_a_worker_says_how_many_are_in() -> None:
    # the first worker to join is alone and stable: `up` must wait for the second
    assert group_problem(GROUP, ConsumerGroupState.STABLE, 1, 2) == (
        "1 of 2 workers are in consumer group cbir-processors"
    )


@pytest.mark.parametrize(
    "state", [ConsumerGroupState.PREPARING_REBALANCING, ConsumerGroupState.COMPLETING_REBALANCING]
)
def test_a_rebalancing_group_names_its_state(state: ConsumerGroupState) -> None:
    assert group_problem(GROUP, state, 2, 2) == f"consumer group {GROUP} is {state.name.lower()}"


@pytest.mark.parametrize("state", [ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD])
def test_an_empty_or_dead_group_is_named_before_counting(state: ConsumerGroupState) -> None:
    assert group_problem(GROUP, state, 0, 2) == f"consumer group {GROUP} is {state.name.lower()}"
