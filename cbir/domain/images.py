"""What an image is to the pipeline, from its bytes alone: its id, its object key, its media
type and size. Pure: no service client, only PIL reading a header."""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pillow_heif
from PIL import ExifTags, Image, UnidentifiedImageError

pillow_heif.register_heif_opener()  # HEIC/HEIF; Pillow reads AVIF by itself

# what an image's tags and source may be: the filters and uploads check them, and the vector
# index keeps them beside each vector (tags beyond these bounds are cut when indexed)
MAX_TAGS = 64
MAX_TAG_LENGTH = 128
MAX_SOURCE_LENGTH = 255
# what `cbir ingest` picks up below a folder
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".heic", ".heif", ".avif"}
)
# PIL's format names of what the embedding runtime decodes, as media types
MIME_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
    "HEIF": "image/heic",  # what phones write; HEIF proper (other codecs) is rare
    "AVIF": "image/avif",
}
FORMAT_NAMES = "JPEG, PNG, WebP, HEIC, AVIF, BMP or GIF"
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


# camera make and model as stored (EXIF allows any length; real ones are short)
MAX_CAMERA_LENGTH = 64
# EXIF dates outside these years are placeholders ("0000:00:00") or a clock never set
EARLIEST_YEAR, LATEST_YEAR = 1900, 2100
_EXIF_DATE = re.compile(r"\s*(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
# EXIF orientations that turn the picture a quarter: its upright width is the stored height
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


# how the vector index holds an unknown capture time (Milvus 2.3 has no null): below any date
NO_CAPTURE_TIME = -(2**62)  # not INT64 min: Milvus reads "-N" as minus N, and N would overflow


def clock_ms(moment: datetime | None) -> int:
    """A camera-clock time as the vector index holds it: milliseconds since 1970-01-01 00:00
    of that same clock (no zone), NO_CAPTURE_TIME when unknown."""
    if moment is None:
        return NO_CAPTURE_TIME
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class Capture:
    """When and with what a photograph was taken, as its EXIF says; None where it does not
    (never a made-up date). `taken_at` is the camera's clock: local time, no time zone."""

    taken_at: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None


@dataclass(frozen=True)
class Header:
    """What the bytes say before any pixel is decoded: the media type, the upright size
    (an EXIF quarter turn applied) and the capture metadata."""

    content_type: str
    width: int
    height: int
    capture: Capture = field(default_factory=Capture)


def exif_date(value: object, subseconds: object = None) -> datetime | None:
    """An EXIF date ("2024:07:14 18:32:05", with optional sub-seconds), or None when it is
    blank, a placeholder or not a date."""
    match = _EXIF_DATE.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        moment = datetime(year, month, day, hour, minute, second)
    except ValueError:  # month 13, February 30
        return None
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        return None
    digits = subseconds.strip().rstrip("\0") if isinstance(subseconds, str) else ""
    if digits.isdigit():
        moment = moment.replace(microsecond=int(digits[:3].ljust(3, "0")) * 1000)
    return moment


def _camera_text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = "".join(ch for ch in value if ch.isprintable()).strip()
    return text[:MAX_CAMERA_LENGTH] or None


def capture_of(exif: Image.Exif) -> Capture:
    """The capture time (DateTimeOriginal, else DateTimeDigitized; never the file's
    modification time) and the camera's make and model."""
    details = exif.get_ifd(ExifTags.IFD.Exif)
    taken = exif_date(
        details.get(ExifTags.Base.DateTimeOriginal), details.get(ExifTags.Base.SubsecTimeOriginal)
    ) or exif_date(
        details.get(ExifTags.Base.DateTimeDigitized),
        details.get(ExifTags.Base.SubsecTimeDigitized),
    )
    return Capture(
        taken,
        _camera_text(exif.get(ExifTags.Base.Make)),
        _camera_text(exif.get(ExifTags.Base.Model)),
    )


def _read_header(image: Image.Image) -> Header:
    width, height = image.size
    try:
        exif = image.getexif()
        capture = capture_of(exif)
        turned = exif.get(ExifTags.Base.Orientation) in _QUARTER_TURNS
    except Exception:  # EXIF is untrusted input: unreadable means unknown, never a refusal
        capture, turned = Capture(), False
    if turned:
        width, height = height, width
    return Header(MIME_TYPES.get(image.format or "", UNKNOWN_TYPE), width, height, capture)


def sniff(data: bytes) -> Header:
    """The media type, upright size and capture metadata from the header alone; unknown
    bytes give zeros and no capture."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return _read_header(image)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return Header(UNKNOWN_TYPE, 0, 0)
