"""Ingest image files: bytes to the object store, an ImageUploaded event to Kafka.

The image id is the sha256 of the bytes, so the same bytes twice are one image. The object key
derives from the id. The event is keyed by the id (one partition per image, in order). After
Kafka acknowledges an event the image gets a `pending` row in the metadata store; a re-run
skips every image that has a row, so an interrupted ingest resumes where it stopped, and a
crash between the object and the event only means the event is sent again (the sinks are
idempotent).

Files that are not images are still sent: the embed stage rejects them into the dead-letter
topic with the reason, where they can be seen. The producer itself rejects only what it cannot
send: unreadable files and files over the size limit.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from PIL import Image, UnidentifiedImageError

from cbir.settings import Settings
from processors.object_events import PRODUCER_MARK
from schemas.events import EventSerializer, ImageDeleted, ImageMetadata, ImageUploaded, now
from service_adapters import metadata_store, object_store

log = logging.getLogger("cbir.ingest")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
MAX_BYTES = 50 * 1024 * 1024
FLUSH_EVERY = 256
PARALLEL_PUTS = 8
MIME_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
}


@dataclass(frozen=True)
class IngestItem:
    path: Path
    tags: tuple[str, ...] = ()


@dataclass
class IngestSummary:
    new: int = 0
    present: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)


def image_id_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_key_of(image_id: str) -> str:
    return f"{image_id[:2]}/{image_id}"


def image_header(data: bytes) -> tuple[str, int, int]:
    """PIL's format name, width and height, from the header alone (no pixel is decoded).
    Raises PIL's errors: UnidentifiedImageError, DecompressionBombError, OSError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            return image.format or "", *image.size


def sniff(data: bytes) -> tuple[str, int, int]:
    """Content type, width and height from the header alone; unknown bytes give zeros."""
    try:
        kind, width, height = image_header(data)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return "application/octet-stream", 0, 0
    return MIME_TYPES.get(kind, "application/octet-stream"), width, height


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
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
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
            items.setdefault(
                file.resolve(), IngestItem(file, tuple(dict.fromkeys([*tags, *extra])))
            )
    return list(items.values())


class Ingestor:
    """Sends files into the pipeline."""

    def __init__(self, settings: Settings, source: str = "cli") -> None:
        self.settings = settings
        self.source = source
        self.serializer = EventSerializer()
        self.minio = object_store.client(settings.minio)
        self.producer = Producer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "enable.idempotence": True,  # no duplicates from the producer's own retries
                "acks": "all",
                "linger.ms": 20,
                "compression.type": "lz4",
                "logger": logging.getLogger("cbir.kafka.producer"),
            }
        )
        self._delivered: list[ImageMetadata] = []
        self._failed: list[tuple[str, str]] = []

    def ingest(
        self, items: Iterable[IngestItem], progress: Callable[[], Any] = lambda: None
    ) -> IngestSummary:
        summary = IngestSummary()
        # object puts are network round trips: several at a time (the pool lives for one run)
        with (
            metadata_store.connect(self.settings.mysql) as conn,
            ThreadPoolExecutor(PARALLEL_PUTS) as pool,
        ):
            batch: list[tuple[IngestItem, bytes]] = []
            for item in items:
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
                    self._send(conn, pool, batch, summary, progress)
                    batch = []
            self._send(conn, pool, batch, summary, progress)
        summary.rejected.extend(self._failed)
        return summary

    def ingest_bytes(self, entries: Sequence[tuple[IngestItem, bytes]]) -> IngestSummary:
        """Send images already in memory (uploads to the API): the same path as files."""
        summary = IngestSummary()
        with (
            metadata_store.connect(self.settings.mysql) as conn,
            ThreadPoolExecutor(PARALLEL_PUTS) as pool,
        ):
            self._send(conn, pool, list(entries), summary, lambda: None)
        summary.rejected.extend(self._failed)
        self._failed = []
        return summary

    def close(self) -> None:
        self.producer.flush(30)

    def _send(
        self,
        conn: Any,
        pool: ThreadPoolExecutor,
        batch: list[tuple[IngestItem, bytes]],
        summary: IngestSummary,
        progress: Callable[[], Any],
    ) -> None:
        if not batch:
            return
        ids = [image_id_of(data) for _, data in batch]
        known = metadata_store.existing_image_ids(conn, set(ids))
        fresh: dict[str, tuple[IngestItem, bytes]] = {}
        for (item, data), image_id in zip(batch, ids, strict=True):
            if image_id in known or image_id in fresh:
                summary.present += 1
                progress()
            else:
                fresh[image_id] = (item, data)
        stored = pool.map(self._store, fresh.items())  # in order: events keep it
        for image in stored:
            image_id = image.image_id
            self.producer.produce(
                self.settings.kafka.images_topic,
                key=image_id.encode(),
                value=self.serializer.dumps(ImageUploaded(image)),
                on_delivery=partial(self._on_delivery, image),
            )
            self.producer.poll(0)
            progress()
        remaining = self.producer.flush(60)
        if remaining:
            self._failed.append(("(kafka)", f"{remaining} events not acknowledged in 60 s"))
        metadata_store.insert_pending(conn, self._delivered)
        summary.new += len(self._delivered)
        self._delivered = []

    def _store(self, entry: tuple[str, tuple[IngestItem, bytes]]) -> ImageMetadata:
        """Put one image's bytes into the bucket; its metadata."""
        image_id, (item, data) = entry
        content_type, width, height = sniff(data)
        key = object_key_of(image_id)
        bucket = self.settings.minio.bucket
        # content-addressed: putting the same key again writes the same bytes. The mark tells
        # the bucket-notification bridge that this object's event is sent by us.
        self.minio.put_object(
            bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata={PRODUCER_MARK: image_id},
        )
        return ImageMetadata(
            image_id=image_id,
            bucket=bucket,
            object_key=key,
            file_name=item.path.name,
            source=self.source,
            content_type=content_type,
            size_bytes=len(data),
            width=width,
            height=height,
            uploaded_at=now(),
            tags=item.tags,
        )

    def _on_delivery(
        self, image: ImageMetadata, error: KafkaError | None, message: Message
    ) -> None:
        if error is not None:
            self._failed.append((image.file_name, f"Kafka refused the event: {error.str()}"))
        else:
            self._delivered.append(image)


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
    settings: Settings, image_ids: Sequence[str], source: str = "cli", reason: str = ""
) -> None:
    """An ImageDeleted event, then a tombstone, per image: the processors remove it from
    Milvus, MySQL and the object store, and compaction later forgets it in the log."""
    serializer = EventSerializer()
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "logger": logging.getLogger("cbir.kafka.producer"),
        }
    )
    topic = settings.kafka.images_topic
    for image_id in image_ids:
        event = ImageDeleted(image_id=image_id, source=source, reason=reason)
        producer.produce(topic, key=image_id.encode(), value=serializer.dumps(event))
        producer.produce(topic, key=image_id.encode(), value=None)
    if producer.flush(30):
        raise RuntimeError("Kafka did not acknowledge the deletes within 30 s; run it again")
