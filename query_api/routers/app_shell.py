"""The installable phone app: the web app manifest, its icons and service worker (which keeps
the page's shell, never results or images), and the Web Share Target: "Share -> Reverse image
search" from a phone's gallery POSTs the photo to /share, answered with the page showing that
photo's search results.

No `from __future__ import annotations` here: FastAPI must see the routes' annotations."""

import base64
import io
import json
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import FileResponse, HTMLResponse
from PIL import Image

from cbir.domain.errors import CbirError
from query_api.dependencies import Services, read_upload, search_body
from query_api.search import SearchOutcome, SearchRequest

STATIC = Path(__file__).resolve().parent.parent / "static"
Icon = Literal["icon-192.png", "icon-512.png", "icon-maskable-512.png", "apple-touch-icon.png"]
SHARED_MARK = "<!--shared-->"  # where the page takes a shared photo's results
PREVIEW_SIDE = 320  # the shared photo shown above its results, as a small JPEG in the page

router = APIRouter(include_in_schema=False)


@router.get("/manifest.webmanifest")
def manifest() -> FileResponse:
    return FileResponse(STATIC / "manifest.webmanifest", media_type="application/manifest+json")


@router.get("/sw.js")
def service_worker() -> FileResponse:
    # a browser checks for a new worker on each visit when this is not cached
    return FileResponse(
        STATIC / "sw.js",
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"},
    )


@router.get("/icons/{name}")
def icon(name: Icon) -> FileResponse:
    return FileResponse(
        STATIC / "icons" / name,
        media_type="image/png",
        headers={"Cache-Control": "public, max-age=86400"},
    )


def preview(data: bytes) -> str:
    """The shared photo, small, as a data URL (the page shows it above its results)."""
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGB")
        small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def answered(name: str, shown: str, outcome: SearchOutcome, k: int) -> HTMLResponse:
    body = search_body(outcome, k).model_dump(mode="json")
    return page_with({"query": {"name": name, "preview": shown}, **body})


def page_with(shared: dict[str, object]) -> HTMLResponse:
    """The page, with what the share gave (results or the reason there are none) in it."""
    text = json.dumps(shared).replace("</", "<\\/")  # no early end of the script element
    element = f'<script id="shared" type="application/json">{text}</script>'
    page = (STATIC / "index.html").read_text().replace(SHARED_MARK, element)
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


@router.post("/share", response_class=HTMLResponse)
def share(
    api: Services,
    image: Annotated[UploadFile | None, File()] = None,
    title: Annotated[str, Form(max_length=1000)] = "",
    text: Annotated[str, Form(max_length=1000)] = "",
) -> HTMLResponse:
    """A photo shared from the phone (the manifest's share target): the page with its
    results; words shared without a photo are searched by words."""
    k = api.settings.api.default_k
    try:
        if image is not None and image.filename:
            data = read_upload(api, image)
            outcome = api.engine.search.by_image(data, SearchRequest(k))
            name = image.filename or "shared photo"
            try:
                shown = preview(data)
            except (OSError, ValueError):  # a format the page cannot preview: no preview
                shown = ""
            return page_with(
                {
                    "query": {"name": name, "preview": shown},
                    **search_body(outcome, k).model_dump(mode="json"),
                }
            )
        words = " ".join(part for part in (title, text) if part.strip())
        if not words.strip():
            return page_with({"error": "nothing was shared: share a photo (or words) with it"})
        outcome = api.engine.search.by_text(words, SearchRequest(k))
        return page_with(
            {
                "query": {"name": words, "preview": ""},
                **search_body(outcome, k).model_dump(mode="json"),
            }
        )
    except CbirError as exc:  # the page says why, in its status line
        return page_with({"error": str(exc)})
