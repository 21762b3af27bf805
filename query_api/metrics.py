"""Prometheus metrics of the query API, in a registry of its own (one per app)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "cbir_api_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.dependency = Histogram(
            "cbir_api_dependency_seconds",
            "latency of calls to Triton, Milvus, MySQL and Redis",
            ["dependency", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache = Counter(
            "cbir_api_cache_lookups",
            "cache lookups by cache (embedding, result) and outcome (hit, miss)",
            ["cache", "outcome"],
            registry=self.registry,
        )
        self.hit_ratio = Gauge(
            "cbir_api_cache_hit_ratio",
            "hits / lookups since the start, by cache",
            ["cache"],
            registry=self.registry,
        )
        self._counts: dict[str, list[int]] = {}

    @contextmanager
    def timed(self, dependency: str, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.dependency.labels(dependency, operation).observe(time.perf_counter() - started)

    def cache_lookup(self, cache: str, hit: bool) -> None:
        self.cache.labels(cache, "hit" if hit else "miss").inc()
        counts = self._counts.setdefault(cache, [0, 0])
        counts[0] += int(hit)
        counts[1] += 1
        self.hit_ratio.labels(cache).set(counts[0] / counts[1])
