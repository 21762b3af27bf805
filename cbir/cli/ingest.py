"""`cbir ingest`: send image files, folders and globs into the pipeline."""

from __future__ import annotations

import argparse
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from cbir.domain.errors import ServiceUnavailable
from cbir.output import console, errors
from cbir.settings import get_settings
from cbir.wiring import Adapters, command_policy
from producers.ingest import collect, summary_json, summary_lines


def _ingest(args: argparse.Namespace) -> int:
    try:
        items = collect(args.paths, tags=args.tag, folder_tags=not args.no_folder_tags)
    except FileNotFoundError as exc:
        console.print(f"[red]error[/]: {exc}")
        return 2
    columns = (
        TextColumn("ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} images/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
        task = progress.add_task("ingest", total=len(items), rate="-")

        def advance() -> None:
            progress.advance(task)
            speed = progress.tasks[0].speed
            progress.update(task, rate=f"{speed:.0f}" if speed else "-")

        settings = get_settings()
        with Adapters(settings, command_policy(settings)) as adapters:
            try:
                summary = adapters.ingestor(args.source).ingest(items, progress=advance)
            except ServiceUnavailable as exc:
                progress.stop()
                errors.print(
                    f"[red]error[/]: {exc}\n  the images sent so far are kept: run the same "
                    "command again when it is back, and it resumes where it stopped "
                    f"(it waited {settings.ingest.service_wait_s:.0f} s: "
                    "CBIR_INGEST__SERVICE_WAIT_S)",
                    highlight=False,
                )
                return 2
    if args.json:
        print(summary_json(summary))
    else:
        for line in summary_lines(summary):
            console.print(line)
    return 0 if not summary.rejected else 1


def register(areas: Any) -> None:
    ingest = areas.add_parser(
        "ingest",
        help="send image files, folders (recursive) and globs into the pipeline",
        description="Bytes go to the object store, an event to Kafka. Re-running skips what "
        "is already in, so an interrupted ingest resumes.",
    )
    ingest.add_argument(
        "paths", nargs="+", help="files, folders, or globs such as 'photos/**/*.jpg'"
    )
    ingest.add_argument("--tag", action="append", default=[], help="tag every image (repeatable)")
    ingest.add_argument(
        "--no-folder-tags",
        action="store_true",
        help="do not tag images with the folders they sit in",
    )
    ingest.add_argument("--source", default="cli", help="recorded with each image")
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON")
    ingest.set_defaults(run=_ingest)
