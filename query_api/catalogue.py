"""The stored images themselves: one image's metadata (with the tags its neighbours vote
when it has none), its bytes, and the newest images page by page."""

from __future__ import annotations

from cbir.domain.errors import CbirError
from cbir.domain.rows import ANY_TIME, ImageRow, TakenWindow
from cbir.thumbnails import Kind
from query_api.context import QueryContext, unknown_image
from query_api.errors import ApiError
from query_api.models import ImageDetail, ImageSummary, PredictedLabel
from query_api.search import Search, SearchRequest


class Catalogue:
    def __init__(self, context: QueryContext, search: Search) -> None:
        self.context = context
        self.search = search

    def row(self, image_id: str) -> ImageRow | None:
        """The image's metadata row as stored."""
        return self.context.row(image_id)

    def image(self, image_id: str) -> ImageDetail:
        """Its metadata; for an indexed image without tags, the tags its neighbours vote."""
        row = self.context.row(image_id)
        if row is None:
            raise unknown_image(image_id)
        predicted = None
        if not row.tags and row.status == "indexed":
            try:
                outcome = self.search.similar(
                    image_id, SearchRequest(self.context.config.default_k)
                )
                predicted = [PredictedLabel(**vars(p)) for p in outcome.predicted()]
            except CbirError:  # the metadata still answers while the index cannot
                predicted = None
        return ImageDetail(**ImageSummary.of(row).model_dump(), predicted_tags=predicted)

    def content(self, image_id: str) -> tuple[bytes, str]:
        """The image's bytes and media type, from the object store."""
        row = self.context.row(image_id)
        if row is None:
            raise unknown_image(image_id)
        objects, bucket = self.context.objects, self.context.config.bucket
        data = self.context.call("MinIO", "get", lambda: objects.get(bucket, row.object_key))
        if data is None:
            raise ApiError(404, "no_bytes", f"the bytes of {image_id} are gone from the store")
        return data, row.content_type or "application/octet-stream"

    def rendition(self, image_id: str, kind: Kind) -> bytes:
        """Its thumbnail or preview (WebP), made from the original if it has none yet. A
        stored one is answered with one read; the row is looked up only to make a missing one
        (a delete removes the renditions before the row)."""
        store = self.context.thumbnails
        if store is None:
            raise ApiError(404, "no_thumbnails", "this API serves no thumbnails: use its url")
        data = self.context.call("MinIO", "get", lambda: store.stored(image_id, kind))
        if data is not None:
            return data
        row = self.context.row(image_id)
        if row is None:
            raise unknown_image(image_id)
        data = self.context.call(
            "MinIO", "get", lambda: store.made_from_original(image_id, kind, row.object_key)
        )
        if data is None:
            raise ApiError(
                404,
                "no_rendition",
                f"{image_id} has no {kind}: its bytes are gone or are no image the service "
                "reads (its url serves what there is)",
            )
        return data

    def rendition_tag(self, image_id: str, kind: Kind) -> str:
        """A strong ETag: the content id and what the rendition was made with."""
        store = self.context.thumbnails
        sizes = store.sizes if store is not None else None
        made = f"{sizes.side(kind)}q{sizes.quality}" if sizes is not None else "none"
        return f'"{image_id}-{kind}-{made}"'

    def browse(
        self, limit: int, offset: int, status: str | None, taken: TakenWindow = ANY_TIME
    ) -> list[ImageSummary]:
        metadata = self.context.metadata
        rows = self.context.call(
            "MySQL", "recent", lambda: metadata.recent(limit, offset, status, taken)
        )
        return [ImageSummary.of(row) for row in rows]
