"""Ingest image files: bytes to the object store, an ImageUploaded event to Kafka.

The image id is the sha256 of the bytes, so the same bytes twice are one image. The object key
derives from the id. The event is keyed by the id (one partition per image, in order). After
Kafka acknowledges an event the image gets a `pending` row in the metadata store; a re-run
skips every image that has a row, so an interrupted ingest resumes where it stopped, and a
crash between the object and the event only means the event is sent again (the sinks are
idempotent).

Files named on the command line are sent whatever they hold: the embed stage rejects what is
not an image into the dead-letter topic with the reason, where it can be seen. In a folder,
files of other types (TIFF, ICO, text) are not sent but listed as rejected in the summary with
the reason, never passed over in silence; hidden files are left alone. The producer also
rejects what it cannot send: unreadable files and files over the size limit.
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbir.domain.bucket_events import PRODUCER_MARK
from cbir.domain.errors import ServiceUnavailable
from cbir.domain.images import FORMAT_NAMES, IMAGE_SUFFIXES, image_id_of, object_key_of, sniff
from cbir.domain.retry import RetryPolicy
from cbir.ports import EventWriter, MetadataStore, ObjectStore
from schemas.events import (
    EventSerializer,
    ImageDeleted,
    ImageMetadata,
    ImageUploaded,
    described_by,
    now,
)

log = logging.getLogger("cbir.ingest")

MAX_BYTES = 50 * 1024 * 1024
FLUSH_EVERY = 256
PARALLEL_PUTS = 8


@dataclass(frozen=True)
class IngestItem:
    path: Path
    tags: tuple[str, ...] = ()
    refused: str = ""  # why it is not sent (a file of a type this service does not read)


@dataclass
class IngestSummary:
    new: int = 0
    present: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)


def collect(
    arguments: Sequence[str], tags: Sequence[str] = (), folder_tags: bool = True
) -> list[IngestItem]:
    """Files named, image files below folders (recursively), and matches of globs.

    With `folder_tags`, the folders between a given folder and a file become its tags
    (flowers17/5/image_0401.jpg ingested as flowers17 is tagged "5").
    """
    items: dict[Path, IngestItem] = {}
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = [
                (p, p.parent.relative_to(path).parts)
                for p in sorted(path.rglob("*"))
                if p.is_file() and not p.name.startswith(".")
            ]
        elif path.is_file():
            found = [(path, ())]
        else:
            found = [
                (Path(p), ())
                for p in sorted(glob.glob(argument, recursive=True))
                if Path(p).is_file()
            ]
            if not found:
                raise FileNotFoundError(f"{argument}: no such file, folder or matching glob")
        for file, parts in found:
            extra = tuple(parts) if folder_tags else ()
            # a file named (or matched by a glob) is sent as asked: the embed stage judges its
            # bytes; one found in a folder walk is judged by its suffix first
            walked = path.is_dir()
            refused = (
                ""
                if not walked or file.suffix.lower() in IMAGE_SUFFIXES
                else (
                    f"{file.suffix or 'a file without a suffix'} is not an image type this service "
                    f"reads: convert it to {FORMAT_NAMES}"
                )
            )
            items.setdefault(
                file.resolve(), IngestItem(file, tuple(dict.fromkeys([*tags, *extra])), refused)
            )
    return list(items.values())


@dataclass(frozen=True)
class IngestConfig:
    """What sending images needs of the settings (made by the wiring)."""

    bucket: str  # where the bytes go
    images_topic: str  # where the events go
    kafka_address: str  # named in an error when Kafka does not acknowledge


class Ingestor:
    """Sends images into the pipeline: bytes to the object store, events to the log, then a
    `pending` row per image the log acknowledged."""

    def __init__(
        self,
        config: IngestConfig,
        objects: ObjectStore,
        metadata: MetadataStore,
        writer: EventWriter,
        policy: RetryPolicy,
        source: str = "cli",
    ) -> None:
        """`policy` says how long a service that went away is waited for; past it the
        ServiceUnavailable is raised, and the same command resumes where it stopped."""
        self.config = config
        self.objects = objects
        self.metadata = metadata
        self.writer = writer
        self.policy = policy
        self.source = source
        self.serializer = EventSerializer()

    def ingest(
        self, items: Iterable[IngestItem], progress: Callable[[], Any] = lambda: None
    ) -> IngestSummary:
        summary = IngestSummary()
        # object puts are network round trips: several at a time (the pool lives for one run)
        with ThreadPoolExecutor(PARALLEL_PUTS) as pool:
            batch: list[tuple[IngestItem, bytes]] = []
            for item in items:
                if item.refused:  # said in the summary, never silently passed over
                    summary.rejected.append((str(item.path), item.refused))
                    progress()
                    continue
                try:
                    data = item.path.read_bytes()
                except OSError as exc:
                    summary.rejected.append((str(item.path), f"unreadable: {exc.strerror}"))
                    progress()
                    continue
                if len(data) > MAX_BYTES:
                    summary.rejected.append(
                        (str(item.path), f"{len(data)} bytes is over the {MAX_BYTES}-byte limit")
                    )
                    progress()
                    continue
                batch.append((item, data))
                if len(batch) >= FLUSH_EVERY:
                    self._send(pool, batch, summary, progress)
                    batch = []
            self._send(pool, batch, summary, progress)
        return summary

    def ingest_bytes(self, entries: Sequence[tuple[IngestItem, bytes]]) -> IngestSummary:
        """Send images already in memory (uploads to the API): the same path as files."""
        summary = IngestSummary()
        with ThreadPoolExecutor(PARALLEL_PUTS) as pool:
            self._send(pool, list(entries), summary, lambda: None)
        return summary

    def _send(
        self,
        pool: ThreadPoolExecutor,
        batch: list[tuple[IngestItem, bytes]],
        summary: IngestSummary,
        progress: Callable[[], Any],
    ) -> None:
        if not batch:
            return
        ids = [image_id_of(data) for _, data in batch]
        known = self.policy.run(
            lambda: self.metadata.existing_image_ids(sorted(set(ids))), "look up known images"
        )
        fresh: dict[str, tuple[IngestItem, bytes]] = {}
        for (item, data), image_id in zip(batch, ids, strict=True):
            if image_id in known or image_id in fresh:
                summary.present += 1
                progress()
            else:
                fresh[image_id] = (item, data)
        stored = list(pool.map(self._store, fresh.items()))  # in order: events keep it
        topic = self.config.images_topic
        messages: list[tuple[str, bytes | None, bytes | None]] = [
            (topic, i.image_id.encode(), self.serializer.dumps(ImageUploaded(i))) for i in stored
        ]
        errors = self.policy.run(lambda: self.writer.send(messages), "send events to Kafka")
        delivered = []
        for image, error in zip(stored, errors, strict=True):
            progress()
            if error is None:
                delivered.append(image)
            else:
                summary.rejected.append((image.file_name, error))
        self.policy.run(lambda: self.metadata.insert_pending(delivered), "record pending rows")
        summary.new += len(delivered)

    def _store(self, entry: tuple[str, tuple[IngestItem, bytes]]) -> ImageMetadata:
        """Put one image's bytes into the bucket; its metadata."""
        image_id, (item, data) = entry
        header = sniff(data)
        key = object_key_of(image_id)
        bucket = self.config.bucket
        # content-addressed: putting the same key again writes the same bytes. The mark tells
        # the bucket-notification bridge that this object's event is sent by us.
        self.policy.run(
            lambda: self.objects.put(
                bucket, key, data, header.content_type, {PRODUCER_MARK: image_id}
            ),
            f"put {key} into the object store",
        )
        return ImageMetadata(
            image_id=image_id,
            bucket=bucket,
            object_key=key,
            file_name=item.path.name,
            source=self.source,
            size_bytes=len(data),
            **described_by(header),
            uploaded_at=now(),
            tags=item.tags,
        )


def summary_lines(summary: IngestSummary) -> list[str]:
    lines = [
        f"new: {summary.new}",
        f"already present: {summary.present}",
        f"rejected: {len(summary.rejected)}",
    ]
    lines += [f"  {name}: {reason}" for name, reason in summary.rejected]
    return lines


def summary_json(summary: IngestSummary) -> str:
    return json.dumps(
        {
            "new": summary.new,
            "present": summary.present,
            "rejected": [{"file": f, "reason": r} for f, r in summary.rejected],
        }
    )


def delete_images(
    config: IngestConfig,
    writer: EventWriter,
    image_ids: Sequence[str],
    source: str = "cli",
    reason: str = "",
) -> None:
    """An ImageDeleted event, then a tombstone, per image: the processors remove it from
    Milvus, MySQL and the object store, and compaction later forgets it in the log."""
    serializer = EventSerializer()
    topic = config.images_topic
    messages: list[tuple[str, bytes | None, bytes | None]] = []
    for image_id in image_ids:
        event = ImageDeleted(image_id=image_id, source=source, reason=reason)
        messages.append((topic, image_id.encode(), serializer.dumps(event)))
        messages.append((topic, image_id.encode(), None))
    failed = [error for error in writer.send(messages, timeout_s=30) if error is not None]
    if failed:
        raise ServiceUnavailable(
            "Kafka",
            config.kafka_address,
            "CBIR_KAFKA__BOOTSTRAP_SERVERS",
            f"{len(failed)} delete events not acknowledged ({failed[0]}); run it again",
        )
