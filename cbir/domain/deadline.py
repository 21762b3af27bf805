"""One bound shared by the calls a request makes: each call gets what is left of it."""

from __future__ import annotations

import time
from collections.abc import Callable


class Deadline:
    """`seconds` from now. `remaining()` is what a call may still take (0 once past)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(self._end - self._clock(), 0.0)

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0
