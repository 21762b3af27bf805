"""Upload, browse, read and delete images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Query, Response, UploadFile

from cbir.domain.images import image_id_of
from cbir.thumbnails import Kind
from cbir.wiring import ingest_config
from producers.ingest import IngestItem, delete_images
from query_api.dependencies import (
    LOOKUP_ERRORS,
    UPLOAD_ERRORS,
    WRITE_ERRORS,
    ApiServices,
    ImageId,
    Moment,
    Services,
    Tag,
    errors,
    read_upload,
    require_key,
)
from query_api.errors import ApiError
from query_api.filters import MAX_VALUES, TAKEN, SearchFilters, taken_window
from query_api.models import Accepted, Browse, DuplicatesResponse, ImageDetail

router = APIRouter(prefix="/images", tags=["images"])


@router.post(
    "",
    status_code=202,
    response_model=Accepted,
    dependencies=[Depends(require_key)],
    responses={
        200: {"model": Accepted, "description": "the image was stored already"},
        **UPLOAD_ERRORS,
        **WRITE_ERRORS,
    },
)
def upload(
    api: Services,
    response: Response,
    image: Annotated[UploadFile, File(description="an image to index")],
    tag: Annotated[
        list[Tag] | None, Form(max_length=MAX_VALUES, description="tags to store with it")
    ] = None,
) -> Accepted:
    """Send an image into the pipeline (object store, then an event on Kafka), as the
    producer does; it is searchable once its status is `indexed`."""
    tags = SearchFilters.parse(tags=tag).tags  # the same rules as tag filters
    data = read_upload(api, image)
    name = Path(image.filename or "upload").name[:255] or "upload"
    with api.upload_lock:
        summary = api.ingestor().ingest_bytes([(IngestItem(Path(name), tags), data)])
    if summary.rejected:
        raise ApiError(
            503, "not_accepted", f"the pipeline did not take it: {summary.rejected[0][1]}"
        )
    image_id = image_id_of(data)
    row = api.engine.catalogue.row(image_id)
    status = str(row.status) if row else "pending"
    if summary.new:
        detail = "accepted: it is indexed by the pipeline in a few seconds"
    else:
        detail = f"this image is already stored ({status})"
        response.status_code = 200
    return Accepted(
        image_id=image_id, status=status, detail=detail, status_url=f"/images/{image_id}"
    )


@router.get("", response_model=Browse)
def browse(
    api: Services,
    limit: Annotated[int, Query(ge=1, le=200)] = 48,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    status: Annotated[str | None, Query(pattern="^(pending|indexed|failed)$")] = None,
    taken_after: Annotated[Moment, Query(description=TAKEN)] = None,
    taken_before: Annotated[Moment, Query(description=TAKEN)] = None,
) -> Browse:
    """Stored images, newest uploads first; with taken_after or taken_before, the
    photographs taken then, latest taken first."""
    window = taken_window(taken_after, taken_before)
    return Browse(
        images=api.engine.catalogue.browse(limit, offset, status, window),
        limit=limit,
        offset=offset,
    )


@router.get("/{image_id}", response_model=ImageDetail, responses=LOOKUP_ERRORS)
def metadata(api: Services, image_id: ImageId) -> ImageDetail:
    """One image's metadata and status: pending, indexed, or failed with the reason; an
    indexed image without tags gets the tags its nearest neighbours vote for."""
    return api.engine.catalogue.image(image_id)


@router.get(
    "/{image_id}/duplicates",
    response_model=DuplicatesResponse,
    responses={**LOOKUP_ERRORS, **errors(e409="the image is not indexed (yet): its status says")},
)
def duplicates(api: Services, image_id: ImageId) -> DuplicatesResponse:
    """Its near-duplicates among its nearest neighbours: perceptual hash and embedding tiers,
    confirmed by spatial verification where only one of them says so."""
    return api.engine.duplicates.of(image_id)


@router.get(
    "/{image_id}/content",
    response_class=Response,
    responses={
        200: {
            "content": {"image/*": {}, "application/octet-stream": {}},
            "description": "the image's bytes (octet-stream when they are no known image)",
        },
        **LOOKUP_ERRORS,
    },
)
def content(api: Services, image_id: ImageId) -> Response:
    """The image's bytes, proxied from the object store."""
    data, media_type = api.engine.catalogue.content(image_id)
    return Response(
        data, media_type=media_type, headers={"Cache-Control": "public, max-age=86400, immutable"}
    )


RENDITION: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/webp": {}}, "description": "the rendition, WebP"},
    304: {"description": "If-None-Match named it: the copy the client holds is it"},
    **LOOKUP_ERRORS,
}


def rendition(api: ApiServices, image_id: str, kind: Kind, if_none_match: str | None) -> Response:
    """A rendition with validators that never change (an image id is its content's hash)."""
    tag = api.engine.catalogue.rendition_tag(image_id, kind)
    headers = {"ETag": tag, "Cache-Control": "public, max-age=31536000, immutable"}
    if if_none_match and tag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    data = api.engine.catalogue.rendition(image_id, kind)
    return Response(data, media_type="image/webp", headers=headers)


@router.get("/{image_id}/thumbnail", response_class=Response, responses=RENDITION)
def thumbnail(
    api: Services, image_id: ImageId, if_none_match: Annotated[str | None, Header()] = None
) -> Response:
    """Its thumbnail: WebP, the longer side CBIR_THUMBNAILS__THUMBNAIL_SIDE (320) px; for
    grids of results. Cached for good by clients (ETag, immutable)."""
    return rendition(api, image_id, "thumbnail", if_none_match)


@router.get("/{image_id}/preview", response_class=Response, responses=RENDITION)
def preview(
    api: Services, image_id: ImageId, if_none_match: Annotated[str | None, Header()] = None
) -> Response:
    """Its preview: WebP, the longer side CBIR_THUMBNAILS__PREVIEW_SIDE (960) px; for a
    page's larger view of it."""
    return rendition(api, image_id, "preview", if_none_match)


@router.delete(
    "/{image_id}",
    status_code=202,
    response_model=Accepted,
    dependencies=[Depends(require_key)],
    responses={**LOOKUP_ERRORS, **WRITE_ERRORS},
)
def delete(api: Services, image_id: ImageId) -> Accepted:
    """Delete an image everywhere (through the pipeline: an event, then a tombstone)."""
    api.engine.catalogue.image(image_id)  # 404 when unknown
    delete_images(
        ingest_config(api.settings), api.writer(), [image_id], "api", "deleted through the API"
    )
    return Accepted(
        image_id=image_id,
        status="deleting",
        detail="the pipeline removes it from every store in a few seconds",
        status_url=f"/images/{image_id}",
    )
