"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cbir.adapters.health import check_all
from query_api.dependencies import Services
from query_api.models import DependencyState, Liveness, Readiness

router = APIRouter(tags=["operations"])


@router.get("/health/live", response_model=Liveness)
def live() -> Liveness:
    """The process answers."""
    return Liveness(status="live")


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency other than Redis is down"}},
)
def ready(api: Services) -> JSONResponse:
    """Every dependency answers: ready; only Redis missing: degraded (answers, uncached);
    anything else missing: 503."""
    checks = {c.service: c for c in check_all(api.settings)}
    api.engine.context.cache.ping()
    down = [name for name, c in checks.items() if not c.ok]
    status = "ready" if not down else "degraded" if down == ["redis"] else "unavailable"
    body = Readiness(
        status=status,
        dependencies={
            name: DependencyState(ok=c.ok, detail=c.detail, ms=round(c.latency_ms, 1))
            for name, c in checks.items()
        },
    )
    return JSONResponse(body.model_dump(), status_code=503 if status == "unavailable" else 200)


@router.get("/metrics", response_class=Response)
def prometheus(api: Services) -> Response:
    """Prometheus metrics: request latency, dependency latency, cache hits."""
    return Response(generate_latest(api.metrics.registry), media_type=CONTENT_TYPE_LATEST)
