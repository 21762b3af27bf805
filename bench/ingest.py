"""`cbir bench ingest`: images per second from the first upload until the last image is
searchable, and the upload-to-searchable latency (p50, p95), per dataset and model.

Every run gets a fresh local stack of its own (ports moved by --port-offset, a temporary data
directory), so the pipeline starts empty: producer, Kafka, the Faust embed and index agents,
Triton, Milvus and MySQL, as in production. Triton alone is measured in the same run on the
same images (4 requests of 8 in flight), and the target is a pipeline throughput of at least
80% of it: the embedding is the bottleneck, the rest should not be.
ResNet-50 runs with seeded random weights (speed only; the hub is unreachable here).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import add_stack_arguments, on_fresh_stacks, publish
from bench.embedding import CpuMeter
from cbir import wiring
from cbir.settings import Settings, get_settings, side_by_side
from domain.images import image_id_of
from embedding_models.export import export_model
from embedding_models.runtime import Pooling
from embedding_models.shared_mobilenet import export_shared_mobilenet
from evaluation.report import provenance_line
from local_stack.launcher import Launcher
from producers.ingest import collect
from service_adapters import metadata_store
from service_adapters.embedder import TritonEmbedder

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


def measure(
    base: Settings, root: Path, *, repository: Path, dataset: Path, model: str, offset: int
) -> dict[str, Any]:
    settings = side_by_side(base, offset, root / "data", repository)
    settings = settings.model_copy(
        update={"processors": settings.processors.model_copy(update={"model": model})}
    )
    launcher = Launcher(settings)
    try:
        launcher.up()  # inside: a stack that came up in part is stopped too
        items = collect([str(dataset)])
        unique = len({image_id_of(item.path.read_bytes()) for item in items})
        sample = [item.path.read_bytes() for item in items[: min(len(items), 1000)]]
        alone = triton_alone(settings, model, sample)
        meters = {
            svc.name: CpuMeter(svc.process.pid) for svc in launcher.services if svc.process.pid
        }
        # the launcher's servers are children of this process: count this process alone
        meters["producer"] = CpuMeter(children=False)
        cpu_before = {name: meter.seconds() for name, meter in meters.items()}
        started = time.perf_counter()
        summary = wiring.ingest(settings, items)
        produced = time.perf_counter() - started
        while indexed_count(settings) < unique:
            if time.perf_counter() - started > 3600:
                raise RuntimeError("the pipeline did not index everything within an hour")
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        cpu = {name: round(meter.seconds() - cpu_before[name], 1) for name, meter in meters.items()}
        waits = latencies(settings)
    finally:
        launcher.down()
    rate = unique / elapsed
    return {
        "dataset": dataset.name,
        "model": model,
        "images": unique,
        "rejected": len(summary.rejected),
        "producer_seconds": round(produced, 1),
        "end_to_end_seconds": round(elapsed, 1),
        "images_per_s": round(rate, 1),
        "triton_alone_images_per_s": round(alone, 1),
        "ratio_to_triton": round(rate / alone, 3),
        "latency_p50_s": round(float(np.percentile(waits, 50)), 2),
        "latency_p95_s": round(float(np.percentile(waits, 95)), 2),
        # where the two cores went, CPU seconds per process tree during the run
        "cpu_seconds": dict(sorted(cpu.items(), key=lambda kv: -kv[1])),
    }


def render_markdown(document: dict[str, Any]) -> str:
    lines = [
        provenance_line(document),
        "",
        "| dataset | model | images | end to end, s | images/s | Triton alone, images/s "
        "| ratio | latency p50, s | latency p95, s | CPU seconds by process |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in document["records"]:
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['images']} | {r['end_to_end_seconds']} "
            f"| {r['images_per_s']} | {r['triton_alone_images_per_s']} "
            f"| {r['ratio_to_triton']:.0%} | {r['latency_p50_s']} | {r['latency_p95_s']} "
            f"| {', '.join(f'{k} {v}' for k, v in r.get('cpu_seconds', {}).items())} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    base = get_settings()
    with tempfile.TemporaryDirectory(prefix="cbir-bench-ingest-") as scratch:
        repository = Path(scratch) / "models"
        export_models(repository, args.shared, args.models)
        runs = [
            (
                f"{name} with {model}",
                partial(
                    measure,
                    base,
                    repository=repository,
                    dataset=args.shared / "data" / name,
                    model=model,
                    offset=args.port_offset,
                ),
            )
            for model in args.models
            for name in args.datasets
        ]
        records = on_fresh_stacks(runs, Path(scratch))
    publish("ingest", records, {"notes": __doc__.strip().splitlines()[-6:]}, render_markdown)
    return 0


def register(actions: Any) -> None:
    ingest = actions.add_parser(
        "ingest", help="end-to-end ingestion throughput and latency", description=__doc__
    )
    ingest.add_argument("--datasets", nargs="+", default=["cifar10-test", "flowers17"])
    ingest.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    add_stack_arguments(ingest)
    ingest.set_defaults(run=run)
