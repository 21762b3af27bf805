"""`cbir bench ingest`: images per second from the first upload until the last image is
searchable, and the upload-to-searchable latency (p50, p95), per dataset and model.

Every run gets a fresh local stack of its own (ports moved by --port-offset, a temporary data
directory), so the pipeline starts empty: producer, Kafka, the Faust embed and index agents,
Triton, Milvus and MySQL, as in production. In the same run, one after the other on the same
images: Triton alone (4 requests of 8 in flight; the model's CPU per image), the plain batch
loader of cbir/bench/batch_loader.py (files -> Triton -> Milvus + MySQL, what a user might write
instead), then the pipeline, with the CPU seconds of every process during each. Targets: the
pipeline's CPU outside the model at most a quarter of the model's own per image, and its
throughput at least 90% of the batch loader's. `--workers 1 2` runs the pipeline with each
number of processor workers (the batch loader with the first); `--profile` samples the
processors and the producer with py-spy (bench/results/profiles/ingest). Local features
(SIFT, duplicates) are off unless `--local-features on` (`off on`: both, side by side); with
them, the run ends when every consumer group has caught up (the indexing group's last image is
reported too), and the processors' CPU is split by role (indexing, features, duplicates).
Thumbnails are off unless `--thumbnails on` (`off on`: side by side, the target being at least
0.9 x the throughput without them).
ResNet-50 runs with seeded random weights (speed only; the hub is unreachable here).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from cbir import wiring
from cbir.adapters import metadata_store
from cbir.adapters.embedder import TritonEmbedder
from cbir.adapters.vector_index import MilvusVectorIndex
from cbir.bench.batch_loader import Loaded, batch_load
from cbir.bench.common import add_stack_arguments, on_fresh_stacks, publish
from cbir.bench.embedding import CpuMeter
from cbir.bench.profiles import PROFILES, Profiler
from cbir.domain.images import image_id_of
from cbir.evaluation.report import provenance_line
from cbir.models.export import export_model
from cbir.models.runtime import Pooling
from cbir.models.shared_mobilenet import export_shared_mobilenet
from cbir.settings import Settings, get_settings, side_by_side
from cbir.stack.launcher import Launcher
from processors import WORKER_ROLE
from producers.ingest import IngestSummary, collect

MODELS = {
    "mobilenet": "the shared MobileNet (real weights)",
    "resnet50_random": "ResNet-50, random weights (speed only)",
}


def export_models(repository: Path, shared: Path, models: list[str]) -> None:
    if "mobilenet" in models:
        export_shared_mobilenet(repository, shared / "models" / "mobilenet_v1_embed.onnx")
    if "resnet50_random" in models:
        export_model(
            repository,
            "resnet50_random",
            1,
            timm_arch="resnet50",
            weights="random",
            seed=0,
            pooling=Pooling("gap"),
        )


def triton_alone(settings: Settings, model: str, images: list[bytes]) -> float:
    embedder = TritonEmbedder(settings.triton, model)
    chunks = [images[i : i + 8] for i in range(0, len(images), 8)]
    embedder.embed(chunks[0])
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(embedder.embed, chunks))
    return len(images) / (time.perf_counter() - started)


def indexed_count(settings: Settings) -> int:
    with metadata_store.connect(settings.mysql) as conn:
        return metadata_store.status_counts(conn).get("indexed", 0)


def latencies(settings: Settings) -> np.ndarray:
    with metadata_store.connect(settings.mysql) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT TIMESTAMPDIFF(MICROSECOND, uploaded_at, updated_at) FROM images"
            " WHERE status = 'indexed'"
        )
        return np.array([row[0] / 1e6 for row in cur.fetchall()])


def cpu_by_process(
    meters: dict[str, CpuMeter], work: Callable[[], None]
) -> tuple[float, dict[str, float]]:
    """Wall seconds of `work` and the CPU seconds each process spent meanwhile."""
    before = {name: meter.seconds() for name, meter in meters.items()}
    started = time.perf_counter()
    work()
    elapsed = time.perf_counter() - started
    spent = {name: meter.seconds() - before[name] for name, meter in meters.items()}
    return elapsed, dict(sorted(spent.items(), key=lambda kv: -kv[1]))


def per_image(cpu: dict[str, float], images: int) -> dict[str, Any]:
    """CPU-ms per image: the model's (Triton), everything else together, their ratio."""
    model_ms = 1000 * cpu.get("triton", 0.0) / images
    outside_ms = 1000 * sum(v for k, v in cpu.items() if k != "triton") / images
    return {
        "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
        "model_cpu_ms_per_image": round(model_ms, 2),
        "outside_cpu_ms_per_image": round(outside_ms, 2),
        "outside_over_model": round(outside_ms / model_ms, 3) if model_ms else None,
    }


ROLE = "role:"


def role_meters(launcher: Launcher) -> dict[str, CpuMeter]:
    """A meter per processors role (`cbir.wiring.consumer_roles`), over its workers."""
    pid = launcher.service("processors").process.pid
    if pid is None:
        return {}
    found: dict[str, list[int]] = {}
    for worker in psutil.Process(pid).children():
        role = worker.environ().get(WORKER_ROLE, "core")
        found.setdefault(role, []).append(worker.pid)
    return {f"{ROLE}{role}": CpuMeter(pids=pids) for role, pids in found.items()}


def clear_batch_load(settings: Settings, collection: str) -> None:
    """Forget what the batch loader wrote, so the pipeline starts from the same empty state."""
    index = MilvusVectorIndex(settings.milvus, settings.processors)
    try:
        index.drop(collection)
    finally:
        index.close()
    with metadata_store.connect(settings.mysql) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM images")


def measure(
    base: Settings,
    root: Path,
    *,
    repository: Path,
    dataset: Path,
    model: str,
    offset: int,
    workers: int = 1,
    local_features: bool = False,
    thumbnails: bool = False,
    batch_loader: bool = True,
    profiles: Path | None = None,
) -> dict[str, Any]:
    """On a fresh stack: Triton alone, the plain batch loader, then the pipeline, each with
    the CPU every process spent, one after the other on the same images."""
    settings = side_by_side(base, offset, root / "data", repository)
    settings = settings.model_copy(
        update={
            "processors": settings.processors.model_copy(
                update={"model": model, "workers": workers}
            ),
            "local_features": settings.local_features.model_copy(
                update={"enabled": local_features}
            ),
            "thumbnails": settings.thumbnails.model_copy(update={"enabled": thumbnails}),
        }
    )
    launcher = Launcher(settings)
    label = f"{dataset.name}-{model}-{workers}w{'-features' if local_features else ''}"
    label += "-thumbnails" if thumbnails else ""
    try:
        launcher.up()  # inside: a stack that came up in part is stopped too
        items = collect([str(dataset)])
        unique = len({image_id_of(item.path.read_bytes()) for item in items})
        sample = [item.path.read_bytes() for item in items[: min(len(items), 1000)]]
        meters = {
            svc.name: CpuMeter(svc.process.pid) for svc in launcher.services if svc.process.pid
        }
        # the launcher's servers are children of this process: count this process alone
        meters["producer"] = CpuMeter(children=False)
        alone: dict[str, float] = {}

        def triton_run() -> None:
            alone["rate"] = triton_alone(settings, model, sample)

        _, alone_cpu = cpu_by_process({"triton": meters["triton"]}, triton_run)
        loader: dict[str, Any] | None = None
        if batch_loader:
            loaded: list[Loaded] = []
            paths = [item.path for item in items]
            seconds, cpu = cpu_by_process(
                meters,
                lambda: loaded.append(batch_load(settings, model, paths, "batch_loader")),
            )
            loader = {
                "images": loaded[0].images,
                "skipped": loaded[0].skipped,
                "seconds": round(seconds, 1),
                "images_per_s": round(loaded[0].images / seconds, 1),
                # what the loader uses; the idle pipeline's processes are left out
                **per_image(
                    {
                        ("loader" if k == "producer" else k): v
                        for k, v in cpu.items()
                        if k in ("producer", "triton", "milvus", "mariadb")
                    },
                    unique,
                ),
            }
            clear_batch_load(settings, "batch_loader")
        summaries: list[IngestSummary] = []
        profiler = Profiler(profiles / label) if profiles is not None else None
        if profiler is not None:
            processors = next(s for s in launcher.services if s.name == "processors")
            if processors.process.pid is None:
                raise RuntimeError("the processors are not running: nothing to profile")
            # each worker on its own (py-spy following a supervisor's subprocesses costs it a
            # core on this machine, and its recording was lost on stopping)
            workers_ = psutil.Process(processors.process.pid).children()
            for number, worker in enumerate(workers_):
                profiler.start(f"processors-worker-{number}", worker.pid, subprocesses=False)
            profiler.start("producer", os.getpid(), subprocesses=False)

        marks: dict[str, float] = {}
        roles = role_meters(launcher)

        def pipeline() -> None:
            started = time.perf_counter()
            summaries.append(wiring.ingest(settings, items))
            while indexed_count(settings) < unique:
                if time.perf_counter() - started > 3600:
                    raise RuntimeError("the pipeline did not index everything within an hour")
                time.sleep(0.2)
            marks["indexed"] = time.perf_counter() - started
            # the derived consumer groups (local features, near-duplicates) too
            while not wiring.caught_up(settings):  # each look opens a consumer per group
                if time.perf_counter() - started > 3600:
                    raise RuntimeError("the processors did not catch up within an hour")
                time.sleep(1.0)

        try:
            elapsed, cpu = cpu_by_process({**meters, **roles}, pipeline)
            by_role = {k.removeprefix(ROLE): cpu.pop(k) for k in list(cpu) if k.startswith(ROLE)}
        finally:
            if profiler is not None:
                profiler.stop(f"{label}, ingesting {unique} images")
        waits = latencies(settings)
    finally:
        launcher.down()
    rate = unique / elapsed
    record: dict[str, Any] = {
        "dataset": dataset.name,
        "model": model,
        "workers": workers,
        "local_features": local_features,
        "thumbnails": thumbnails,
        "images": unique,
        "rejected": len(summaries[0].rejected),
        "end_to_end_seconds": round(elapsed, 1),
        "images_per_s": round(rate, 1),
        # the last image indexed (searchable); `images_per_s` waits for every consumer group
        "indexed_seconds": round(marks["indexed"], 1),
        "indexed_images_per_s": round(unique / marks["indexed"], 1),
        "processors_cpu_ms_per_image_by_role": {
            role: round(1000 * seconds / unique, 2) for role, seconds in by_role.items()
        },
        "triton_alone_images_per_s": round(alone["rate"], 1),
        "triton_alone_cpu_ms_per_image": round(1000 * alone_cpu["triton"] / len(sample), 2),
        "ratio_to_triton": round(rate / alone["rate"], 3),
        "latency_p50_s": round(float(np.percentile(waits, 50)), 2),
        "latency_p95_s": round(float(np.percentile(waits, 95)), 2),
        # where the cores went, CPU seconds per process tree during the pipeline's run
        **per_image(cpu, unique),
    }
    if loader is not None:
        record["batch_loader"] = loader
        record["ratio_to_batch_loader"] = round(rate / loader["images_per_s"], 3)
    return record


def render_markdown(document: dict[str, Any]) -> str:
    lines = [
        provenance_line(document),
        "",
        "| dataset | model | workers | local features | thumbnails | images "
        "| images/s, every group caught up | images/s, searchable | batch loader, "
        "images/s | pipeline / batch loader | Triton alone, images/s | pipeline / Triton "
        "| model CPU-ms / image | outside the model, CPU-ms / image | outside / model "
        "| batch loader outside the model, CPU-ms / image | latency p50, s | latency p95, s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in document["records"]:
        loader = r.get("batch_loader") or {}
        versus = r.get("ratio_to_batch_loader")
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r.get('workers', 1)} "
            f"| {'on' if r.get('local_features') else 'off'} "
            f"| {'on' if r.get('thumbnails') else 'off'} | {r['images']} "
            f"| {r['images_per_s']} | {r.get('indexed_images_per_s', '')} "
            f"| {loader.get('images_per_s', '')} "
            f"| {f'{versus:.0%}' if versus is not None else ''} "
            f"| {r['triton_alone_images_per_s']} | {r['ratio_to_triton']:.0%} "
            f"| {r.get('model_cpu_ms_per_image', '')} | {r.get('outside_cpu_ms_per_image', '')} "
            f"| {r.get('outside_over_model', '')} | {loader.get('outside_cpu_ms_per_image', '')} "
            f"| {r['latency_p50_s']} | {r['latency_p95_s']} |"
        )
    lines += ["", "CPU seconds by process, the pipeline's run (and the batch loader's):", ""]
    for r in document["records"]:
        cpu = ", ".join(f"{k} {v}" for k, v in r.get("cpu_seconds", {}).items())
        loader = r.get("batch_loader") or {}
        loader_cpu = ", ".join(f"{k} {v}" for k, v in loader.get("cpu_seconds", {}).items())
        roles = ", ".join(
            f"{k} {v}" for k, v in r.get("processors_cpu_ms_per_image_by_role", {}).items()
        )
        features = "on" if r.get("local_features") else "off"
        thumbnails = "on" if r.get("thumbnails") else "off"
        lines.append(
            f"- {r['dataset']}, {r['model']}, {r.get('workers', 1)} worker(s), local features "
            f"{features}, thumbnails {thumbnails}: {cpu}"
            + (f" (batch loader: {loader_cpu})" if loader_cpu else "")
            + (f"; processors CPU-ms per image by role: {roles}" if roles else "")
            + (
                f"; last image indexed at {r['indexed_seconds']} s "
                f"({r['indexed_images_per_s']} images/s)"
                if "indexed_seconds" in r
                else ""
            )
        )
    lines += thumbnail_verdict(document["records"])
    return "\n".join(lines) + "\n"


def thumbnail_verdict(records: list[dict[str, Any]]) -> list[str]:
    """With thumbnails on and off side by side: the throughput ratios (target: 0.9)."""
    off = next((r for r in records if r.get("thumbnails") is False), None)
    on = next((r for r in records if r.get("thumbnails")), None)
    if off is None or on is None:
        return []
    searchable = on["indexed_images_per_s"] / off["indexed_images_per_s"]
    caught_up = on["images_per_s"] / off["images_per_s"]
    return [
        "",
        f"Thumbnails on / off: {searchable:.2f} x the images/s to searchable, {caught_up:.2f} x "
        "until every thumbnail is made too (target: at least 0.9 x).",
    ]


def run(args: argparse.Namespace) -> int:
    base = get_settings()
    profiles = PROFILES / "ingest" if args.profile else None
    with tempfile.TemporaryDirectory(prefix="cbir-bench-ingest-") as scratch:
        repository = Path(scratch) / "models"
        export_models(repository, args.shared, args.models)
        runs = [
            (
                # a short label: it names the stack's folder, and MariaDB's socket path is
                # limited to 107 characters
                f"{name} {model} {workers}w features {features} thumbs {thumbs}",
                partial(
                    measure,
                    base,
                    repository=repository,
                    dataset=args.shared / "data" / name,
                    model=model,
                    offset=args.port_offset,
                    workers=workers,
                    local_features=features == "on",
                    thumbnails=thumbs == "on",
                    batch_loader=workers == args.workers[0]
                    and features == "off"
                    and thumbs == args.thumbnails[0],
                    profiles=profiles,
                ),
            )
            for model in args.models
            for name in args.datasets
            for workers in args.workers
            for features in args.local_features
            for thumbs in args.thumbnails
        ]
        records = on_fresh_stacks(runs, Path(scratch))
    publish(args.name, records, {"notes": __doc__.strip().splitlines()[2:]}, render_markdown)
    return 0


def register(actions: Any) -> None:
    ingest = actions.add_parser(
        "ingest", help="end-to-end ingestion throughput and latency", description=__doc__
    )
    ingest.add_argument("--datasets", nargs="+", default=["cifar10-test", "flowers17"])
    ingest.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ingest.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="processor workers, one run each"
    )
    ingest.add_argument(
        "--local-features",
        nargs="+",
        choices=["off", "on"],
        default=["off"],
        help="one run each: without, or with SIFT features and near-duplicates (the batch "
        "loader computes neither; `off on`: side by side in one run)",
    )
    ingest.add_argument(
        "--thumbnails",
        nargs="+",
        choices=["off", "on"],
        default=["off"],
        help="one run each: without, or with thumbnails and previews made by their consumer "
        "group (`off on`: side by side in one run)",
    )
    ingest.add_argument("--profile", action="store_true", help="py-spy the processors, producer")
    ingest.add_argument("--name", default="ingest", help="results file name (bench/results)")
    add_stack_arguments(ingest)
    ingest.set_defaults(run=run)
