"""`cbir process | search | delete`: run the processors, query the index, remove images."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.progress import Progress
from rich.table import Table

from cbir.domain.errors import InvalidValue
from cbir.output import console
from cbir.settings import get_settings


def _process(args: argparse.Namespace) -> int:
    if args.action == "status":
        from cbir import wiring

        settings = get_settings()
        if args.wait:
            deadline = time.monotonic() + args.wait
            while not wiring.caught_up(settings):
                if time.monotonic() > deadline:
                    console.print(f"[red]still behind after {args.wait} s[/]")
                    break
                time.sleep(1)
        table = Table("role", "consumer group", "topic", "end offset", "processed", "lag", box=None)
        for role, lag in wiring.pipeline_lag(settings):
            table.add_row(
                role.name,
                role.group,
                lag.topic,
                str(lag.end_offset),
                str(lag.committed),
                str(lag.lag),
            )
        console.print(table)
        console.print(f"dead letters: {wiring.dead_letter_count(settings)}")
        console.print(f"images by status: {wiring.image_statuses(settings)}")
        console.print(f"vectors searchable: {wiring.indexed_vectors(settings)}")
        return 0
    worker = [sys.executable, "-m", "processors.supervisor", "--loglevel", args.loglevel]
    os.execv(sys.executable, worker)


def camera_clock(text: str) -> datetime:
    """A date or a time without zone, as the capture-time filters compare them."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write a date or a time, e.g. 2024-07-14 or 2024-07-14T18:00"
        ) from None


def _search(args: argparse.Namespace) -> int:
    from cbir.wiring import Adapters
    from query_api.filters import SearchFilters
    from query_api.metrics import ApiMetrics
    from query_api.search import SearchRequest
    from query_api.spatial import SpatialRequest

    settings = get_settings()
    filters = SearchFilters.parse(
        tags=args.tag, taken_after=args.taken_after, taken_before=args.taken_before
    )
    spatial = None
    if args.rerank == "spatial":
        local = settings.local_features
        spatial = SpatialRequest(
            args.depth or local.rerank_depth, local.rerank_budget_ms, args.expand
        )
    with Adapters(settings) as adapters:
        engine = adapters.query_engine(ApiMetrics())
        # the same path as the API's search, without its result cache
        request = SearchRequest(
            args.k,
            filters,
            effort=args.effort,
            use_result_cache=False,
            spatial=spatial,
            min_score=args.min_score,
        )
        if args.text is not None:
            if args.image is not None or spatial is not None:
                raise InvalidValue("--text searches by words alone: no image, no --rerank")
            outcome = engine.search.by_text(args.text, request)
        elif args.image is None:
            raise InvalidValue("give an image file to search with, or --text WORDS")
        else:
            outcome = engine.search.by_image(args.image.read_bytes(), request)
    columns = ["rank", "score", *(["inliers"] if spatial else []), "image id", "file", "taken"]
    table = Table(*columns, "tags", box=None)
    for result in outcome.results:
        inliers = [str(result.inliers) if result.inliers is not None else "-"] if spatial else []
        table.add_row(
            str(result.rank),
            f"{result.score:.4f}",
            *inliers,
            result.image_id[:16],
            result.file_name,
            (result.taken_at or "-")[:16].replace("T", " "),
            ", ".join(result.tags),
        )
    console.print(table)
    if outcome.spatial is not None:
        info = outcome.spatial
        console.print(
            f"spatial re-ranking: {info.verified} of {info.depth} candidates verified "
            f"in {info.ms:.0f} ms ({info.query_keypoints} query keypoints)"
        )
        if info.expanded_with is not None:
            console.print(f"expanded with {info.expanded_with} verified results, searched again")
    return 0


def _duplicates(args: argparse.Namespace) -> int:
    from cbir.domain.clusters import clusters
    from cbir.replay.duplicates import read_records, recompute
    from cbir.wiring import Adapters
    from query_api.metrics import ApiMetrics

    with Adapters(get_settings()) as adapters:
        engine = adapters.query_engine(ApiMetrics())
        if args.image_id:
            found = engine.duplicates.of(args.image_id)
            table = Table("tier", "cosine", "hamming", "inliers", "image id", "file", box=None)
            for d in found.duplicates:
                table.add_row(
                    d.tier,
                    f"{d.cosine:.3f}",
                    "-" if d.hamming is None else str(d.hamming),
                    "-" if d.inliers is None else str(d.inliers),
                    d.image_id[:16],
                    d.file_name,
                )
            console.print(table)
            console.print(f"{len(found.duplicates)} near-duplicates among {found.checked} checked")
            return 0
        settings = adapters.settings
        live = adapters.registry.live()
        if args.recompute:
            if live is None:
                console.print("nothing is indexed yet: nothing to recompute")
                return 0
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(f"judging {live.embeddings_topic}", total=None)
                written = recompute(
                    adapters.events,
                    adapters.duplicates_stage(),
                    live.embeddings_topic,
                    lambda n: progress.advance(task, n),
                )
            console.print(f"{written} records written to {settings.kafka.duplicates_topic}")
        records = read_records(adapters.events, settings.kafka.duplicates_topic)
        stale = sum(1 for r in records.values() if live is not None and r.model_id != live.model_id)
        links = [(r.image_id, link.image_id) for r in records.values() for link in r.links]
        present = adapters.metadata.lookup(sorted({i for pair in links for i in pair}))
        # a deleted image's tombstone removed its own record; links to it go with it
        groups = clusters([(a, b) for a, b in links if a in present and b in present])
    for number, group in enumerate(groups, start=1):
        console.print(f"cluster {number} ({len(group)} images)")
        for image_id in group:
            console.print(f"  {image_id[:16]}  {present[image_id].file_name}")
    console.print(
        f"{len(groups)} clusters of near-duplicates, from {len(records)} records on "
        f"{settings.kafka.duplicates_topic}"
    )
    if stale:
        console.print(
            f"{stale} records were judged with another model than the live one: "
            "run `cbir duplicates --recompute`"
        )
    return 0


def _delete(args: argparse.Namespace) -> int:
    from cbir import wiring

    wiring.delete(get_settings(), args.image_ids, reason=args.reason)
    console.print(f"delete sent for {len(args.image_ids)} image(s); the processors apply it")
    return 0


def register(areas: Any) -> None:
    process = areas.add_parser(
        "process",
        help="run the Faust processors (indexing; local features and near-duplicates in "
        "consumer groups of their own)",
    )
    process.add_argument(
        "action",
        nargs="?",
        choices=["run", "status"],
        default="run",
        help="run the workers in the foreground (default), or show every consumer group's lag",
    )
    process.add_argument("--loglevel", default="info", choices=["debug", "info", "warn", "error"])
    process.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="with status: first wait (up to SECONDS) until every group has caught up",
    )
    process.set_defaults(run=_process)

    search = areas.add_parser(
        "search", help="the stored images most like an image file, or matching words (--text)"
    )
    search.add_argument("image", type=Path, nargs="?")
    search.add_argument(
        "--text",
        metavar="WORDS",
        help='search by words, e.g. --text "red car at night" (the collection\'s model must '
        "have a text tower: a CLIP model, `cbir model export NAME --clip ARCH`)",
    )
    search.add_argument("-k", type=int, default=10)
    search.add_argument(
        "--min-score",
        type=float,
        metavar="S",
        help="only results at least this similar (cosine, -1 to 1), inside the index: fewer "
        "than k when fewer are that close",
    )
    search.add_argument(
        "--effort", type=int, help="search_list (DISKANN), ef (HNSW) or nprobe (IVF)"
    )
    search.add_argument(
        "--tag", action="append", default=[], help="only images with this tag (repeatable: any)"
    )
    for bound, meaning in (("after", "from this time on"), ("before", "before this time")):
        search.add_argument(
            f"--taken-{bound}",
            type=camera_clock,
            metavar="WHEN",
            help=f"only photographs taken {meaning} (EXIF capture time, the camera's clock: "
            "2024-07-14 or 2024-07-14T18:00; a zone is dropped); images without one are left out",
        )
    search.add_argument(
        "--rerank",
        choices=["none", "spatial"],
        default="none",
        help="spatial: re-rank the top candidates by spatial verification (the same object)",
    )
    search.add_argument("--depth", type=int, help="with --rerank spatial: candidates to verify")
    search.add_argument(
        "--expand",
        action="store_true",
        help="with --rerank spatial: search again with the query expanded by its verified results",
    )
    search.set_defaults(run=_search)

    duplicates = areas.add_parser(
        "duplicates", help="near-duplicates of one image, or every cluster of them"
    )
    duplicates.add_argument(
        "image_id", nargs="?", help="one image; omitted: every cluster, from the duplicates topic"
    )
    duplicates.add_argument(
        "--recompute",
        action="store_true",
        help="first judge every live embedding again (after a threshold or the model changed)",
    )
    duplicates.set_defaults(run=_duplicates)

    delete = areas.add_parser("delete", help="remove images (by id) from every store")
    delete.add_argument("image_ids", nargs="+")
    delete.add_argument("--reason", default="")
    delete.set_defaults(run=_delete)
