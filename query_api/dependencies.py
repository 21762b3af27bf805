"""What the routers share: the services on the app's state, the write key, and the checks of
parameters that say what to do when they fail."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request, Response, UploadFile
from pydantic import BeforeValidator, Field, StringConstraints

from cbir.domain.images import MAX_SOURCE_LENGTH, MAX_TAG_LENGTH
from cbir.ports import EventWriter
from cbir.settings import Settings
from producers.ingest import Ingestor
from query_api.engine import QueryEngine
from query_api.errors import ApiError
from query_api.metrics import ApiMetrics
from query_api.models import CacheInfo, ErrorBody, PredictedLabel, SearchResponse
from query_api.search import SearchOutcome
from query_api.uploads import inspect_image


def errors(**described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses a route answers, all in the one error shape:
    errors(e404="no such image") documents a 404."""
    return {
        int(status[1:]): {"model": ErrorBody, "description": description}
        for status, description in described.items()
    }


UPLOAD_ERRORS = errors(
    e400="the upload is empty",
    e413="over the size or pixel limit",
    e415="not an image this service reads",
)
WRITE_ERRORS = errors(e401="no API key sent", e403="a wrong key, or writes disabled")
LOOKUP_ERRORS = errors(e404="no such image, or its bytes are gone")


@dataclass
class ApiServices:
    """What the routes use, made once by `create_app` (the wiring) and kept on app.state."""

    settings: Settings
    metrics: ApiMetrics
    engine: QueryEngine
    # made on the first write, so that the API starts (and its spec is read) without Kafka
    ingestor: Callable[[], Ingestor]
    writer: Callable[[], EventWriter]
    upload_lock: threading.Lock = field(default_factory=threading.Lock)


def services(request: Request) -> ApiServices:
    found: ApiServices = request.app.state.services
    return found


Services = Annotated[ApiServices, Depends(services)]


def require_key(
    api: Services, x_api_key: Annotated[str | None, Header(description="the write key")] = None
) -> None:
    """Writes need the key the server has in CBIR_API__API_KEY."""
    secret = api.settings.api.api_key
    expected = secret.get_secret_value() if secret else ""
    if not expected:
        raise ApiError(403, "forbidden", "writes are disabled: set CBIR_API__API_KEY on the server")
    if not x_api_key:
        raise ApiError(
            401, "unauthorized", "this needs an API key: send it in the X-API-Key header"
        )
    if not hmac.compare_digest(x_api_key.encode(), expected.encode()):
        raise ApiError(
            403,
            "forbidden",
            "the API key is wrong: send the key the server has in CBIR_API__API_KEY",
        )


def _iso_only(value: object) -> object:
    """A time is written ISO 8601. A bare number (which pydantic would read as epoch seconds)
    and an empty value are refused, since the spec says date-time; `null`, the spec's other
    choice, is no time (a form field cannot carry a JSON null otherwise)."""
    if value == "null":
        return None
    if isinstance(value, int | float) or (
        isinstance(value, str) and (not value.strip() or _is_number(value))
    ):
        raise ValueError("write a time in ISO 8601, e.g. 2026-01-31T12:00:00Z")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# a tag or a source, as filters and uploads take them (the spec says their bounds)
Tag = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TAG_LENGTH)]
Source = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SOURCE_LENGTH)]

# a time in a filter, or none: ISO 8601 only
Moment = Annotated[datetime | None, BeforeValidator(_iso_only)]


def _null_is_none(value: object) -> object:
    """`null`, the spec's other choice for an optional number, is none (a form field cannot
    carry a JSON null otherwise)."""
    return None if value == "null" else value


# a score threshold (a cosine), or none; the bounds on the number, so that none passes them
Score = Annotated[Annotated[float, Field(ge=-1.0, le=1.0)] | None, BeforeValidator(_null_is_none)]

# an image id in a path: the sha256 of its bytes (checked by the spec, so documented there)
ImageId = Annotated[
    str, Path(pattern="^[0-9a-f]{64}$", description="the sha256 of the image's bytes")
]


def read_upload(api: ApiServices, upload: UploadFile) -> bytes:
    limits = api.settings.api
    data = upload.file.read(limits.max_upload_bytes + 1)
    inspect_image(data, limits.max_upload_bytes, limits.max_pixels)
    return data


def no_cache(cache_control: str | None) -> bool:
    return "no-cache" in (cache_control or "").lower()


def search_response(outcome: SearchOutcome, k: int) -> Response:
    """The response, serialised once by its model (the route's `response_model` documents
    it; FastAPI would otherwise dump, validate again and serialise what is built valid here),
    with the cache outcomes as headers."""
    body = search_body(outcome, k).model_dump_json().encode()
    headers = {"X-Cache": outcome.result_cache, "X-Embedding-Cache": outcome.embedding_cache}
    return Response(body, media_type="application/json", headers=headers)


def search_body(outcome: SearchOutcome, k: int) -> SearchResponse:
    return SearchResponse(
        results=outcome.results,
        k=k,
        collection=outcome.collection,
        model_id=outcome.model_id,
        index_generation=outcome.generation,
        cache=CacheInfo(result=outcome.result_cache, embedding=outcome.embedding_cache),
        spatial=outcome.spatial,
        predicted_labels=[PredictedLabel(**vars(p)) for p in outcome.predicted()],
    )
