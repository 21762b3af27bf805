"""What an uploaded file is, judged from its bytes (pure: no I/O). The Content-Type a client
sends is never trusted: the bytes are parsed, header only, before anything else happens."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from cbir.domain.images import FORMAT_NAMES, MIME_TYPES, image_header
from query_api.errors import ApiError


class UploadError(ApiError):
    """An upload refused: HTTP status, a short code, and a message that says what to do."""


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


def inspect_image(data: bytes, max_bytes: int, max_pixels: int) -> ImageInfo:
    if not data:
        raise UploadError(400, "empty_upload", "the uploaded file is empty: send an image file")
    if len(data) > max_bytes:
        raise UploadError(
            413,
            "too_large",
            f"the upload is {len(data)} bytes, over the {max_bytes}-byte limit: "
            "send a smaller image (or raise CBIR_API__MAX_UPLOAD_BYTES)",
        )
    try:
        kind, width, height = image_header(data)
    except Image.DecompressionBombError as exc:  # PIL refuses the header: its size is unknown
        raise UploadError(
            413,
            "too_many_pixels",
            f"the image declares far more pixels than the {max_pixels}-pixel limit ({exc}): "
            "a guard against decompression bombs; send a smaller image",
        ) from exc
    except UnidentifiedImageError as exc:
        raise UploadError(
            415,
            "not_an_image",
            f"the bytes are not an image this service reads: send {FORMAT_NAMES}",
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise UploadError(
            415,
            "unreadable_image",
            f"the image's header cannot be read ({exc}): re-save it with an image editor "
            "(which also drops oversized metadata) and send it again",
        ) from exc
    if width * height > max_pixels:
        raise UploadError(
            413,
            "too_many_pixels",
            f"the image is {width}x{height} pixels, over the {max_pixels}-pixel limit "
            "(a guard against decompression bombs): send a smaller image",
        )
    if kind not in MIME_TYPES:
        raise UploadError(
            415,
            "unsupported_format",
            f"{kind or 'this'} images are not supported: send {FORMAT_NAMES}",
        )
    return ImageInfo(MIME_TYPES[kind], width, height)
