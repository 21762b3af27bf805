"""The API's response bodies, typed, so that `/openapi.json` documents every field."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from cbir.domain.rows import ImageRow

CacheOutcome = Literal["hit", "miss", "bypass", "none"]


class ErrorBody(BaseModel):
    error: str = Field(description="a short code, e.g. invalid_k, service_unavailable")
    detail: str = Field(description="what went wrong and what to do")


class ImageSummary(BaseModel):
    image_id: str = Field(description="sha256 of the image's bytes")
    file_name: str
    source: str = Field(description="who sent it: cli, api, s3, ...")
    tags: list[str]
    content_type: str
    size_bytes: int
    width: int = Field(description="upright (the EXIF orientation applied); 0: unknown")
    height: int
    uploaded_at: str | None = Field(description="ISO 8601, UTC")
    taken_at: str | None = Field(
        default=None,
        description="when the photograph was taken (EXIF DateTimeOriginal), ISO 8601 on the "
        "camera's clock (no time zone); null when the image does not say",
    )
    camera_make: str | None = Field(default=None, description="EXIF Make; null: not given")
    camera_model: str | None = Field(default=None, description="EXIF Model; null: not given")
    status: str = Field(description="pending, indexed or failed")
    error: str | None = Field(description="why it failed, when it did")
    model_id: str | None = Field(description="the model of its indexed vector")
    url: str = Field(description="its bytes (the original)")
    thumbnail_url: str = Field(description="a small WebP rendition, for grids")
    preview_url: str = Field(description="a larger WebP rendition, for a page's view of it")
    similar_url: str = Field(description="more like it")

    @classmethod
    def of(cls, row: ImageRow) -> ImageSummary:
        uploaded = row.uploaded_at
        return cls(
            image_id=row.image_id,
            file_name=row.file_name,
            source=row.source,
            tags=list(row.tags),
            content_type=row.content_type,
            size_bytes=row.size_bytes,
            width=row.width,
            height=row.height,
            uploaded_at=uploaded.isoformat() + "Z" if uploaded is not None else None,
            taken_at=row.taken_at.isoformat() if row.taken_at is not None else None,
            camera_make=row.camera_make,
            camera_model=row.camera_model,
            status=str(row.status),
            error=row.error,
            model_id=row.model_id,
            url=f"/images/{row.image_id}/content",
            thumbnail_url=f"/images/{row.image_id}/thumbnail",
            preview_url=f"/images/{row.image_id}/preview",
            similar_url=f"/images/{row.image_id}/similar",
        )


class PredictedLabel(BaseModel):
    label: str
    confidence: float = Field(description="its share of the neighbours' similarity, 0 to 1")
    neighbours: int = Field(description="how many of the neighbours carry it")


class ImageDetail(ImageSummary):
    predicted_tags: list[PredictedLabel] | None = Field(
        description="for an indexed image without tags: labels voted by its nearest "
        "neighbours; null when it has tags, is not indexed, or the index cannot be asked now"
    )


class SearchResult(ImageSummary):
    rank: int = Field(description="1 for the nearest")
    score: float = Field(description="similarity: inner product of unit vectors (cosine)")
    inliers: int | None = Field(
        default=None,
        description="with rerank=spatial: local-feature matches one geometric transform "
        "explains (many: the same object; 0 where too few descriptors match for a transform "
        "to be tried); null when not re-ranked, not verified in time "
        "or without stored features",
    )


class SpatialInfo(BaseModel):
    depth: int = Field(description="candidates asked to verify (R)")
    verified: int = Field(description="candidates verified within the time budget")
    features_missing: int = Field(
        default=0,
        description="candidates without stored local features (extraction still behind, the "
        "store away, or no image SIFT can read): they keep their global order",
    )
    query_keypoints: int
    ms: float = Field(description="time spatial re-ranking took")
    expanded_with: int | None = Field(
        default=None,
        description="expand: the verified results the query was expanded with (then searched "
        "again: results past them are ranked by the expanded query); null: not asked",
    )


class Duplicate(ImageSummary):
    tier: Literal["hash", "embedding", "both", "geometry"] = Field(
        description="both: perceptual hash and embedding agree; geometry: one of them, "
        "confirmed by spatial verification"
    )
    cosine: float = Field(description="similarity of the global descriptors")
    hamming: int | None = Field(description="perceptual-hash distance (0-64); null: unknown")
    inliers: int | None = Field(description="spatial verification's inliers, when it was asked")


class DuplicatesResponse(BaseModel):
    image_id: str
    duplicates: list[Duplicate] = Field(description="its near-duplicates, most similar first")
    checked: int = Field(description="nearest neighbours examined")
    thresholds: dict[str, float] = Field(
        description="max_hamming, min_cosine, min_inliers in force"
    )


class CacheInfo(BaseModel):
    result: CacheOutcome = Field(description="the result list: hit, miss, bypass")
    embedding: CacheOutcome = Field(description="the query's embedding: hit, miss, none")


class SearchResponse(BaseModel):
    results: list[SearchResult] = Field(description="ranked, best first")
    k: int
    collection: str = Field(description="the Milvus collection searched (its generation)")
    model_id: str = Field(description="the model of the query vector and the index")
    index_generation: int
    cache: CacheInfo
    spatial: SpatialInfo | None = Field(
        default=None, description="with rerank=spatial: what re-ranking did"
    )
    predicted_labels: list[PredictedLabel] = Field(
        description="the query image's likely labels: a similarity-weighted vote over the "
        "results' tags (the query image itself left out), best first"
    )


class Accepted(BaseModel):
    image_id: str
    status: str
    detail: str
    status_url: str


class Browse(BaseModel):
    images: list[ImageSummary]
    limit: int
    offset: int


class DependencyState(BaseModel):
    ok: bool
    detail: str
    ms: float


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable"]
    dependencies: dict[str, DependencyState]


class Liveness(BaseModel):
    status: Literal["live"]
