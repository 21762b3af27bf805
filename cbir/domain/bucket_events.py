"""MinIO bucket notifications (S3 event records, JSON) as the pipeline's own terms. Pure logic.

Objects our producer writes carry the user metadata `cbir-image-id`; their events are ignored,
since the producer has sent the image's event itself. Any other object created in the bucket
(mc, boto3, a camera uploading over S3) enters the pipeline; one removed leaves it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote_plus

PRODUCER_MARK = "cbir-image-id"


@dataclass(frozen=True)
class ObjectEvent:
    created: bool  # False: removed
    bucket: str
    key: str
    size: int
    content_type: str
    time: datetime
    ours: bool  # written by our producer


def parse_object_events(value: bytes) -> list[ObjectEvent]:
    """The object events in one notification; raises ValueError for anything else."""
    document = json.loads(value)
    events = []
    for record in document.get("Records", []):
        name = str(record.get("eventName", ""))
        if not name.startswith(("s3:ObjectCreated:", "s3:ObjectRemoved:")):
            continue
        s3 = record["s3"]
        obj = s3["object"]
        metadata = {k.lower(): v for k, v in (obj.get("userMetadata") or {}).items()}
        moment = str(record.get("eventTime") or "")
        events.append(
            ObjectEvent(
                created=name.startswith("s3:ObjectCreated:"),
                bucket=str(s3["bucket"]["name"]),
                key=unquote_plus(str(obj["key"])),
                size=int(obj.get("size") or 0),
                content_type=str(obj.get("contentType") or ""),
                time=(
                    datetime.fromisoformat(moment.replace("Z", "+00:00"))
                    if moment
                    else datetime.now(UTC)
                ),
                ours=any(k.endswith(PRODUCER_MARK) for k in metadata),
            )
        )
    return events
