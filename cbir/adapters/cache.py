"""Redis as the query cache. A cache, not a store: when Redis is slow or down every call
answers 'not cached' at once (short socket timeouts), and the caller computes the answer.
`available` tells readiness whether the last call reached Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import redis

from cbir.settings import RedisSettings

log = logging.getLogger("cbir.cache")
T = TypeVar("T")

# after a failure, Redis is not asked again for this long (a down Redis costs nothing per
# request); then one request tries it again
RETRY_AFTER_S = 1.0


class RedisQueryCache:
    def __init__(self, settings: RedisSettings, timeout_s: float) -> None:
        self.client = redis.Redis.from_url(
            settings.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.available = True
        self._skip_until = 0.0

    def _guarded(self, action: Callable[[], T], fallback: T) -> T:
        if time.monotonic() < self._skip_until:
            return fallback
        try:
            value = action()
        except redis.RedisError as exc:
            if self.available:
                log.warning("redis unavailable, serving uncached", extra={"error": str(exc)})
            self.available = False
            self._skip_until = time.monotonic() + RETRY_AFTER_S
            return fallback
        if not self.available:
            log.info("redis back, caching again")
        self.available = True
        return value

    def get(self, key: str) -> bytes | None:
        return self._guarded(lambda: self.client.get(key), None)  # type: ignore[return-value]

    def put(self, key: str, value: bytes, ttl_s: int) -> None:
        self._guarded(lambda: self.client.set(key, value, ex=ttl_s), None)

    def get_vector(self, key: str) -> np.ndarray | None:
        raw = self.get(key)
        return None if raw is None else np.frombuffer(raw, dtype=np.float32).copy()

    def put_vector(self, key: str, vector: np.ndarray, ttl_s: int) -> None:
        self.put(key, np.asarray(vector, dtype=np.float32).tobytes(), ttl_s)

    def clear(self) -> None:
        """Forget every cached entry (benchmarks measure cold caches)."""
        self.client.flushdb()

    def ping(self) -> bool:
        """Reach Redis now (readiness), whatever the back-off says."""
        self._skip_until = 0.0
        return bool(self._guarded(lambda: bool(self.client.ping()), False))

    def close(self) -> None:
        self.client.close()
