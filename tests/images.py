"""Images made by the tests: encodings of a photo, and bad inputs of every kind."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def reencoded(photo: Path, fmt: str, **options: object) -> bytes:
    with Image.open(photo) as image:
        return encode(image.convert("RGB"), fmt, **options)


def half_size(photo: Path, quality: int = 60) -> bytes:
    """The photo at half its size, recompressed as JPEG: a near-duplicate of it."""
    with Image.open(photo) as opened:
        small = opened.convert("RGB").resize((opened.width // 2, opened.height // 2))
    return encode(small, "JPEG", quality=quality)


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid little PNG whose header claims another size: a decompression bomb's shape."""
    data = bytearray(encode(Image.new("RGB", (8, 8), "red"), "PNG"))
    ihdr = 16  # signature (8) + chunk length (4) + b"IHDR" (4)
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def bad_inputs(photo: Path) -> dict[str, bytes]:
    """Inputs that must be rejected one by one, each with a reason."""
    jpeg = photo.read_bytes()
    return {
        "empty": b"",
        "text": b"this is not an image, it is a text file named .jpg\n" * 10,
        "pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n",
        "truncated jpeg": jpeg[: len(jpeg) // 3],
        "bomb": png_claiming_size(12_000, 12_000),
        "absurd": encode(Image.new("L", (25_000, 1)), "PNG"),
    }
