"""Search by image, by words, and more like a stored image.

No `from __future__ import annotations` here: the routes are made inside `router()`, and
FastAPI must see their annotations, which use the factory's locals, evaluated."""

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Header, Query, Response, UploadFile

from cbir.settings import ApiSettings, LocalFeaturesSettings
from query_api.dependencies import (
    LOOKUP_ERRORS,
    UPLOAD_ERRORS,
    ImageId,
    Moment,
    Score,
    Services,
    Source,
    Tag,
    errors,
    no_cache,
    read_upload,
    search_response,
)
from query_api.filters import MAX_VALUES, TAKEN, SearchFilters
from query_api.models import SearchResponse
from query_api.search import SearchRequest
from query_api.spatial import SpatialRequest

TagMode = Literal["any", "all"]
Rerank = Literal["none", "spatial"]
RERANK = (
    "spatial: the top `depth` candidates re-ranked by spatial verification of SIFT local "
    "features (finds the very same object photographed again); none: global similarity alone"
)
EXPAND = (
    "rerank=spatial: also search again with the query's vector averaged with those of its "
    "verified results (query expansion: finds views of the object the first search missed)"
)
# 0: the index type's own default (DISKANN search_list, HNSW ef, IVF nprobe)
EFFORT = {"ge": 0, "le": 1000, "description": "search_list / ef / nprobe; 0: the default"}
MAX_TEXT = 1000  # characters of a search by words (CLIP reads 77 tokens of it at most)
MIN_SCORE = {
    "description": "only results at least this similar (cosine of the unit vectors, -1 to 1; "
    "the score each result shows), applied inside the index by a Milvus range search: fewer "
    "than k come back when fewer are that close. Absent: the k nearest, however far",
}
TAGS = {"max_length": MAX_VALUES, "description": "only images with these tags"}
SOURCES = {"max_length": MAX_VALUES, "description": "only from these sources"}


def router(limits: ApiSettings, local: LocalFeaturesSettings) -> APIRouter:
    """The search routes; their parameters' bounds (k, depth) come from the settings, so that
    the spec says exactly what the server takes."""
    routes = APIRouter(tags=["search"])
    k_bounds = {"ge": 1, "le": limits.max_k, "description": f"results, 1 to {limits.max_k}"}
    depth_bounds = {
        "ge": 1,
        "le": local.max_rerank_depth,
        "description": f"rerank=spatial: candidates to verify (R), 1 to {local.max_rerank_depth}",
    }
    budget_bounds = {
        "ge": 1,
        "le": 10_000,
        "description": "rerank=spatial: ms verification may take; past it the rest keeps its "
        "global order",
    }

    def request(
        k: int,
        filters: SearchFilters,
        effort: int,
        cache_control: str | None,
        rerank: str,
        depth: int,
        budget_ms: int,
        expand: bool,
        min_score: float | None,
    ) -> SearchRequest:
        """What both image routes ask, from their parameters."""
        spatial = SpatialRequest(depth, budget_ms, expand) if rerank == "spatial" else None
        return SearchRequest(
            k, filters, effort or None, not no_cache(cache_control), spatial, min_score
        )

    @routes.post("/search", response_model=SearchResponse, responses=UPLOAD_ERRORS)
    def search(
        api: Services,
        image: Annotated[UploadFile, File(description="the query image")],
        k: Annotated[int, Form(**k_bounds)] = limits.default_k,
        tag: Annotated[list[Tag] | None, Form(**TAGS)] = None,
        tag_mode: Annotated[TagMode, Form(description="any or all of the tags")] = "any",
        source: Annotated[list[Source] | None, Form(**SOURCES)] = None,
        uploaded_after: Annotated[Moment, Form()] = None,
        uploaded_before: Annotated[Moment, Form()] = None,
        taken_after: Annotated[Moment, Form(description=TAKEN)] = None,
        taken_before: Annotated[Moment, Form(description=TAKEN)] = None,
        effort: Annotated[int, Form(**EFFORT)] = 0,
        rerank: Annotated[Rerank, Form(description=RERANK)] = "none",
        depth: Annotated[int, Form(**depth_bounds)] = local.rerank_depth,
        rerank_budget_ms: Annotated[int, Form(**budget_bounds)] = local.rerank_budget_ms,
        expand: Annotated[bool, Form(description=EXPAND)] = False,
        min_score: Annotated[Score, Form(**MIN_SCORE)] = None,
        cache_control: Annotated[str | None, Header()] = None,
    ) -> Response:
        """The stored images most similar to an uploaded one. `Cache-Control: no-cache`
        computes the result list afresh (the query's embedding may still come from cache)."""
        filters = SearchFilters.parse(
            tag, tag_mode, source, uploaded_after, uploaded_before, taken_after, taken_before
        )
        asked = request(
            k, filters, effort, cache_control, rerank, depth, rerank_budget_ms, expand, min_score
        )
        return search_response(api.engine.search.by_image(read_upload(api, image), asked), k)

    @routes.post(
        "/search/text",
        response_model=SearchResponse,
        responses=errors(
            e409="the collection's model has no text tower (search by words needs CLIP)",
            e422="the text is empty or too long",
        ),
    )
    def search_text(
        api: Services,
        text: Annotated[
            str, Form(min_length=1, max_length=MAX_TEXT, description="what to look for")
        ],
        k: Annotated[int, Form(**k_bounds)] = limits.default_k,
        tag: Annotated[list[Tag] | None, Form(**TAGS)] = None,
        tag_mode: Annotated[TagMode, Form(description="any or all of the tags")] = "any",
        source: Annotated[list[Source] | None, Form(**SOURCES)] = None,
        uploaded_after: Annotated[Moment, Form()] = None,
        uploaded_before: Annotated[Moment, Form()] = None,
        taken_after: Annotated[Moment, Form(description=TAKEN)] = None,
        taken_before: Annotated[Moment, Form(description=TAKEN)] = None,
        effort: Annotated[int, Form(**EFFORT)] = 0,
        min_score: Annotated[Score, Form(**MIN_SCORE)] = None,
        cache_control: Annotated[str | None, Header()] = None,
    ) -> Response:
        """The stored images that best match words ("red car at night"): the text embedded
        by the text tower of the model that made the collection's vectors (a CLIP model's),
        searched like an image's vector, with the same filters and caching."""
        filters = SearchFilters.parse(
            tag, tag_mode, source, uploaded_after, uploaded_before, taken_after, taken_before
        )
        asked = SearchRequest(
            k, filters, effort or None, not no_cache(cache_control), min_score=min_score
        )
        return search_response(api.engine.search.by_text(text, asked), k)

    @routes.get(
        "/images/{image_id}/similar",
        response_model=SearchResponse,
        responses={
            **LOOKUP_ERRORS,
            **errors(e409="the image is not indexed (yet): its status says"),
        },
    )
    def similar(
        api: Services,
        image_id: ImageId,
        k: Annotated[int, Query(**k_bounds)] = limits.default_k,
        tag: Annotated[list[Tag] | None, Query(**TAGS)] = None,
        tag_mode: Annotated[TagMode, Query()] = "any",
        source: Annotated[list[Source] | None, Query(**SOURCES)] = None,
        uploaded_after: Moment = None,
        uploaded_before: Moment = None,
        taken_after: Annotated[Moment, Query(description=TAKEN)] = None,
        taken_before: Annotated[Moment, Query(description=TAKEN)] = None,
        effort: Annotated[int, Query(**EFFORT)] = 0,
        rerank: Annotated[Rerank, Query(description=RERANK)] = "none",
        depth: Annotated[int, Query(**depth_bounds)] = local.rerank_depth,
        rerank_budget_ms: Annotated[int, Query(**budget_bounds)] = local.rerank_budget_ms,
        expand: Annotated[bool, Query(description=EXPAND)] = False,
        min_score: Annotated[Score, Query(**MIN_SCORE)] = None,
        cache_control: Annotated[str | None, Header()] = None,
    ) -> Response:
        """More like this: the images nearest to a stored image's own vector."""
        filters = SearchFilters.parse(
            tag, tag_mode, source, uploaded_after, uploaded_before, taken_after, taken_before
        )
        asked = request(
            k, filters, effort, cache_control, rerank, depth, rerank_budget_ms, expand, min_score
        )
        return search_response(api.engine.search.similar(image_id, asked), k)

    return routes
