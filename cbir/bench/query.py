"""`cbir bench query`: latency (p50, p95, p99) and throughput of the query API, per scenario
and concurrency, from a load generator on the same machine (asyncio + httpx, one process).

Per model, a fresh local stack of its own (ports moved by --port-offset, local features off:
no scenario re-ranks) indexes flowers17:
the shared MobileNet (real weights), and ResNet-50 with random weights (speed only: its
inference is 4-5 times MobileNet's, which shows what of the API's cost is fixed). The API is
the launcher's `cbir serve` process. Scenarios:
- uncached: every request a distinct image, Redis emptied first (embed + search + join);
- cached embedding: the images' embeddings are in Redis, result lists are recomputed
  (`Cache-Control: no-cache`): search + join only;
- cached result: the same requests again: the list comes from Redis;
- more like this: by stored image id, the list recomputed (no-cache): the stored vector,
  search and join.
Triton alone is measured in the same run on the same images and concurrencies (the model's
own inference time over gRPC), and the targets are: a cached result answers with p50 of 1 ms
or less; an uncached search at concurrency 1 costs at most Triton alone + 3 ms at p50. Per
scenario also the server's own time (its Server-Timing header: the client's overhead left out)
and the API process's CPU per request; at concurrency 1, where the server's time goes (each
dependency call and the API itself, from its /metrics histograms; inside a Milvus search, its
proxy and query node, from Milvus's). `--profile` samples the API with py-spy in each
scenario at concurrency 1 (bench/results/profiles/query).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from cbir import wiring
from cbir.adapters import metadata_store
from cbir.adapters.cache import RedisQueryCache
from cbir.adapters.embedder import TritonEmbedder
from cbir.adapters.vector_index import MilvusVectorIndex
from cbir.bench.common import add_stack_arguments, publish
from cbir.bench.embedding import CpuMeter
from cbir.bench.ingest import MODELS, export_models
from cbir.bench.profiles import PROFILES, Profiler
from cbir.domain.images import image_id_of
from cbir.evaluation.report import provenance_line
from cbir.output import console
from cbir.settings import Settings, get_settings, side_by_side
from cbir.stack.launcher import Launcher
from cbir.stack.services.base import ApplicationService
from cbir.stack.services.milvus import METRICS_PORT
from producers.ingest import collect

SCENARIOS = ("uncached", "cached embedding", "cached result", "more like this")
CONCURRENCY = (1, 4, 16)
NO_CACHE = {"Cache-Control": "no-cache"}
NOT_SEARCHES = ("/health/live", "/metrics")  # what the load generator asks besides searches


def summary(latencies_s: list[float], wall_s: float, errors: int) -> dict[str, Any]:
    ms = np.array(latencies_s) * 1000
    return {
        "requests": len(latencies_s),
        "errors": errors,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "throughput_per_s": round(len(latencies_s) / wall_s, 1),
    }


async def load(
    request: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
    count: int,
    concurrency: int,
    base_url: str,
    check: Callable[[httpx.Response], bool],
) -> dict[str, Any]:
    """`count` requests, `concurrency` at a time; the latency of each, and the wall time.
    The first `concurrency` requests open the connections and are not counted."""
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = 0
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal next_index, errors
            while next_index < count:
                index = next_index
                next_index += 1
                started = time.perf_counter()
                response = await request(client, index)
                latencies.append(time.perf_counter() - started)
                errors += not check(response)
                timing = response.headers.get("server-timing", "")
                if ";dur=" in timing:
                    server_ms.append(float(timing.partition(";dur=")[2]))

        await asyncio.gather(*(client.get("/health/live") for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    figures = summary(latencies, wall, errors)
    if server_ms:
        figures["server_p50_ms"] = round(float(np.percentile(server_ms, 50)), 2)
    return figures


Histograms = dict[tuple[str, ...], tuple[float, float]]
# Milvus's own search latency (ms) at its proxy (the whole search inside Milvus: the request
# handed to the query node, searched, reduced) and at the query node's core (the index search)
MILVUS_STAGES = {
    "milvus_proxy_sq_latency": "proxy",
    "milvus_querynode_sq_core_latency": "query node core",
}


def _sums(text: str, key_of: Callable[[str, dict[str, str]], tuple[str, ...] | None]) -> Histograms:
    """The sum and count of each histogram series of a Prometheus page that `key_of` names
    (series with the same key added up)."""
    found: dict[tuple[str, ...], list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            part = sample.name.rpartition("_")[2]
            key = key_of(family.name, sample.labels) if part in ("sum", "count") else None
            if key is not None:
                pair = found.setdefault(key, [0.0, 0.0])
                pair[0 if part == "sum" else 1] += sample.value
    return {key: (total, count) for key, (total, count) in found.items()}


def histograms(text: str) -> Histograms:
    """The API's two latency histograms in its /metrics page: by (dependency, operation) for
    the calls, by ("request", method, route) for the requests (every status together)."""

    def key_of(family: str, labels: dict[str, str]) -> tuple[str, ...] | None:
        if family == "cbir_api_dependency_seconds":
            return labels["dependency"], labels["operation"]
        if family == "cbir_api_request_seconds":
            return "request", labels["method"], labels["route"]
        return None

    return _sums(text, key_of)


def milvus_histograms(text: str) -> Histograms:
    """Milvus's search stages in its /metrics page (searches only, every node together)."""

    def key_of(family: str, labels: dict[str, str]) -> tuple[str, ...] | None:
        stage = MILVUS_STAGES.get(family)
        return (stage,) if stage and labels.get("query_type") == "search" else None

    return _sums(text, key_of)


def changed(
    before: Histograms, after: Histograms
) -> Iterator[tuple[tuple[str, ...], float, float]]:
    """Each series observed between two pages: its key, the sum and the count added."""
    for key, (total, count) in after.items():
        earlier_total, earlier_count = before.get(key, (0.0, 0.0))
        if count > earlier_count:
            yield key, total - earlier_total, count - earlier_count


def milvus_breakdown(before: Histograms, after: Histograms) -> dict[str, float]:
    """Mean ms per search of each of Milvus's stages between two of its /metrics pages."""
    return {key[0]: round(total / count, 3) for key, total, count in changed(before, after)}


def server_breakdown(before: Histograms, after: Histograms, requests: int) -> dict[str, float]:
    """Where the server's time went between two /metrics pages, in ms per request: each
    dependency call (`milvus search`, `mysql lookup`, ...), the whole request ("server",
    the mean of the searches timed in between: not the connections' opening requests nor
    the scrapes) and the rest ("api itself": HTTP, FastAPI, hashing, JSON, the thread hop),
    the server's time less its calls."""
    spent: dict[str, float] = {}
    server = handled = 0.0
    for key, total, count in changed(before, after):
        if key[0] != "request":
            spent[" ".join(key)] = 1000 * total / requests
        elif key[2] not in NOT_SEARCHES:
            server += total
            handled += count
    breakdown = {name: round(ms, 3) for name, ms in sorted(spent.items(), key=lambda i: -i[1])}
    if handled:
        mean = 1000 * server / handled
        breakdown["server"] = round(mean, 3)
        breakdown["api itself"] = round(mean - sum(spent.values()), 3)
    return breakdown


def triton_alone(settings: Settings, images: list[bytes], concurrency: int) -> dict[str, Any]:
    """The model's own time: one image per request over gRPC, as the API sends it."""
    embedder = TritonEmbedder(settings.triton, settings.processors.model)
    embedder.embed(images[:1])
    latencies: list[float] = []

    def one(data: bytes) -> None:
        started = time.perf_counter()
        embedder.embed([data])
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, images))
    result = summary(latencies, time.perf_counter() - started, 0)
    embedder.close()
    return result


def get_text(url: str) -> str:
    return httpx.get(url, timeout=30).raise_for_status().text


def scrape(base_url: str) -> Histograms:
    return histograms(get_text(f"{base_url}/metrics"))


def run_scenarios(
    settings: Settings,
    images: list[bytes],
    requests: int,
    api_pid: int | None = None,
    profiles: Path | None = None,
) -> list[dict[str, Any]]:
    """Every scenario at every concurrency; with `api_pid`, the API's CPU per request, and
    with `profiles`, the API sampled by py-spy in each scenario at concurrency 1."""
    base_url = f"http://{settings.api.host}:{settings.api.port}"
    milvus_metrics = (
        f"http://127.0.0.1:{METRICS_PORT + settings.stack.internal_port_offset}/metrics"
    )
    meter = CpuMeter(api_pid) if api_pid else None

    def measured(scenario: str, concurrency: int, run: Callable[[], dict[str, Any]]) -> None:
        profiler = None
        if profiles is not None and api_pid and concurrency == 1 and scenario != "Triton alone":
            profiler = Profiler(profiles)
            profiler.start(f"{settings.processors.model}-{scenario.replace(' ', '-')}", api_pid)
        api_measured = scenario != "Triton alone"
        split = api_measured and concurrency == 1  # where the server's time goes
        pages = (scrape(base_url), milvus_histograms(get_text(milvus_metrics))) if split else None
        before = meter.seconds() if meter else 0.0
        try:
            figures = run()
        finally:
            if profiler is not None:
                profiler.stop(f"the API, {scenario}, concurrency 1")
        if meter is not None and api_measured:
            spent = meter.seconds() - before
            figures["api_cpu_ms_per_request"] = round(1000 * spent / figures["requests"], 2)
        if pages is not None:
            api_before, milvus_before = pages
            figures["server_ms_by_part"] = server_breakdown(
                api_before, scrape(base_url), figures["requests"]
            )
            stages = milvus_breakdown(milvus_before, milvus_histograms(get_text(milvus_metrics)))
            if stages:
                figures["milvus_search_ms_by_stage"] = stages
        record(scenario, concurrency, figures)

    cache = RedisQueryCache(settings.redis, timeout_s=5)
    ids = [image_id_of(data) for data in images]
    records: list[dict[str, Any]] = []

    def ok(response: httpx.Response) -> bool:
        return response.status_code == 200 and bool(response.json()["results"])

    def record(scenario: str, concurrency: int, figures: dict[str, Any]) -> None:
        records.append({"scenario": scenario, "concurrency": concurrency, **figures})
        console.print(
            f"{scenario:>16} c={concurrency:<2} p50 {figures['p50_ms']:7.2f} ms  p95 "
            f"{figures['p95_ms']:7.2f}  p99 {figures['p99_ms']:7.2f}  "
            f"{figures['throughput_per_s']:7.1f}/s  errors {figures['errors']}"
        )
        if parts := figures.get("server_ms_by_part"):
            console.print("    ms per request: " + ", ".join(f"{k} {v}" for k, v in parts.items()))
        if stages := figures.get("milvus_search_ms_by_stage"):
            console.print(
                "    inside Milvus, ms per search: "
                + ", ".join(f"{k} {v}" for k, v in stages.items())
            )

    offset = 0
    for concurrency in CONCURRENCY:
        batch = images[offset : offset + requests]  # never queried before in this run
        batch_ids = ids[offset : offset + requests]
        offset += requests
        cache.clear()

        def by_image(headers: dict[str, str] | None = None, chosen: list[bytes] = batch) -> Any:
            async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
                return await client.post(
                    "/search",
                    files={"image": ("q.jpg", chosen[i])},
                    data={"k": 10},
                    headers=headers,
                )

            return send

        async def similar(client: httpx.AsyncClient, i: int, chosen: list[str] = batch_ids) -> Any:
            return await client.get(f"/images/{chosen[i]}/similar?k=10", headers=NO_CACHE)

        count = len(batch)

        def run_load(send: Any, n: int = count, c: int = concurrency) -> dict[str, Any]:
            return asyncio.run(load(send, n, c, base_url, ok))

        measured("uncached", concurrency, lambda: run_load(by_image()))
        measured("cached embedding", concurrency, lambda: run_load(by_image(NO_CACHE)))
        run_load(by_image())  # fill the result cache
        measured("cached result", concurrency, lambda: run_load(by_image()))
        measured("more like this", concurrency, lambda: run_load(similar))
        measured(
            "Triton alone",
            concurrency,
            lambda b=batch, c=concurrency: triton_alone(settings, b, c),  # type: ignore[misc]
        )
    cache.close()
    return records


def render_markdown(document: dict[str, Any]) -> str:
    lines = [
        provenance_line(document),
        "",
        "| model | scenario | concurrency | p50, ms | p95, ms | p99, ms | requests/s | errors "
        "| server p50, ms | API CPU-ms / request |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in document["records"]:
        lines.append(
            f"| {r['model']} | {r['scenario']} | {r['concurrency']} | {r['p50_ms']} "
            f"| {r['p95_ms']} | {r['p99_ms']} | {r['throughput_per_s']} | {r['errors']} "
            f"| {r.get('server_p50_ms', '')} | {r.get('api_cpu_ms_per_request', '')} |"
        )
    lines += [
        "",
        "| model | cached result p50, ms (target <= 1) | its server time p50, ms "
        "| uncached p50, ms | Triton alone p50, ms | overhead, ms (target <= 3) "
        "| API CPU-ms / request, uncached | API CPU-ms / request, cached |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in document["targets"]:
        lines.append(
            f"| {t['model']} | {t['cached_result_p50_ms']} "
            f"| {t.get('cached_result_server_p50_ms', '')} | {t['uncached_p50_ms']} "
            f"| {t['triton_p50_ms']} | {t['overhead_ms']} | {t.get('uncached_api_cpu_ms', '')} "
            f"| {t.get('cached_api_cpu_ms', '')} |"
        )
    parted = [r for r in document["records"] if r.get("server_ms_by_part")]
    if parted:
        lines += [
            "",
            "Where the server's time goes at concurrency 1, ms per request (the API's own "
            "histograms: each dependency call, and the API itself: the rest); inside a "
            "Milvus search, ms per search from Milvus's own histograms (its proxy: the whole "
            "search inside Milvus; its query node's core: the index search)",
            "",
            "| model | scenario | server mean, ms | API itself, ms | calls, ms |",
            "|---|---|---|---|---|",
        ]
        for r in parted:
            parts = dict(r["server_ms_by_part"])
            server, itself = parts.pop("server", ""), parts.pop("api itself", "")
            calls = ", ".join(f"{name} {ms}" for name, ms in parts.items())
            inside = r.get("milvus_search_ms_by_stage", {})
            calls += "".join(f"; milvus's own {stage} {ms}" for stage, ms in inside.items())
            lines.append(f"| {r['model']} | {r['scenario']} | {server} | {itself} | {calls} |")
    return "\n".join(lines) + "\n"


def settle(settings: Settings) -> None:
    """Let Milvus finish building the index of what was just ingested (it takes the cores
    for a while after the last insert), so that the figures measure the API, not the build."""
    index = MilvusVectorIndex(settings.milvus, settings.processors)
    try:
        served = index.served_model()
        if served is not None:
            index.wait_until_built(served.collection, timeout_s=600)
    finally:
        index.close()
    time.sleep(5)


def measure(
    base: Settings, root: Path, shared: Path, model: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """A fresh stack embedding with `model`, flowers17 indexed, every scenario."""
    repository = root / "models"
    export_models(repository, shared, [model])
    settings = side_by_side(base, args.port_offset, root / "data", repository)
    settings = settings.model_copy(
        update={
            "processors": settings.processors.model_copy(update={"model": model}),
            # no search here re-ranks: without SIFT at ingest and the duplicates agent behind
            # it, the queries are timed on a quiet machine
            "local_features": settings.local_features.model_copy(update={"enabled": False}),
        }
    )
    launcher = Launcher(settings)
    launcher.up()
    try:
        items = collect([str(shared / "data" / "flowers17")])
        wiring.ingest(settings, items)
        images = [item.path.read_bytes() for item in items]
        unique = len({image_id_of(data) for data in images})
        console.print(f"{model}: indexing {unique} flowers17 images")
        deadline = time.monotonic() + 900
        while True:
            with metadata_store.connect(settings.mysql) as conn:
                done = metadata_store.status_counts(conn).get("indexed", 0)
            if done >= unique:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {unique} images indexed in 15 minutes")
            time.sleep(1)
        settle(settings)
        need = args.requests * len(CONCURRENCY)
        if need > len(images):
            raise SystemExit(f"--requests {args.requests} needs {need} distinct images")
        api = next(s for s in launcher.services if s.name == "query-api")
        assert isinstance(api, ApplicationService)
        profiles = PROFILES / "query" if args.profile else None
        records = run_scenarios(settings, images, args.requests, api.process.pid, profiles)
        records += server_variants(settings, api, images[: args.requests])
        return [{"model": model, **r} for r in records]
    finally:
        launcher.down()


def server_variants(
    settings: Settings, api: ApplicationService, images: list[bytes]
) -> list[dict[str, Any]]:
    """The cached scenarios at concurrency 1 on the launcher's API (uvicorn's defaults:
    httptools and uvloop, installed with the project) and, side by side, on a second API
    process of the same code with uvicorn's pure-Python parser and loop (h11, asyncio)."""
    port = settings.api.port + 1
    command = [sys.executable, "-m", "cbir.cli", "serve", "--host", settings.api.host]
    command += ["--port", str(port), "--http", "h11", "--loop", "asyncio"]
    process = subprocess.Popen(
        command, env=api.environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    records: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://{settings.api.host}:{port}/health/live").is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the h11/asyncio API did not start within 60 s")
            time.sleep(0.5)

        def ok(response: httpx.Response) -> bool:
            return response.status_code == 200

        async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.post("/search", files={"image": ("q.jpg", images[i])})

        async def refresh(client: httpx.AsyncClient, i: int) -> httpx.Response:
            files = {"image": ("q.jpg", images[i])}
            return await client.post("/search", files=files, headers=NO_CACHE)

        servers = {
            "httptools+uvloop": f"http://{settings.api.host}:{settings.api.port}",
            "h11+asyncio": f"http://{settings.api.host}:{port}",
        }
        for url in servers.values():
            asyncio.run(load(send, len(images), 1, url, ok))  # both caches filled
        for _ in range(2):  # alternated, twice: a drift of the machine shows
            for name, url in servers.items():
                for scenario, request in (("cached result", send), ("cached embedding", refresh)):
                    figures = asyncio.run(load(request, len(images), 1, url, ok))
                    records.append({"scenario": f"{scenario}, {name}", "concurrency": 1, **figures})
                    console.print(f"{scenario}, {name}: p50 {figures['p50_ms']} ms")
    finally:
        process.terminate()
        process.wait(timeout=30)
    return records


def targets_of(records: list[dict[str, Any]], model: str) -> dict[str, Any]:
    def find(scenario: str) -> dict[str, Any]:
        return next(
            r
            for r in records
            if r["model"] == model and r["scenario"] == scenario and r["concurrency"] == 1
        )

    uncached, alone = find("uncached")["p50_ms"], find("Triton alone")["p50_ms"]
    cached = find("cached result")
    return {
        "model": model,
        "cached_result_p50_ms": cached["p50_ms"],
        "cached_result_server_p50_ms": cached.get("server_p50_ms"),
        "uncached_p50_ms": uncached,
        "triton_p50_ms": alone,
        "uncached_over_triton": round(uncached / alone, 3),
        "overhead_ms": round(uncached - alone, 2),
        "uncached_api_cpu_ms": find("uncached").get("api_cpu_ms_per_request"),
        "cached_api_cpu_ms": cached.get("api_cpu_ms_per_request"),
    }


def run(args: argparse.Namespace) -> int:
    base = get_settings()
    records: list[dict[str, Any]] = []
    for model in args.models:
        with tempfile.TemporaryDirectory(prefix="cbir-bench-query-") as scratch:
            records += measure(base, Path(scratch), args.shared, model, args)
    targets = [targets_of(records, model) for model in args.models]
    notes = {"notes": __doc__.strip().splitlines()[2:], "targets": targets, "index": "flowers17"}
    publish("query", records, notes, render_markdown)
    for target in targets:
        console.print(f"targets: {target}")
    return 0


def register(actions: Any) -> None:
    query = actions.add_parser(
        "query", help="query API latency and throughput", description=__doc__
    )
    query.add_argument("--requests", type=int, default=200, help="per scenario and concurrency")
    query.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    query.add_argument(
        "--profile", action="store_true", help="py-spy the API at concurrency 1 (bench/results)"
    )
    add_stack_arguments(query)
    query.set_defaults(run=run)
