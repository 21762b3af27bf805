"""Thumbnails and previews: small WebP renditions of each image, made once and kept in a bucket
of their own under `<kind>/<image id>.webp`, removed with the image. The thumbnail, which
every grid of results shows, is made at ingest by the thumbnails consumer group; the preview,
which a page shows of one image at a time, on its first request (then kept): making both at
ingest cost 3.3 x the thumbnail alone on flowers17's photographs, for a rendition most images
never need. Either is made on request when missing (an image indexed a moment before the
group reached it).

A page of twelve results loads twelve thumbnails (a few KB each) instead of twelve originals
(megabytes each for phone photos); the preview is what the page shows of a query or a
result opened large; the original is fetched only when asked for.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from cbir.models.runtime import ImageRejected, Limits, decode_image
from cbir.ports import ObjectStore

log = logging.getLogger("cbir.thumbnails")
Kind = Literal["thumbnail", "preview"]
KINDS: tuple[Kind, ...] = ("thumbnail", "preview")
CONTENT_TYPE = "image/webp"


# WebP's effort, 0 (fastest) to 6. The default 4 costs 2.5 x the CPU of 2 for 8 % fewer bytes
# (12 MP phone photographs' previews); 0 saves another 1.3 CPU-ms a thumbnail on flowers17
# (5.6 against 6.9, decode and resize included) for 25 % more bytes: a page of 12 phone
# photographs' thumbnails is still far under 1 % of the originals
WEBP_METHOD = 0


@dataclass(frozen=True)
class RenditionSizes:
    thumbnail_side: int = 320
    preview_side: int = 960
    quality: int = 75

    def side(self, kind: Kind) -> int:
        return self.thumbnail_side if kind == "thumbnail" else self.preview_side


DEFAULT_LIMITS = Limits()


def make_renditions(
    data: bytes,
    sizes: RenditionSizes,
    kinds: tuple[Kind, ...] = KINDS,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[Kind, bytes]:
    """Renditions of encoded image bytes: upright (EXIF orientation), RGB, the longer side
    brought down to each size (never up), WebP. Raises ImageRejected for what is no image."""
    # a JPEG is decoded at the smallest DCT scale still covering the largest size asked (a
    # 12 MP photo at a quarter, 1008 x 756, for a 960 px preview; at an eighth for a thumbnail)
    wanted = sorted(kinds, key=sizes.side, reverse=True)
    image = decode_image(data, sizes.side(wanted[0]), limits, longer=True)
    made: dict[Kind, bytes] = {}
    for kind in wanted:  # the thumbnail from the preview: less to resample
        side = sizes.side(kind)
        if max(image.size) > side:
            image = image.copy()
            # bilinear after thumbnail()'s integer reduction (reducing_gap 2): 1 CPU-ms less
            # an image than bicubic on flowers17, and no visible difference at these sizes
            image.thumbnail((side, side), Image.Resampling.BILINEAR)
        out = io.BytesIO()
        image.save(out, format="WEBP", quality=sizes.quality, method=WEBP_METHOD)
        made[kind] = out.getvalue()
    return made


def rendition_key(image_id: str, kind: Kind) -> str:
    return f"{kind}/{image_id}.webp"


class ThumbnailStore:
    """The renditions in their bucket; made from the original (in the images bucket) when
    missing."""

    def __init__(
        self, objects: ObjectStore, bucket: str, images_bucket: str, sizes: RenditionSizes
    ) -> None:
        self.objects = objects
        self.bucket = bucket
        self.images_bucket = images_bucket
        self.sizes = sizes

    def has(self, image_id: str, kind: Kind = "thumbnail") -> bool:
        return self.objects.exists(self.bucket, rendition_key(image_id, kind))

    def make_and_put(
        self, image_id: str, data: bytes, kinds: tuple[Kind, ...] = ("thumbnail",)
    ) -> dict[Kind, bytes] | None:
        """The renditions made and stored; None (nothing stored) for bytes that are no
        image: the page then shows the original."""
        try:
            made = make_renditions(data, self.sizes, kinds)
        except ImageRejected as exc:
            log.info("no thumbnails", extra={"image_id": image_id, "reason": str(exc)})
            return None
        for kind, rendition in made.items():
            self.objects.put(
                self.bucket,
                rendition_key(image_id, kind),
                rendition,
                CONTENT_TYPE,
                {"image-id": image_id},
            )
        return made

    def get(self, image_id: str, kind: Kind, object_key: str | None = None) -> bytes | None:
        """The rendition; made now from the original when it is missing (a preview's first
        request, or an image indexed a moment before the thumbnails group reached it); None
        when the original is gone or is no image."""
        stored = self.stored(image_id, kind)
        if stored is not None or object_key is None:
            return stored
        return self.made_from_original(image_id, kind, object_key)

    def stored(self, image_id: str, kind: Kind) -> bytes | None:
        """The rendition as stored, or None: one read, nothing made."""
        return self.objects.get(self.bucket, rendition_key(image_id, kind))

    def made_from_original(self, image_id: str, kind: Kind, object_key: str) -> bytes | None:
        """The rendition made now from the original and stored (the caller found none); None
        when the original is gone or is no image."""
        original = self.objects.get(self.images_bucket, object_key)
        if original is None:
            return None
        made = self.make_and_put(image_id, original, (kind,))
        return made[kind] if made is not None else None

    def remove(self, image_id: str) -> None:
        for kind in KINDS:
            self.objects.remove(self.bucket, rendition_key(image_id, kind))
