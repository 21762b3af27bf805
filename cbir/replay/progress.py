"""The arithmetic of a replay, apart from Kafka: lag, rate, ETA and throttling. Pure functions,
unit-tested without servers (the switch verdict is `cbir/domain/switch.py`)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


def lag(end_offsets: dict[int, int], positions: dict[int, int]) -> int:
    """Messages between each partition's position and its end (a partition never read has
    position 0 here, or the log start of a compacted topic, so its whole length counts)."""
    return sum(max(end - positions.get(partition, 0), 0) for partition, end in end_offsets.items())


@dataclass
class Throughput:
    """Events per second over the last `window_s`, and the time left at that rate."""

    window_s: float = 10.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def add(self, events: int, now: float | None = None) -> None:
        moment = time.monotonic() if now is None else now
        self.total += events
        self.samples.append((moment, self.total))
        while len(self.samples) > 2 and moment - self.samples[0][0] > self.window_s:
            self.samples.popleft()

    @property
    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (start, first), (end, last) = self.samples[0], self.samples[-1]
        return (last - first) / (end - start) if end > start else 0.0

    def eta_s(self, remaining: int) -> float | None:
        """Seconds until `remaining` events are done at the current rate (None: unknown)."""
        if remaining <= 0:
            return 0.0
        rate = self.rate
        return remaining / rate if rate > 0 else None


def pause_for_rate(events: int, elapsed_s: float, max_rate: float) -> float:
    """How long to sleep after `events` took `elapsed_s`, so as to stay under `max_rate`
    events per second (0: no limit)."""
    if max_rate <= 0:
        return 0.0
    return max(events / max_rate - elapsed_s, 0.0)
