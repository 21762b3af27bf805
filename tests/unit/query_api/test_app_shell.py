"""The installable app's pieces that need no server: the manifest declares what an install
and the share target need, and a share's answer keeps its data inside its script element."""

from __future__ import annotations

import io
import json

from PIL import Image

from query_api.routers.app_shell import STATIC, page_with, preview


def test_the_manifest_declares_an_installable_app_with_a_share_target() -> None:
    manifest = json.loads((STATIC / "manifest.webmanifest").read_text())
    assert manifest["name"] and manifest["short_name"] and manifest["start_url"] == "/"
    assert manifest["display"] in ("standalone", "fullscreen", "minimal-ui")
    sizes = {icon["sizes"] for icon in manifest["icons"]}
    assert {"192x192", "512x512"} <= sizes
    for icon in manifest["icons"]:
        with Image.open(STATIC / icon["src"].lstrip("/")) as image:
            assert f"{image.width}x{image.height}" == icon["sizes"] and image.format == "PNG"
    target = manifest["share_target"]
    assert (target["action"], target["method"]) == ("/share", "POST")
    assert target["enctype"] == "multipart/form-data"
    assert target["params"]["files"][0]["name"] == "image"


def test_a_shares_answer_cannot_end_its_script_element_early() -> None:
    page = bytes(page_with({"error": "</script><script>alert(1)</script>"}).body).decode()
    inside = page.split('<script id="shared" type="application/json">')[1].split("</script>")[0]
    assert json.loads(inside) == {"error": "</script><script>alert(1)</script>"}
    assert "<!--shared-->" not in page


def test_the_shared_photo_is_previewed_small() -> None:
    out = io.BytesIO()
    Image.new("RGB", (3000, 2000), (200, 30, 30)).save(out, format="JPEG")
    shown = preview(out.getvalue())
    assert shown.startswith("data:image/jpeg;base64,") and len(shown) < 40_000
