"""A circuit breaker per dependency: after a few failures in a row, a dependency that is away
is not asked again for a while, so every request answers at once (a 503 naming it) instead of
each waiting out its timeout; then one request probes, and a success closes it. Pure: the
clock is injected."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from cbir.domain.errors import Transient

T = TypeVar("T")


class CircuitOpen(Transient):
    """The dependency failed repeatedly and is not asked for now."""


class CircuitBreaker:
    def __init__(
        self,
        service: str,
        failures_to_open: int,
        open_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.failures_to_open = failures_to_open
        self.open_s = open_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.last_error = ""
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def call(self, action: Callable[[], T]) -> T:
        """`action`, unless the circuit is open (then CircuitOpen at once). Only transient
        failures count: a refused value says nothing about the dependency's health."""
        self._admit()
        try:
            result = action()
        except Transient as exc:
            self._failed(exc)
            raise
        except BaseException:
            self._release()
            raise
        self._succeeded()
        return result

    def _admit(self) -> None:
        with self._lock:
            if self.opened_at is None:
                return
            left = self.opened_at + self.open_s - self.clock()
            if left > 0 or self._probing:
                raise CircuitOpen(
                    f"{self.service} failed {self.failures} times in a row ({self.last_error}); "
                    f"not asked again for {max(left, 0):.0f} s: is it running? "
                    "(`cbir stack status`)"
                )
            self._probing = True  # half open: this request finds out

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = str(exc)[:200]
            self._probing = False
            if self.failures >= self.failures_to_open:
                self.opened_at = self.clock()

    def _succeeded(self) -> None:
        with self._lock:
            self.failures = 0
            self.opened_at = None
            self._probing = False

    def _release(self) -> None:
        with self._lock:
            self._probing = False
