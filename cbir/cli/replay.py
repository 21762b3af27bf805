"""`cbir reindex | re-embed | generations`: rebuild the indexes from the log, without downtime."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from cbir.output import console
from cbir.settings import INDEX_TYPES, get_settings

log = logging.getLogger("cbir.replay")
LOG_EVERY_S = 5.0


def _param(text: str) -> tuple[str, Any]:
    """KEY=VALUE of an index parameter; the value as JSON when it parses (numbers)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: write an index parameter as KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


class ProgressReport:
    """The replay's progress on the terminal (events, lag, rate, ETA) and in the log."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("replaying", total=None, detail="")
        self.last_log = 0.0

    def __call__(self, status: Any) -> None:
        eta = "?" if status.eta_s is None else f"{status.eta_s:.0f} s"
        if status.phase == "replaying":
            detail = f"lag {status.lag}  {status.rate:.0f} events/s  ETA {eta}"
            total = status.replayed + status.lag
        elif status.phase == "grace":
            detail = (
                f"dropping {status.detail} in {eta} (Ctrl-C keeps it; `cbir generations prune`)"
            )
            total = status.replayed
        else:
            detail = status.detail
            total = status.replayed
        self.progress.update(
            self.task,
            description=f"{status.phase} {status.generation}",
            completed=status.replayed,
            total=max(total, 1),
            detail=detail,
        )
        if status.phase == "gated":
            self.progress.console.print(f"gate: {status.detail}")
        now = time.monotonic()
        if status.phase != "replaying" or now - self.last_log > LOG_EVERY_S:
            self.last_log = now
            log.info(
                status.phase,
                extra={
                    "generation": status.generation,
                    "replayed": status.replayed,
                    "lag": status.lag,
                    "events_per_s": round(status.rate, 1),
                    "eta_s": None if status.eta_s is None else round(status.eta_s, 1),
                    "detail": status.detail,
                },
            )


def _options(args: argparse.Namespace) -> Any:
    from cbir.domain.errors import ReplayError
    from cbir.replay.gate import CollectionCheck, Probe
    from cbir.replay.rebuild import ReplayOptions

    settings = get_settings()
    replay = settings.replay
    if args.no_gate and args.probe:
        raise ReplayError("--no-gate switches without any check: leave out --probe")
    probe = Probe.from_folder(args.probe, args.tolerance, args.probe_k) if args.probe else None
    judged: set[str] = {label for label, _ in probe.images} if probe else set()
    if args.area == "re-embed":
        from cbir.models.export import trained_on

        trained = trained_on(settings.triton.model_repository, args.model)
        if trained is not None:
            if probe is not None:
                probe.refuse_trained(args.model, trained)
            judged |= set(trained.classes)
    sample = replay.collection_sample if args.collection_sample is None else args.collection_sample
    tolerance = (
        replay.collection_tolerance
        if args.collection_tolerance is None
        else args.collection_tolerance
    )
    collection = (
        CollectionCheck(sample, replay.collection_k, tolerance, frozenset(judged))
        if sample and not args.no_gate
        else None
    )
    return ReplayOptions(
        probe=probe,
        collection=collection,
        index_type=args.index_type,
        index_params=dict(args.param) if args.param else None,
        grace_s=replay.grace_s if args.grace is None else args.grace,
        keep_old=args.keep_old,
        restart=args.restart,
        batch_size=args.batch_size or replay.batch_size,
        max_rate=replay.max_rate if args.max_rate is None else args.max_rate,
    )


def _run_replay(args: argparse.Namespace) -> int:
    from cbir.wiring import Adapters

    settings = get_settings()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:.0f} events  {task.fields[detail]}"),
    )
    with (
        Progress(*columns, console=console, transient=False) as progress,
        Adapters(settings) as adapters,
    ):
        rebuilder = adapters.rebuilder(ProgressReport(progress))
        options = _options(args)
        try:
            if args.area == "re-embed":
                generation = rebuilder.re_embed(args.model, options)
            else:
                generation = rebuilder.reindex(options, args.topic)
        except KeyboardInterrupt:
            console.print(
                "interrupted: the new generation stays `building` (never live) and the "
                "processors keep it current; run the same command again to continue it"
            )
            return 130
    console.print(
        f"live: {generation.name} ({generation.model_id}, {generation.index_type} "
        f"{json.dumps(generation.index_params)})"
    )
    return 0


def _generations(args: argparse.Namespace) -> int:
    from cbir.wiring import Adapters

    with Adapters(get_settings()) as adapters:
        if args.action == "prune":
            dropped = adapters.rebuilder(lambda _status: None).prune()
            console.print(f"dropped: {', '.join(dropped) or 'nothing (no grace period is over)'}")
            return 0
        rows = adapters.registry.all()
    from cbir.domain.gate import Verdict

    table = Table("generation", "state", "model", "topic", "index", "live since", "gate", box=None)
    for g in rows:
        e = g.evaluation
        table.add_row(
            g.name,
            g.state,
            g.model_id,
            g.embeddings_topic,
            f"{g.index_type} {json.dumps(g.index_params)}",
            g.live_at.isoformat(timespec="seconds") if g.live_at else "",
            Verdict.from_json(e).summary() if e else "",
        )
    console.print(table)
    return 0


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index-type",
        choices=INDEX_TYPES,
        help="index type of the new generation (default: the live one's)",
    )
    parser.add_argument(
        "--param",
        type=_param,
        action="append",
        metavar="KEY=VALUE",
        help="an index build parameter, e.g. --param M=32 --param efConstruction=100 "
        "(default: the type's defaults)",
    )
    parser.add_argument(
        "--grace", type=float, help="seconds the old generation is kept (CBIR_REPLAY__GRACE_S)"
    )
    parser.add_argument("--keep-old", action="store_true", help="never drop the old generation")
    parser.add_argument(
        "--restart", action="store_true", help="abandon a half-built generation and start anew"
    )
    parser.add_argument(
        "--probe",
        type=Path,
        metavar="DIR",
        help="gate the switch: a folder with one subfolder of images per class (named as the "
        "indexed images' tags); the new generation goes live only if its mAP@k on these "
        "probes is at most --tolerance below the live one's",
    )
    parser.add_argument("--tolerance", type=float, default=0.02, help="of the --probe gate")
    parser.add_argument("--probe-k", type=int, default=10, help="k of the --probe gate's mAP@k")
    parser.add_argument(
        "--collection-sample",
        type=int,
        metavar="N",
        help="the label-free collection check: N indexed images outside the probe's and the "
        "model's trained classes, each searched in both generations, their results judged "
        "same scene or not by local-feature geometry; the switch is refused when the new "
        "generation's verified mAP@k falls below the live one's by more than "
        "--collection-tolerance (default CBIR_REPLAY__COLLECTION_SAMPLE; 0: no such check)",
    )
    parser.add_argument(
        "--collection-tolerance",
        type=float,
        help="of the collection check (default CBIR_REPLAY__COLLECTION_TOLERANCE)",
    )
    parser.add_argument(
        "--no-gate", action="store_true", help="switch without any check (no probe, no collection)"
    )
    parser.add_argument("--batch-size", type=int, help="events per write (CBIR_REPLAY__BATCH_SIZE)")
    parser.add_argument(
        "--max-rate", type=float, help="events per second at most (CBIR_REPLAY__MAX_RATE)"
    )
    parser.set_defaults(run=_run_replay)


def register(areas: Any) -> None:
    reindex = areas.add_parser(
        "reindex",
        help="rebuild the vector index from the embeddings topic (new index parameters, or "
        "Milvus and MySQL lost), switching the alias when it has caught up",
    )
    _replay_arguments(reindex)
    reindex.add_argument(
        "--topic",
        help="with no generation registered (rebuild from nothing): the embeddings topic to "
        "replay (default: the only one in Kafka, CBIR_KAFKA__EMBEDDINGS_TOPIC or a re-embed's)",
    )

    re_embed = areas.add_parser(
        "re-embed",
        help="replay the images topic through another Triton model into a new embeddings topic "
        "and collection, switching the alias when it has caught up",
    )
    re_embed.add_argument("model", help="the Triton model (exported with `cbir model export`)")
    _replay_arguments(re_embed)

    listing = areas.add_parser("generations", help="list the index generations, or prune old ones")
    listing.add_argument("action", nargs="?", choices=["list", "prune"], default="list")
    listing.set_defaults(run=_generations)
