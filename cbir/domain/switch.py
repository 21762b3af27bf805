"""When a new generation may go live: pure logic, unit-tested without servers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SwitchCheck:
    """What the switch waits for, as measured just now."""

    replay_lag: int  # the replay's own consumer, behind the end of its topic
    processors_lag: int  # the live processors, behind the topics that feed the new generation
    new_count: int  # vectors in the new generation
    reference_count: int  # vectors in the live generation (or indexed rows, when none is live)


def switch_verdict(check: SwitchCheck) -> str | None:
    """None when the new generation may go live; otherwise what it is still waiting for."""
    if check.replay_lag > 0:
        return f"replaying: {check.replay_lag} events to go"
    if check.processors_lag > 0:
        return (
            f"the processors are {check.processors_lag} events behind "
            "(are they running? `cbir stack status`)"
        )
    if check.new_count != check.reference_count:
        return (
            f"counts differ: the new generation holds {check.new_count}, "
            f"the live one {check.reference_count}"
        )
    return None
