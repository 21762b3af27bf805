"""/docs and /redoc load their scripts and styles from the API itself, never from a CDN."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from cbir.settings import Settings
from query_api.app import create_app


def test_the_docs_pages_and_their_assets_come_from_the_api() -> None:
    client = TestClient(create_app(Settings()))  # no lifespan: no server is needed
    for page in ("/docs", "/redoc"):
        response = client.get(page)
        assert response.status_code == 200, page
        sources = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        sources += re.findall(r"url: '([^']+)'", response.text)
        assert sources and all(s.startswith("/") for s in sources), (page, sources)
        assert "cdn" not in response.text and "fonts.googleapis" not in response.text
        for asset in sources:
            if asset.startswith("/docs-assets/"):
                fetched = client.get(asset)
                assert fetched.status_code == 200 and len(fetched.content) > 1000, asset
    assert "/openapi.json" in client.get("/docs").text
