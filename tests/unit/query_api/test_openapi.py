"""The API's own description: every field of a result and every error is documented."""

from __future__ import annotations

from typing import Any

import pytest

from cbir.settings import Settings
from query_api.app import create_app


def spec() -> dict[str, Any]:
    document: dict[str, Any] = create_app(Settings()).openapi()
    return document


def test_a_search_result_documents_every_field_it_carries() -> None:
    schemas = spec()["components"]["schemas"]
    result = schemas["SearchResult"]["properties"]
    for name in ("rank", "score", "image_id", "tags", "status", "url", "similar_url", "model_id"):
        assert name in result, name
    response = schemas["SearchResponse"]["properties"]
    assert response["results"]["items"] == {"$ref": "#/components/schemas/SearchResult"}
    assert set(schemas["CacheInfo"]["properties"]) == {"result", "embedding"}


def test_every_error_status_is_documented_in_the_one_error_shape() -> None:
    document = spec()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    error = {"$ref": "#/components/schemas/ErrorBody"}
    readiness = {"$ref": "#/components/schemas/Readiness"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    # readiness answers its own body when a dependency is down
                    shape = readiness if (path, status) == ("/health/ready", "503") else error
                    assert response["content"]["application/json"]["schema"] == shape, (
                        method,
                        path,
                        status,
                    )
    upload = document["paths"]["/images"]["post"]["responses"]
    assert {"401", "403", "413", "415", "422", "503"} <= set(upload)
    similar = document["paths"]["/images/{image_id}/similar"]["get"]["responses"]
    assert {"404", "409"} <= set(similar)


def test_times_are_iso_8601_only_and_null_is_none() -> None:
    from pydantic import TypeAdapter, ValidationError

    from query_api.dependencies import Moment

    moment = TypeAdapter(Moment)
    parsed = moment.validate_python("2026-01-31T12:00:00Z")
    assert parsed is not None and parsed.year == 2026
    assert moment.validate_python("null") is None
    for bad in ("", "0.5", "6.887e-72", "1700000000", "inf", 17):
        with pytest.raises(ValidationError, match="ISO 8601"):
            moment.validate_python(bad)
