"""The query API (FastAPI) and the web page it serves. Run it with `cbir serve`; OpenAPI docs
at /docs. Reads are open; writes (upload, delete) need the key in CBIR_API__API_KEY, sent as
the X-API-Key header. Every error is JSON: {"error": code, "detail": what to do}.

This module wires the app: the adapters, the query engine, the error handlers, the
middleware and the routers (`query_api/routers/`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from cbir.domain.errors import CbirError, ModelMismatch, ModelNotServed, Permanent, Transient
from cbir.settings import Settings
from cbir.wiring import api_adapters
from query_api.dependencies import ApiServices
from query_api.docs import add_offline_docs
from query_api.errors import ApiError
from query_api.metrics import ApiMetrics
from query_api.middleware import BodyLimit, RequestTimer, api_error
from query_api.models import ErrorBody
from query_api.routers import app_shell, images, operations, search

log = logging.getLogger("cbir.api")
STATIC = Path(__file__).parent / "static"
# multipart framing and form fields around the file
MULTIPART_OVERHEAD = 64 * 1024
HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "too_large"}
# every route may answer these, in the one error shape
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        422: "a parameter or the image is invalid (the detail says which)",
        503: "a dependency is down or not ready (the detail names it)",
    }.items()
}


def allowed_methods(app: FastAPI, path: str) -> set[str]:
    """The methods the spec documents for every path template the request's path matches."""
    methods: set[str] = set()
    for template, documented in app.openapi()["paths"].items():
        if compile_path(template)[0].match(path):
            methods |= {method.upper() for method in documented}
    return methods


def status_of(exc: CbirError) -> tuple[int, str]:
    """The HTTP status and code of an error of the project's tree."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code
    if isinstance(exc, ModelNotServed):
        return 503, "model_not_served"
    if isinstance(exc, ModelMismatch):
        return 503, "model_mismatch"
    if isinstance(exc, Transient):
        return 503, "service_unavailable"
    if isinstance(exc, Permanent):
        return 422, "refused"
    return 503, "error"


def create_app(settings: Settings) -> FastAPI:
    metrics = ApiMetrics()
    adapters = api_adapters(settings)
    engine = adapters.query_engine(metrics)
    api = ApiServices(
        settings, metrics, engine, lambda: adapters.ingestor("api"), lambda: adapters.writer
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()
        adapters.close()

    app = FastAPI(
        title="cbir query API",
        description="Reverse image search: search by image, more like this, upload, delete.",
        version="1",
        lifespan=lifespan,
        responses=ERRORS,
        docs_url=None,  # served with their assets from here, offline too (query_api/docs.py)
        redoc_url=None,
    )
    add_offline_docs(app)
    app.state.services = api
    app.state.engine = engine
    app.state.metrics = metrics

    @app.exception_handler(CbirError)
    async def on_error(_: Request, exc: CbirError) -> JSONResponse:
        status, code = status_of(exc)
        return api_error(status, code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
            for e in exc.errors()
        )
        return api_error(422, "invalid_request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:  # every method of the path, not only the first route's
            allow = ", ".join(sorted(allowed_methods(app, request.url.path)))
            return JSONResponse(
                {"error": "method_not_allowed", "detail": f"this path takes {allow}"},
                status_code=405,
                headers={"Allow": allow},
            )
        code = HTTP_CODES.get(exc.status_code, "error")
        return api_error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return api_error(503, "dependency_error", f"{type(exc).__name__}: {exc}; see /health/ready")

    app.add_middleware(BodyLimit, limit=settings.api.max_upload_bytes + MULTIPART_OVERHEAD)
    app.add_middleware(RequestTimer, metrics=metrics)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    for router in (
        search.router(settings.api, settings.local_features),
        images.router,
        operations.router,
        app_shell.router,
    ):
        app.include_router(router)
    return app
