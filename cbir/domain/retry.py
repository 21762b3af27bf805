"""How a failure of a service call is treated: the policy the stages, the producer and the
replay share. Pure: it only sleeps."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from cbir.domain.errors import Permanent, Transient

log = logging.getLogger("cbir.retry")
T = TypeVar("T")


class GaveUp(Permanent):
    """An unexpected failure that kept coming back: the items are dead-lettered with this
    summary, so that the partition moves on."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a stage treats a failure of a service call:

    - `Transient` (a service down, a timeout): retried with back-off (doubling from
      `first_wait_s` up to `max_wait_s`) until it succeeds, for nothing may be lost;
    - `Permanent` (a value a store refuses for good): raised at once, for the caller to
      dead-letter the items;
    - anything else (unexpected: a bug, an error no adapter knows): retried up to
      `unexpected_attempts` times, then raised as `GaveUp`.
    """

    first_wait_s: float = 0.5
    max_wait_s: float = 30.0
    unexpected_attempts: int = 5
    # how long a service may stay away before the transient failure is raised (None: for
    # ever, as the processors wait; a command waits a while, then stops and says so)
    give_up_after_s: float | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def run(self, action: Callable[[], T], what: str) -> T:
        wait = self.first_wait_s
        unexpected = 0
        waited = 0.0
        while True:
            try:
                return action()
            except Permanent:
                raise
            except Transient as exc:
                if self.give_up_after_s is not None and waited >= self.give_up_after_s:
                    raise
                log.warning("waiting", extra={"action": what, "error": str(exc), "wait_s": wait})
            except Exception as exc:
                unexpected += 1
                summary = f"{type(exc).__name__}: {exc}"
                if unexpected >= self.unexpected_attempts:
                    raise GaveUp(
                        f"{what} failed {unexpected} times ({summary}); dead-lettered so that "
                        "the partition moves on: fix the cause, then replay the dead letters"
                    ) from exc
                log.warning(
                    "retrying an unexpected error",
                    extra={"action": what, "error": summary, "attempt": unexpected, "wait_s": wait},
                )
            self.sleep(wait)
            waited += wait
            wait = min(self.max_wait_s, wait * 2)
