"""Per-image local features: SIFT keypoints described by RootSIFT, and a perceptual hash.

RootSIFT (Arandjelović and Zisserman, 2012): each SIFT descriptor L1-normalised, then the
element-wise square root, so that Euclidean distance between them is the Hellinger kernel;
it matches better than raw SIFT at no cost. Descriptors are kept as uint8 (RootSIFT values
scaled by 512 and clipped: a component of a unit vector of 128 rarely passes 0.5), positions
as float32 pixels of the working image (its longer side at most `max_side`).

The blob layout (little-endian): magic b"CBLF", version u8, then u16 width, u16 height,
u64 perceptual hash, u32 n, then n x 2 float32 positions and n x 128 uint8 descriptors.
About 136 bytes per keypoint: 500 keypoints are 68 KB. Version 2 keeps the keypoints
strongest first (version 1, still read, kept OpenCV's order: its every prefix is arbitrary).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from cbir.models.runtime import (
    DESCRIPTOR_SCALE,
    SIFT_DIM,
    ImageRejected,
    Limits,
    LocalSpec,
    decode_image,
    sift_features,
)

MAGIC = b"CBLF"
VERSION = 2  # keypoints strongest first
READABLE = (1, 2)
_HEADER = struct.Struct("<4sBHHQI")
DIM = SIFT_DIM
_MIRRORED_BINS = (-np.arange(8)) % 8


class FeaturesUnreadable(ValueError):
    """A blob that is not local features of this version: extract them again from the bytes."""


@dataclass(frozen=True)
class LocalFeatures:
    """An image's keypoints (positions in the working image) and their RootSIFT descriptors."""

    points: np.ndarray  # (n, 2) float32, x and y in pixels of the working image
    descriptors: np.ndarray  # (n, 128) uint8, RootSIFT x 512
    width: int  # the working image's size
    height: int
    phash: int  # 64-bit DCT perceptual hash of the whole image
    ranked: bool = True  # keypoints strongest first (a blob of version 1: not)

    def __len__(self) -> int:
        return len(self.points)

    def strongest(self, count: int) -> LocalFeatures:
        """The `count` strongest keypoints (all of them where their order is not known)."""
        if not self.ranked or len(self) <= count:
            return self
        return LocalFeatures(
            self.points[:count], self.descriptors[:count], self.width, self.height, self.phash
        )

    def rootsift(self) -> np.ndarray:
        """The descriptors as float32 RootSIFT vectors (about unit length)."""
        return self.descriptors.astype(np.float32) / DESCRIPTOR_SCALE

    def mirrored(self) -> LocalFeatures:
        """The features of the image mirrored left to right, without extracting again: x
        reflected, and each descriptor's 4 x 4 x 8 histogram permuted as SIFT sees a mirrored
        patch (its rows reversed, orientation bin o becoming -o mod 8)."""
        cells = self.descriptors.reshape(-1, 4, 4, 8)[:, ::-1, :, :][:, :, :, _MIRRORED_BINS]
        points = self.points.copy()
        points[:, 0] = self.width - 1 - points[:, 0]
        return LocalFeatures(
            points,
            np.ascontiguousarray(cells.reshape(-1, DIM)),
            self.width,
            self.height,
            self.phash,
            self.ranked,
        )

    def to_bytes(self) -> bytes:
        version = VERSION if self.ranked else 1
        header = _HEADER.pack(MAGIC, version, self.width, self.height, self.phash, len(self))
        points = np.ascontiguousarray(self.points, dtype="<f4").tobytes()
        return header + points + np.ascontiguousarray(self.descriptors, dtype=np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalFeatures:
        if len(data) < _HEADER.size:
            raise FeaturesUnreadable(f"{len(data)} bytes is shorter than the header")
        magic, version, width, height, phash, n = _HEADER.unpack_from(data)
        if magic != MAGIC or version not in READABLE:
            raise FeaturesUnreadable(f"not local features of version {VERSION}")
        expected = _HEADER.size + n * (8 + DIM)
        if len(data) != expected:
            raise FeaturesUnreadable(f"{len(data)} bytes where {n} keypoints take {expected}")
        offset = _HEADER.size
        points = np.frombuffer(data, "<f4", n * 2, offset).reshape(n, 2).astype(np.float32)
        offset += n * 8
        descriptors = np.frombuffer(data, np.uint8, n * DIM, offset).reshape(n, DIM)
        return cls(points, descriptors, width, height, phash, version >= 2)


@dataclass(frozen=True)
class Extractor:
    """SIFT on the image's grey levels, its longer side brought to at most `max_side` (the
    extraction a VLAD entry runs inside Triton: `cbir.models.runtime.sift_features`)."""

    max_keypoints: int = 500
    max_side: int = 512
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        LocalSpec(self.max_keypoints, self.max_side)  # the same bounds

    @property
    def spec(self) -> LocalSpec:
        return LocalSpec(self.max_keypoints, self.max_side)

    def extract(self, data: bytes) -> LocalFeatures:
        """Features of encoded image bytes; raises ImageRejected for what cannot be decoded."""
        return self.extract_image(decode_image(data, self.max_side, self.limits))

    def extract_image(self, image: Image.Image) -> LocalFeatures:
        points, descriptors, width, height, grey = sift_features(image, self.spec)
        return LocalFeatures(points, descriptors, width, height, perceptual_hash(grey))


def perceptual_hash(grey: np.ndarray) -> int:
    """The DCT hash: the image at 32 x 32, the 8 x 8 lowest frequencies but the DC term
    compared with their median; 64 bits, near for near-identical images whatever their size,
    compression or small colour changes."""
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


__all__ = [
    "Extractor",
    "FeaturesUnreadable",
    "ImageRejected",
    "LocalFeatures",
    "hamming",
    "perceptual_hash",
]
