"""object-events topic (MinIO bucket notifications) -> images topic.

An object created by any S3 client becomes an ImageUploaded event (its id is the sha256 of
its bytes, its key stays the client's); one removed becomes ImageDeleted plus a tombstone for
every image stored under that key. Objects of our own producer are skipped.
"""

from __future__ import annotations

from cbir.domain.bucket_events import ObjectEvent, parse_object_events
from cbir.domain.errors import Permanent
from cbir.domain.images import MAX_OBJECT_KEY_BYTES, image_id_of, sniff
from cbir.domain.log import Forward, LogMessage, Outcome
from cbir.domain.retry import RetryPolicy
from cbir.ports import MetadataStore, ObjectStore
from processors.stages.base import Stage, fetch
from schemas.events import ImageDeleted, ImageMetadata, ImageUploaded, described_by


class ObjectEventsStage(Stage):
    name = "bridge"

    def __init__(
        self,
        bucket: str,
        objects: ObjectStore,
        metadata: MetadataStore,
        policy: RetryPolicy,
    ) -> None:
        super().__init__(metadata, policy)
        self.bucket = bucket  # the images' bucket: its notifications are bridged
        self.objects = objects

    def _process(self, messages: list[LogMessage]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for message in messages:
            try:
                events = parse_object_events(message.value or b"")
            except (ValueError, KeyError, TypeError) as exc:
                reason = f"not a bucket notification: {exc}"
                outcomes.append(self.dead_letter(message, "decode", reason))
                continue
            for event in events:
                if event.ours or event.bucket != self.bucket:
                    continue
                if event.created:
                    outcomes.extend(self._created(message, event))
                else:
                    outcomes.extend(self._removed(event))
        return outcomes

    def _created(self, message: LogMessage, event: ObjectEvent) -> list[Outcome]:
        if len(event.key.encode()) > MAX_OBJECT_KEY_BYTES:
            reason = f"object key over {MAX_OBJECT_KEY_BYTES} bytes: rename the object"
            return [self.dead_letter(message, "bridge", reason)]
        data = fetch(self.policy, self.objects, event.bucket, event.key)
        if isinstance(data, str):
            return []  # removed again already; its removal event follows
        header = sniff(data)
        image = ImageMetadata(
            image_id=image_id_of(data),
            bucket=event.bucket,
            object_key=event.key,
            file_name=event.key.rsplit("/", 1)[-1],
            source="s3",
            size_bytes=len(data),
            **described_by(header),
            uploaded_at=event.time,
        )
        try:
            self.policy.run(
                lambda: self.metadata.insert_pending([image]), "record the image as pending"
            )
        except Permanent as exc:
            return [self.dead_letter(message, "bridge", exc, image.image_id, mark_failed=False)]
        key = image.image_id.encode()
        return [Forward(key, self.serializer.dumps(ImageUploaded(image)))]

    def _removed(self, event: ObjectEvent) -> list[Outcome]:
        image_ids = self.policy.run(
            lambda: self.metadata.image_ids_for_object(event.key),
            f"look up the images of {event.key}",
        )
        outcomes: list[Outcome] = []
        for image_id in image_ids:
            deleted = ImageDeleted(image_id=image_id, source="s3", reason="object removed")
            outcomes.append(Forward(image_id.encode(), self.serializer.dumps(deleted)))
            outcomes.append(Forward(image_id.encode(), None))
        return outcomes
