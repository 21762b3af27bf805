"""`cbir process | search | delete`: run the processors, query the index, remove images."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from cbir.output import console
from cbir.settings import get_settings


def _process(args: argparse.Namespace) -> int:
    if args.action == "status":
        from processors import status

        settings = get_settings()
        embeddings = status.indexed_topics(settings) or [settings.kafka.embeddings_topic]
        topics = [settings.kafka.images_topic, *embeddings]
        if args.wait:
            deadline = time.monotonic() + args.wait
            while any(lag.lag for lag in status.consumer_lag(settings, topics)):
                if time.monotonic() > deadline:
                    console.print(f"[red]still behind after {args.wait} s[/]")
                    break
                time.sleep(1)
        table = Table("topic", "end offset", "processed", "lag", box=None)
        for lag in status.consumer_lag(settings, topics):
            table.add_row(lag.topic, str(lag.end_offset), str(lag.committed), str(lag.lag))
        console.print(table)
        console.print(f"dead letters: {status.dead_letter_count(settings)}")
        console.print(f"images by status: {status.image_statuses(settings)}")
        console.print(f"vectors searchable: {status.indexed_vectors(settings)}")
        return 0
    worker = [sys.executable, "-m", "processors.supervisor", "--loglevel", args.loglevel]
    os.execv(sys.executable, worker)


def _search(args: argparse.Namespace) -> int:
    from cbir.wiring import Adapters
    from query_api.filters import SearchFilters
    from query_api.metrics import ApiMetrics

    with Adapters(get_settings()) as adapters:
        engine = adapters.query_engine(ApiMetrics())
        # the same path as the API's search, without its result cache
        outcome = engine.search_image(
            args.image.read_bytes(), args.k, SearchFilters.parse(), args.effort, False
        )
    table = Table("rank", "score", "image id", "file", "tags", box=None)
    for result in outcome.results:
        table.add_row(
            str(result.rank),
            f"{result.score:.4f}",
            result.image_id[:16],
            result.file_name,
            ", ".join(result.tags),
        )
    console.print(table)
    return 0


def _delete(args: argparse.Namespace) -> int:
    from cbir import wiring

    wiring.delete(get_settings(), args.image_ids, reason=args.reason)
    console.print(f"delete sent for {len(args.image_ids)} image(s); the processors apply it")
    return 0


def register(areas: Any) -> None:
    process = areas.add_parser("process", help="run the Faust processors (embed, index)")
    process.add_argument(
        "action",
        nargs="?",
        choices=["run", "status"],
        default="run",
        help="run the worker in the foreground (default), or show its status",
    )
    process.add_argument("--loglevel", default="info", choices=["debug", "info", "warn", "error"])
    process.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="with status: first wait (up to SECONDS) until nothing is left",
    )
    process.set_defaults(run=_process)

    search = areas.add_parser("search", help="the stored images most like an image file")
    search.add_argument("image", type=Path)
    search.add_argument("-k", type=int, default=10)
    search.add_argument(
        "--effort", type=int, help="search_list (DISKANN), ef (HNSW) or nprobe (IVF)"
    )
    search.set_defaults(run=_search)

    delete = areas.add_parser("delete", help="remove images (by id) from every store")
    delete.add_argument("image_ids", nargs="+")
    delete.add_argument("--reason", default="")
    delete.set_defaults(run=_delete)
