"""Search by image, and more like a stored image."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Response, UploadFile

from query_api.dependencies import (
    LOOKUP_ERRORS,
    UPLOAD_ERRORS,
    Services,
    bounded_k,
    checked_effort,
    checked_id,
    errors,
    no_cache,
    read_upload,
    search_response,
)
from query_api.engine import SearchOutcome
from query_api.filters import SearchFilters
from query_api.models import SearchResponse

router = APIRouter(tags=["search"])


def _headers(response: Response, outcome: SearchOutcome) -> None:
    response.headers["X-Cache"] = outcome.result_cache
    response.headers["X-Embedding-Cache"] = outcome.embedding_cache


@router.post("/search", response_model=SearchResponse, responses=UPLOAD_ERRORS)
def search(
    api: Services,
    response: Response,
    image: Annotated[UploadFile, File(description="the query image")],
    k: Annotated[int | None, Form(description="results, 1 to max_k")] = None,
    tag: Annotated[list[str] | None, Form(description="only images with these tags")] = None,
    tag_mode: Annotated[str, Form(description="any or all of the tags")] = "any",
    source: Annotated[list[str] | None, Form(description="only from these sources")] = None,
    uploaded_after: Annotated[datetime | None, Form()] = None,
    uploaded_before: Annotated[datetime | None, Form()] = None,
    effort: Annotated[int | None, Form(description="search_list / ef")] = None,
    cache_control: Annotated[str | None, Header()] = None,
) -> SearchResponse:
    """The stored images most similar to an uploaded one. `Cache-Control: no-cache`
    computes the result list afresh (the query's embedding may still come from cache)."""
    k = bounded_k(api, k)
    filters = SearchFilters.parse(tag, tag_mode, source, uploaded_after, uploaded_before)
    data = read_upload(api, image)
    outcome = api.engine.search_image(
        data, k, filters, checked_effort(effort), not no_cache(cache_control)
    )
    _headers(response, outcome)
    return search_response(outcome, k)


@router.get(
    "/images/{image_id}/similar",
    response_model=SearchResponse,
    responses={**LOOKUP_ERRORS, **errors(e409="the image is not indexed (yet): its status says")},
)
def similar(
    api: Services,
    response: Response,
    image_id: str,
    k: int | None = None,
    tag: Annotated[list[str] | None, Query()] = None,
    tag_mode: str = "any",
    source: Annotated[list[str] | None, Query()] = None,
    uploaded_after: datetime | None = None,
    uploaded_before: datetime | None = None,
    effort: int | None = None,
    cache_control: Annotated[str | None, Header()] = None,
) -> SearchResponse:
    """More like this: the images nearest to a stored image's own vector."""
    k = bounded_k(api, k)
    filters = SearchFilters.parse(tag, tag_mode, source, uploaded_after, uploaded_before)
    outcome = api.engine.search_similar(
        checked_id(image_id), k, filters, checked_effort(effort), not no_cache(cache_control)
    )
    _headers(response, outcome)
    return search_response(outcome, k)
