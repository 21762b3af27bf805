"""`cbir bench replay`: how fast the log rebuilds the index, against how fast it was filled.

Per dataset, on a fresh local stack of its own (ports moved by --port-offset), with the
shared MobileNet: the dataset is ingested through the pipeline (images/s from the first
upload until the last is indexed), then
- reindex: the embeddings topic is replayed into a new generation (HNSW, no re-embedding)
  while the old one serves; embeddings/s of the replay, seconds until the alias switched;
- rebuild from nothing: Milvus and MySQL are wiped and `cbir reindex` restores both from
  the topic alone; seconds until searchable again, embeddings/s;
- the bytes the compacted topics hold on disk per image, and so per million images.
All in one process on one machine, one after the other: the ratios are side by side.
`--synthetic N` adds a run whose log holds N embedding events of random unit vectors (written
as the embed stage writes them, indexed by the processors), for a replay long enough to time;
`--profile` samples each replay with py-spy. Local features are off unless
`--local-features` (a replay never touches them); each replay starts once every processor
agent has caught up and Milvus has built its index.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from cbir import wiring
from cbir.adapters.vector_index import MilvusVectorIndex
from cbir.bench.common import add_stack_arguments, on_fresh_stacks, publish
from cbir.bench.embedding import CpuMeter
from cbir.bench.ingest import cpu_by_process, indexed_count
from cbir.bench.profiles import PROFILES, Profiler
from cbir.bench.query import settle
from cbir.domain.images import image_id_of, object_key_of
from cbir.evaluation.report import provenance_line
from cbir.models.runtime import SPEC_FILE, ModelSpec
from cbir.models.shared_mobilenet import export_shared_mobilenet
from cbir.replay.rebuild import ReplayOptions, ReplayStatus
from cbir.settings import Settings, get_settings, side_by_side
from cbir.stack.launcher import Launcher
from cbir.stack.layout import StackLayout
from cbir.stack.services.mariadb import MariaDBService
from cbir.wiring import Adapters, caught_up
from producers.ingest import collect
from schemas.events import EmbeddingComputed, EventSerializer, ImageMetadata

T = TypeVar("T")


def wipe_index_and_metadata(settings: Settings, layout: StackLayout) -> None:
    """Lose Milvus's collections and alias and MySQL's database (made again, empty, as a
    deployment provisions it): what a rebuild from nothing starts from."""
    index = MilvusVectorIndex(settings.milvus, settings.processors)
    try:
        index.drop_everything()
    finally:
        index.close()
    root = MariaDBService(settings, layout)._root()
    try:
        with root.cursor() as cur:
            cur.execute(f"DROP DATABASE `{settings.mysql.database}`")
            cur.execute(f"CREATE DATABASE `{settings.mysql.database}`")
    finally:
        root.close()


class ReplayClock:
    """When the replay started reading (its collection made and loaded), when it caught up
    with the end of its topic, and how many events it read."""

    def __init__(self) -> None:
        self.created = time.perf_counter()
        self.reading: float | None = None
        self.caught_up: float | None = None
        self.replayed = 0

    def __call__(self, status: ReplayStatus) -> None:
        now = time.perf_counter()
        if status.phase == "replaying":
            self.reading = self.reading or now
            self.replayed = max(self.replayed, status.replayed)
        elif self.caught_up is None:
            self.caught_up = now


def timed_reindex(
    settings: Settings, options: ReplayOptions, meters: dict[str, CpuMeter]
) -> dict[str, Any]:
    """A reindex: its rates, and the CPU each process spent from its start until the new
    generation was live (Milvus's index build included), in microseconds per embedding."""
    clock = ReplayClock()

    def reindex() -> None:
        with Adapters(settings) as adapters:
            adapters.rebuilder(clock).reindex(options)

    _, cpu = cpu_by_process(meters, reindex)
    done = time.perf_counter()
    reading = clock.reading or clock.created
    replay = (clock.caught_up or done) - reading
    events = max(clock.replayed, 1)
    return {
        "events": clock.replayed,
        "setup_seconds": round(reading - clock.created, 2),
        "replay_seconds": round(replay, 2),
        "events_per_s": round(clock.replayed / replay, 1),
        "seconds_to_live": round(done - clock.created, 2),
        "cpu_us_per_embedding": {k: round(1e6 * v / events) for k, v in cpu.items()},
    }


def cpu_line(dataset: str, phase: str, cpu_us: dict[str, int], cores: int) -> str:
    """Where a replay's CPU went, per embedding, and the rate that CPU allows on `cores`."""
    total = sum(cpu_us.values())
    shares = ", ".join(f"{name} {us}" for name, us in cpu_us.items() if us)
    bound = f"{cores * 1e6 / total:.0f}" if total else "-"
    return (
        f"{dataset}, {phase} until live, CPU-us per embedding: {shares}; total {total}: "
        f"at most {bound} embeddings/s on {cores} cores"
    )


def topic_bytes(layout: StackLayout, topic: str) -> int:
    """Bytes of the topic's records in the local broker's log directory (its segment files;
    the index files beside them are preallocated, 10 MB each, whatever they hold)."""
    log_dir = layout.service_data("kafka") / "log"
    return sum(
        segment.stat().st_size
        for folder in log_dir.glob(f"{topic}-*")
        if folder.name.rsplit("-", 1)[0] == topic
        for segment in folder.glob("*.log")
    )


def write_synthetic(settings: Settings, count: int, model_id: str, dim: int) -> int:
    """`count` embedding events of random unit vectors, as the embed stage writes them (its
    key, its Avro schema), straight into the embeddings topic: a replay at a scale the shared
    images do not reach, without embedding them first. Returns the distinct images."""
    rng = np.random.default_rng(count)
    serializer = EventSerializer()
    topic = settings.kafka.embeddings_topic
    moment = datetime.now(UTC)
    with Adapters(settings) as adapters:
        for start in range(0, count, 1000):
            vectors = rng.standard_normal((min(1000, count - start), dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            batch = []
            for offset, vector in enumerate(vectors):
                image_id = image_id_of(f"synthetic {start + offset}".encode())
                image = ImageMetadata(
                    image_id, settings.minio.bucket, object_key_of(image_id), "synthetic.jpg",
                    "bench", "image/jpeg", 1000, 224, 224, moment, ("synthetic",),
                )  # fmt: skip
                event = EmbeddingComputed.of(image, model_id, vector)
                batch.append((topic, image_id.encode(), serializer.dumps(event)))
            failures = [error for error in adapters.writer.send(batch) if error is not None]
            if failures:
                raise RuntimeError(f"Kafka refused synthetic events: {failures[0]}")
    return count


def measure(
    base: Settings,
    root: Path,
    *,
    repository: Path,
    dataset: Path,
    offset: int,
    synthetic: int = 0,
    profiles: Path | None = None,
    local_features: bool = False,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """One dataset through the pipeline (or, with `synthetic`, that many embedding events
    written into the embeddings topic and indexed by the processors), then a reindex and a
    rebuild from nothing, each timed; with `profiles`, the replays sampled by py-spy."""
    settings = side_by_side(base, offset, root / "data", repository)
    features = settings.local_features.model_copy(update={"enabled": local_features})
    settings = settings.model_copy(update={"local_features": features})
    launcher = Launcher(settings)
    try:
        launcher.up()  # inside: a stack that came up in part is stopped too
        started = time.perf_counter()
        if synthetic:
            spec = ModelSpec.from_json(
                (repository / settings.processors.model / "1" / SPEC_FILE).read_text()
            )
            unique = write_synthetic(settings, synthetic, spec.model_id, spec.dim)
        else:
            items = collect([str(dataset)])
            unique = len({image_id_of(item.path.read_bytes()) for item in items})
            started = time.perf_counter()
            wiring.ingest(settings, items)
        while indexed_count(settings) < unique:
            if time.perf_counter() - started > 3600:
                raise RuntimeError("the pipeline did not index everything within an hour")
            time.sleep(0.2)
        ingest_s = time.perf_counter() - started
        # the replays are timed on a quiet machine: every processor agent has caught up
        while not caught_up(settings):
            if time.perf_counter() - started > 3600:
                raise RuntimeError("the processors did not catch up within an hour")
            time.sleep(1)
        settle(settings)
        options = ReplayOptions(grace_s=0, batch_size=batch_size or settings.replay.batch_size)
        name = f"synthetic-{synthetic}" if synthetic else dataset.name
        meters = {
            svc.name: CpuMeter(svc.process.pid) for svc in launcher.services if svc.process.pid
        }
        meters["replay"] = CpuMeter(children=False)  # this process: the replay runs here
        reindex = profiled(
            profiles,
            f"replay-{name}-reindex",
            lambda: timed_reindex(settings, options, meters),
        )
        wipe_index_and_metadata(settings, launcher.layout)
        rebuild = profiled(
            profiles,
            f"replay-{name}-rebuild",
            lambda: timed_reindex(settings, options, meters),
        )
        if indexed_count(settings) != unique:
            raise RuntimeError(f"the rebuild restored {indexed_count(settings)} of {unique} rows")
        sizes = {
            topic: topic_bytes(launcher.layout, topic)
            for topic in (settings.kafka.images_topic, settings.kafka.embeddings_topic)
        }
    finally:
        launcher.down()
    ingest_rate = unique / ingest_s
    per_image = {topic: size / unique for topic, size in sizes.items()}
    return {
        "dataset": name,
        "ingested": "embedding events (no images)" if synthetic else "images",
        "local_features": local_features,
        "batch_size": options.batch_size,
        "model": settings.processors.model,
        "images": unique,
        "ingest_seconds": round(ingest_s, 1),
        "ingest_images_per_s": round(ingest_rate, 1),
        "reindex": reindex,
        "reindex_ratio_to_ingest": round(reindex["events_per_s"] / ingest_rate, 1),
        "rebuild": rebuild,
        "rebuild_ratio_to_ingest": round(rebuild["events_per_s"] / ingest_rate, 1),
        "log_bytes_per_image": {topic: round(size) for topic, size in per_image.items()},
        "log_gb_per_million_images": round(sum(per_image.values()) * 1e6 / 1e9, 2),
    }


def profiled(profiles: Path | None, name: str, action: Callable[[], T]) -> T:
    """The action, with this process sampled by py-spy while it runs when `profiles` is set."""
    if profiles is None:
        return action()
    profiler = Profiler(profiles)
    profiler.start(name, os.getpid(), subprocesses=False)
    try:
        return action()
    finally:
        profiler.stop(name)


def render_markdown(document: dict[str, Any]) -> str:
    lines = [
        provenance_line(document),
        "",
        "| dataset | images | batch | ingest, images/s | reindex replay, embeddings/s "
        "| reindex, s to live | ratio to ingest | rebuild from nothing, s "
        "| rebuild, embeddings/s | log on disk, bytes/image (images, embeddings) "
        "| GB per million images |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in document["records"]:
        sizes = ", ".join(str(v) for v in r["log_bytes_per_image"].values())
        lines.append(
            f"| {r['dataset']} | {r['images']} | {r.get('batch_size', 500)} "
            f"| {r['ingest_images_per_s']} "
            f"| {r['reindex']['events_per_s']} | {r['reindex']['seconds_to_live']} "
            f"| {r['reindex_ratio_to_ingest']}x | {r['rebuild']['seconds_to_live']} "
            f"| {r['rebuild']['events_per_s']} | {sizes} | {r['log_gb_per_million_images']} |"
        )
    cores = document.get("machine", {}).get("cores") or os.cpu_count() or 1
    for r in document["records"]:
        for phase in ("reindex", "rebuild"):
            cpu_us = r[phase].get("cpu_us_per_embedding")
            if cpu_us:
                lines += ["", cpu_line(r["dataset"], phase, cpu_us, int(cores))]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    base = get_settings()
    with tempfile.TemporaryDirectory(prefix="cbir-bench-replay-") as scratch:
        repository = Path(scratch) / "models"
        export_shared_mobilenet(
            repository, args.shared / "models" / "mobilenet_v1_embed.onnx", base.processors.model
        )
        profiles = PROFILES / "replay" if args.profile else None
        runs = [
            (
                name,
                partial(
                    measure,
                    base,
                    repository=repository,
                    dataset=args.shared / "data" / name,
                    offset=args.port_offset,
                    profiles=profiles,
                    local_features=args.local_features,
                    batch_size=args.batch_size,
                ),
            )
            for name in args.datasets
        ]
        if args.synthetic:
            runs.append(
                (
                    f"synthetic-{args.synthetic}",
                    partial(
                        measure,
                        base,
                        repository=repository,
                        dataset=Path("synthetic"),
                        offset=args.port_offset,
                        synthetic=args.synthetic,
                        profiles=profiles,
                        batch_size=args.batch_size,
                    ),
                )
            )
        records = on_fresh_stacks(runs, Path(scratch))
    publish(args.name, records, {"notes": __doc__.strip().splitlines()[2:]}, render_markdown)
    return 0


def register(actions: Any) -> None:
    replay = actions.add_parser(
        "replay", help="replay and rebuild rates against the ingestion rate", description=__doc__
    )
    replay.add_argument("--datasets", nargs="*", default=["cifar10-test", "flowers17"])
    replay.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="also replay N synthetic 1024-d embedding events (a scale the shared images lack)",
    )
    replay.add_argument("--name", default="replay", help="results file name (bench/results)")
    replay.add_argument(
        "--batch-size", type=int, help="events per replayed write (CBIR_REPLAY__BATCH_SIZE)"
    )
    replay.add_argument(
        "--local-features",
        action="store_true",
        help="extract SIFT features and judge duplicates while ingesting (the replays are "
        "timed once every agent has caught up either way)",
    )
    replay.add_argument(
        "--profile",
        action="store_true",
        help="sample the replays with py-spy (bench/results/profiles)",
    )
    add_stack_arguments(replay)
    replay.set_defaults(run=run)
