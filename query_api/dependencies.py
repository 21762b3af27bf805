"""What the routers share: the services on the app's state, the write key, and the checks of
parameters that say what to do when they fail."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Request, UploadFile

from cbir.settings import Settings
from domain.images import is_image_id
from ports import EventWriter
from producers.ingest import Ingestor
from query_api.engine import QueryEngine, SearchOutcome
from query_api.errors import ApiError
from query_api.metrics import ApiMetrics
from query_api.models import CacheInfo, ErrorBody, SearchResponse
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


def bounded_k(api: ApiServices, k: int | None) -> int:
    limits = api.settings.api
    k = limits.default_k if k is None else k
    if not 1 <= k <= limits.max_k:
        raise ApiError(422, "invalid_k", f"k must be between 1 and {limits.max_k}, got {k}")
    return k


def checked_effort(effort: int | None) -> int | None:
    if effort is not None and not 1 <= effort <= 1000:
        raise ApiError(
            422,
            "invalid_effort",
            f"effort (DISKANN search_list, HNSW ef) must be 1 to 1000, got {effort}",
        )
    return effort


def checked_id(image_id: str) -> str:
    if not is_image_id(image_id):
        raise ApiError(422, "invalid_id", "an image id is the sha256 of its bytes: 64 hex digits")
    return image_id


def read_upload(api: ApiServices, upload: UploadFile) -> bytes:
    limits = api.settings.api
    data = upload.file.read(limits.max_upload_bytes + 1)
    inspect_image(data, limits.max_upload_bytes, limits.max_pixels)
    return data


def no_cache(cache_control: str | None) -> bool:
    return "no-cache" in (cache_control or "").lower()


def search_response(outcome: SearchOutcome, k: int) -> SearchResponse:
    return SearchResponse(
        results=outcome.results,
        k=k,
        collection=outcome.collection,
        model_id=outcome.model_id,
        index_generation=outcome.generation,
        cache=CacheInfo(result=outcome.result_cache, embedding=outcome.embedding_cache),
    )
