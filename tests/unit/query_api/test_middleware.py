"""The request timer: metrics, and the server's own time told to the client."""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.testclient import TestClient

from query_api.metrics import ApiMetrics
from query_api.middleware import RequestTimer


def test_every_response_says_the_server_time_it_took() -> None:
    app = FastAPI()

    @app.get("/slow")
    def slow() -> dict[str, str]:
        time.sleep(0.02)
        return {"ok": "yes"}

    metrics = ApiMetrics()
    client = TestClient(RequestTimer(app, metrics))
    response = client.get("/slow")
    assert response.status_code == 200 and response.json() == {"ok": "yes"}
    name, _, duration = response.headers["server-timing"].partition(";dur=")
    assert name == "app" and 20.0 <= float(duration) < 2000.0
    assert "server-timing" in client.get("/missing").headers  # 404s too
    samples = {
        s.labels["status"]: s.value
        for metric in metrics.registry.collect()
        for s in metric.samples
        if s.name.endswith("_count") and "status" in s.labels
    }
    assert samples == {"200": 1.0, "404": 1.0}
