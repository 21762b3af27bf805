"""The project's own Faust processors (`cbir process`), run by the launcher after the servers."""

from __future__ import annotations

import sys
import time

from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from cbir.adapters.kafka_topics import admin_client
from cbir.stack.services.base import ApplicationService, NotReady, Port
from cbir.wiring import consumer_roles

REBALANCING = {ConsumerGroupState.PREPARING_REBALANCING, ConsumerGroupState.COMPLETING_REBALANCING}
REBALANCE_GRACE_S = 15.0
WORKER = ["-m", "processors.supervisor", "--loglevel", "info"]


class ProcessorsService(ApplicationService):
    name = "processors"
    start_hint = "the log says which service the processors could not reach"

    @property
    def ports(self) -> list[Port]:
        return []

    def command(self) -> list[str]:
        return [sys.executable, *WORKER]

    def probe(self) -> None:
        """Healthy when every role's workers are members of its consumer group and each group
        is stable. A rebalance is a normal, passing state (a member joined or left): give it a
        few seconds to settle before calling the processors unhealthy. Counting the members
        makes `up` wait for the last worker to join, so no rebalance follows it (a worker that
        joined alone would otherwise be made to rejoin when the next arrives, while it is
        busy)."""
        # librdkafka's own lines go to the project's logging, not raw onto the terminal
        admin = admin_client(self.settings.kafka)
        deadline = time.monotonic() + REBALANCE_GRACE_S
        for role in consumer_roles(self.settings):
            self._probe_group(admin, role.group, role.workers, deadline)

    @staticmethod
    def _probe_group(admin: AdminClient, group: str, expected: int, deadline: float) -> None:
        while True:
            try:
                description = admin.describe_consumer_groups([group])[group].result(timeout=5)
            except Exception as exc:
                raise NotReady(f"cannot describe consumer group {group}: {exc}") from exc
            problem = group_problem(group, description.state, len(description.members), expected)
            if problem is None:
                return
            if description.state not in REBALANCING or time.monotonic() > deadline:
                raise NotReady(problem)
            time.sleep(0.5)


def group_problem(group: str, state: ConsumerGroupState, members: int, expected: int) -> str | None:
    """What keeps the processors' consumer group from being healthy; None when nothing does.
    More members than `expected` is healthy: the same supervisor may run on other machines."""
    if state not in (ConsumerGroupState.STABLE, *REBALANCING):
        return f"consumer group {group} is {state.name.lower()}"
    if members < expected:
        return f"{members} of {expected} workers are in consumer group {group}"
    if state != ConsumerGroupState.STABLE:
        return f"consumer group {group} is {state.name.lower()}"
    return None
