"""The query benchmark's split of the server's time, from two real /metrics pages of the API's
own metrics (prometheus_client's exposition, read back by its parser)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from cbir.bench.query import (
    histograms,
    milvus_breakdown,
    milvus_histograms,
    render_markdown,
    server_breakdown,
)
from query_api.metrics import ApiMetrics


def page(metrics: ApiMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_each_call_and_the_api_itself_in_ms_per_search() -> None:
    metrics = ApiMetrics()
    metrics.requests.labels("GET", "/health/live", "200").observe(0.5)  # before: left out
    before = histograms(page(metrics))
    for _ in range(4):
        metrics.requests.labels("POST", "/search", "200").observe(0.010)
        metrics.dependency.labels("milvus", "search").observe(0.004)
        metrics.dependency.labels("mysql", "generation").observe(0.001)
    metrics.requests.labels("GET", "/health/live", "200").observe(0.5)  # not a search
    metrics.requests.labels("GET", "/metrics", "200").observe(0.5)  # the scrape itself
    parts = server_breakdown(before, histograms(page(metrics)), requests=4)
    assert parts == {
        "milvus search": 4.0,
        "mysql generation": 1.0,
        "server": 10.0,
        "api itself": 5.0,
    }


def test_a_call_made_before_only_is_not_counted_and_statuses_add_up() -> None:
    metrics = ApiMetrics()
    metrics.dependency.labels("redis", "get_results").observe(0.002)
    before = histograms(page(metrics))
    metrics.requests.labels("POST", "/search", "200").observe(0.003)
    metrics.requests.labels("POST", "/search", "503").observe(0.005)
    parts = server_breakdown(before, histograms(page(metrics)), requests=2)
    assert parts == {"server": 4.0, "api itself": 4.0}


def test_the_table_lists_the_calls_after_the_server_and_the_api_itself() -> None:
    record = {
        "model": "mobilenet",
        "scenario": "cached result",
        "concurrency": 1,
        "p50_ms": 5,
        "p95_ms": 6,
        "p99_ms": 7,
        "throughput_per_s": 100,
        "errors": 0,
        "server_ms_by_part": {"redis get_results": 0.4, "server": 3.0, "api itself": 2.6},
        "milvus_search_ms_by_stage": {"proxy": 1.5},
    }
    document = {
        "date": "2026-12-02T23:00:00",
        "machine": {"cpu": "a CPU", "cores": 2},
        "commit": "abc1234",
        "command": "cbir bench query",
        "records": [record],
        "targets": [],
    }
    text = render_markdown(document)
    assert (
        "| mobilenet | cached result | 3.0 | 2.6 | redis get_results 0.4; milvus's own proxy 1.5 |"
        in text
    )


def test_milvus_s_own_stages_per_search_from_its_histograms_in_ms() -> None:
    # the families and labels Milvus 2.3 exposes (its latencies are in milliseconds)
    registry = CollectorRegistry()
    labels = ["node_id", "query_type"]
    proxy = Histogram("milvus_proxy_sq_latency", "", labels, registry=registry)
    core = Histogram("milvus_querynode_sq_core_latency", "", labels, registry=registry)
    proxy.labels("1", "query").observe(50.0)
    before = milvus_histograms(generate_latest(registry).decode())
    for ms in (4.0, 6.0):
        proxy.labels("1", "search").observe(ms)
        core.labels("1", "search").observe(ms / 4)
    proxy.labels("1", "query").observe(80.0)  # a query, not a search: left out
    after = milvus_histograms(generate_latest(registry).decode())
    assert milvus_breakdown(before, after) == {"proxy": 5.0, "query node core": 1.25}
