"""What an image is to the pipeline, from its bytes alone: its id, its object key, its media
type and size. Pure: no service client, only PIL reading a header."""

from __future__ import annotations

import hashlib
import io
import warnings

from PIL import Image, UnidentifiedImageError

# what an image's tags and source may be: the filters and uploads check them, and the vector
# index keeps them beside each vector (tags beyond these bounds are cut when indexed)
MAX_TAGS = 64
MAX_TAG_LENGTH = 128
MAX_SOURCE_LENGTH = 255
# what `cbir ingest` picks up below a folder
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
# PIL's format names of what the embedding runtime decodes, as media types
MIME_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
}
UNKNOWN_TYPE = "application/octet-stream"
# S3 allows keys of 1024 bytes (UTF-8); the metadata column holds as many characters
MAX_OBJECT_KEY_BYTES = 1024


def image_id_of(data: bytes) -> str:
    """The image's id: the sha256 of its bytes (the same bytes twice are one image)."""
    return hashlib.sha256(data).hexdigest()


def object_key_of(image_id: str) -> str:
    """Where the producer stores an image's bytes (S3 clients choose their own keys)."""
    return f"{image_id[:2]}/{image_id}"


def is_image_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def image_header(data: bytes) -> tuple[str, int, int]:
    """PIL's format name, width and height, from the header alone (no pixel is decoded).
    Raises PIL's errors: UnidentifiedImageError, DecompressionBombError, OSError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            return image.format or "", *image.size


def sniff(data: bytes) -> tuple[str, int, int]:
    """Content type, width and height from the header alone; unknown bytes give zeros."""
    try:
        kind, width, height = image_header(data)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return UNKNOWN_TYPE, 0, 0
    return MIME_TYPES.get(kind, UNKNOWN_TYPE), width, height
