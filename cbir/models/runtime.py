"""From encoded image bytes to an L2-normalised embedding.

This module runs in two places: inside Triton's Python backend (the export copies it next to
model.py as `embedding_runtime.py`) and in-process (tests, benchmarks, the reference that Triton
must equal). It therefore imports nothing of the project and needs only numpy, Pillow and
ONNX Runtime, which the servers' venv and the compose Triton image both have.

A model entry's version folder holds `model.onnx`, `embedding.json` (the ModelSpec below),
with PCA `pca.npz`, and with a trained projection head (`cbir train`) `head.npz`. A VLAD
entry (`cbir model vlad`) has no network: `vlad.npz` (codebook and whitening) turns the
image's SIFT descriptors into one vector; it needs OpenCV, imported only there. A CLIP text
tower's entry (`cbir model export --clip`) takes words, not images: `vocab.txt.gz` (the BPE
merges open_clip ships) and a network from token ids to the shared space; its tokenizer
(`ClipTokenizer`) needs `regex` and `ftfy`, imported only there.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

# HEIC/HEIF (iPhones' default) through libheif; Pillow reads AVIF by itself. The HEIF opener
# applies the container's rotation and mirror and resets the EXIF orientation to 1, so
# exif_transpose below never turns a photo twice.
pillow_heif.register_heif_opener()

SPEC_FILE = "embedding.json"
ONNX_FILE = "model.onnx"
PCA_FILE = "pca.npz"
HEAD_FILE = "head.npz"
VLAD_FILE = "vlad.npz"
VOCAB_FILE = "vocab.txt.gz"  # a text tower's BPE merges
# written by the Triton model when it loads: the execution provider it runs on
RUNTIME_STATE_FILE = "runtime_state.json"
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
PROVIDER_CHOICES = ("auto", "cpu", "cuda")
SIFT_DIM = 128
DESCRIPTOR_SCALE = 512.0  # RootSIFT components x 512, clipped to a byte

# Pillow's names; MPO is the multi-picture JPEG that many cameras write
ACCEPTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "HEIF", "AVIF"}
FORMAT_NAMES = "JPEG, PNG, WebP, HEIC, AVIF, BMP or GIF"
_RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


class ImageRejected(ValueError):
    """This item cannot be embedded; the message says why, in a user's words."""


@dataclass(frozen=True)
class Limits:
    """Guards applied before any pixel is decoded."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000  # decompression-bomb guard: 40 MP is a large camera photo
    max_side: int = 20_000


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input: value = (pixel * scale - mean) / std."""

    input_size: int = 224
    resize: str = "shorter_side_crop"  # or "squash": straight to input_size x input_size
    resize_shorter: int = 256  # shorter side before the centre crop (shorter_side_crop)
    interpolation: str = "bilinear"
    channel_order: str = "RGB"
    layout: str = "NCHW"
    scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.resize not in ("shorter_side_crop", "squash"):
            raise ValueError(f"resize must be shorter_side_crop or squash, not {self.resize!r}")
        if self.interpolation not in _RESAMPLING:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLING)}")
        if self.channel_order not in ("RGB", "BGR") or self.layout not in ("NCHW", "NHWC"):
            raise ValueError("channel_order is RGB or BGR, layout is NCHW or NHWC")
        if self.resize == "shorter_side_crop" and self.resize_shorter < self.input_size:
            raise ValueError("resize_shorter must be at least input_size")


@dataclass(frozen=True)
class Pooling:
    """How the network's output becomes one vector per image.

    gap: mean over the spatial positions (N,C,H,W) or the patch tokens (N,T,C);
    gem: generalised mean, (mean of max(x, eps)^p)^(1/p), over the same;
    cls: the first token of a transformer's output (N,T,C);
    none: the output is already (N,D).
    """

    kind: str = "gap"
    gem_p: float = 3.0
    prefix_tokens: int = 1  # tokens before the patch tokens (CLS, registers)

    def __post_init__(self) -> None:
        if self.kind not in ("gap", "gem", "cls", "none", "vlad"):
            raise ValueError(f"pooling must be gap, gem, cls, none or vlad, not {self.kind!r}")


@dataclass(frozen=True)
class LocalSpec:
    """SIFT on the image's grey levels, its longer side brought to at most `max_side`."""

    max_keypoints: int = 500
    max_side: int = 512

    def __post_init__(self) -> None:
        if self.max_keypoints < 1 or self.max_side < 32:
            raise ValueError("max_keypoints must be at least 1 and max_side at least 32")


@dataclass(frozen=True)
class TextSpec:
    """A text tower: words in, vectors in the space of the image model `pairs_with` (its
    model id): CLIP's byte-level BPE over lower-cased, cleaned text, `context_length` token
    ids with start and end markers, zeros after."""

    pairs_with: str
    context_length: int = 77
    vocab_sha256: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides what a vector means. Two models whose specs (and weights)
    differ produce vectors that must never share an index: `model_id` tells them apart."""

    name: str
    version: int
    source: str  # where the weights came from, e.g. "timm:resnet50 weights=hub"
    onnx_input: str
    onnx_output: str
    feature_dim: int  # after pooling, before PCA
    dim: int  # of the embedding served
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    pooling: Pooling = field(default_factory=Pooling)
    pca_whiten: bool | None = None  # None: no PCA
    onnx_sha256: str = ""
    pca_sha256: str = ""
    head: str | None = None  # a trained projection head, e.g. "linear 1024-256"; None: none
    head_sha256: str = ""
    local: LocalSpec | None = None  # VLAD: how SIFT is extracted; None for a network
    vlad_sha256: str = ""
    text: TextSpec | None = None  # a text tower; None: the entry embeds images

    def fingerprint(self) -> str:
        """A hash of the weights, the preprocessing, the pooling, the PCA and the head."""
        meaning = asdict(self)
        for identity_only in ("name", "version", "source"):
            meaning.pop(identity_only)
        if self.head is None:  # entries exported before heads existed keep their ids
            meaning.pop("head")
            meaning.pop("head_sha256")
        if self.local is None:  # and those before VLAD
            meaning.pop("local")
            meaning.pop("vlad_sha256")
        if self.text is None:  # and image entries, since text towers came
            meaning.pop("text")
        return hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()

    @property
    def model_id(self) -> str:
        return (
            f"{self.name}:{self.version}:{self.dim}d:{self.pooling.kind}:{self.fingerprint()[:12]}"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        data: dict[str, Any] = json.loads(text)
        prep = data.pop("preprocessing")
        prep["mean"], prep["std"] = tuple(prep["mean"]), tuple(prep["std"])
        local = data.pop("local", None)
        data["local"] = LocalSpec(**local) if local is not None else None
        tower = data.pop("text", None)
        data["text"] = TextSpec(**tower) if tower is not None else None
        return cls(
            preprocessing=Preprocessing(**prep), pooling=Pooling(**data.pop("pooling")), **data
        )


def decode_image(
    data: bytes, target_side: int, limits: Limits = Limits(), longer: bool = False
) -> Image.Image:
    """Decode encoded bytes to an upright RGB image, or raise ImageRejected.

    Dimensions are checked from the header before any pixel is decoded. JPEGs are decoded at
    a reduced DCT scale when they are at least twice the size needed, which is several times
    faster for camera photos and does not change what the network sees at 224 px; a HEIF
    with an embedded thumbnail at least the size needed (phones write one of 320 x 240) is
    read from it: a 12 MP HEIC's full decode costs ~230 CPU-ms. The size
    needed: the shorter side at least `target_side` (a network's crop), or with `longer` the
    longer side (a rendition that fits in a square of that side).
    """
    if not data:
        raise ImageRejected("empty: zero bytes")
    if len(data) > limits.max_bytes:
        raise ImageRejected(f"{len(data)} bytes is over the {limits.max_bytes}-byte limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected(f"not an image: the bytes are not {FORMAT_NAMES}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"rejected by the decompression-bomb guard: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # e.g. a PNG text chunk that inflates past Pillow's limit (a metadata bomb)
        raise ImageRejected(f"unreadable header: {exc}") from None
    if image.format not in ACCEPTED_FORMATS:
        raise ImageRejected(f"unsupported format {image.format}: send {FORMAT_NAMES}")
    width, height = image.size
    if min(width, height) < 1 or max(width, height) > limits.max_side:
        raise ImageRejected(
            f"absurd dimensions {width}x{height} (at most {limits.max_side} a side)"
        )
    if width * height > limits.max_pixels:
        raise ImageRejected(
            f"{width}x{height} is {width * height} pixels, over the {limits.max_pixels}-pixel "
            "limit (decompression-bomb guard)"
        )
    try:
        if image.format in ("JPEG", "MPO", "HEIF"):  # HEIF: an embedded thumbnail that big
            box = (target_side, target_side)
            if longer:  # the same aspect as the image, its longer side the target
                scale = target_side / max(width, height)
                box = (max(1, round(width * scale)), max(1, round(height * scale)))
            image.draft("RGB", box)
        if image.format != "HEIF":  # a HEIF opens on its primary image, not always the first
            image.seek(0)  # the first frame of an animation
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:
        raise ImageRejected(f"corrupt {image.format} data: {exc}") from None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def to_input(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """One image as the network's input for one item (no batch axis), float32."""
    size, resample = prep.input_size, _RESAMPLING[prep.interpolation]
    if prep.resize == "squash":
        image = image.resize((size, size), resample)
    else:
        width, height = image.size
        ratio = prep.resize_shorter / min(width, height)
        resized = (max(size, round(width * ratio)), max(size, round(height * ratio)))
        image = image.resize(resized, resample)
        left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32)
    if prep.channel_order == "BGR":
        pixels = pixels[..., ::-1]
    values = (pixels * np.float32(prep.scale) - np.asarray(prep.mean, np.float32)) / np.asarray(
        prep.std, np.float32
    )
    return np.ascontiguousarray(values.transpose(2, 0, 1) if prep.layout == "NCHW" else values)


def pool(features: np.ndarray, pooling: Pooling) -> np.ndarray:
    """The network's raw output, (N,C,H,W), (N,T,C) or (N,D), as one row per image."""
    if features.ndim == 2:
        if pooling.kind not in ("none", "gap"):
            raise ValueError(f"{pooling.kind} pooling needs a spatial or token output")
        return features
    if features.ndim == 4:
        positions = features.reshape(features.shape[0], features.shape[1], -1).transpose(0, 2, 1)
    elif features.ndim == 3:
        if pooling.kind == "cls":
            return features[:, 0, :]
        positions = features[:, pooling.prefix_tokens :, :]
    else:
        raise ValueError(f"cannot pool an output of shape {features.shape}")
    if pooling.kind == "gap":
        return positions.mean(axis=1)
    if pooling.kind == "gem":
        p = np.float32(pooling.gem_p)
        clamped = np.maximum(positions, np.float32(1e-6))
        return np.power(np.power(clamped, p).mean(axis=1), 1 / p)
    raise ValueError(
        f"{pooling.kind} pooling does not apply to an output of shape {features.shape}"
    )


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Pca:
    """Projection fitted on L2-normalised descriptors: (x - mean) @ components.T * scale."""

    mean: np.ndarray
    components: np.ndarray  # (dim, feature_dim)
    scale: np.ndarray  # 1/sqrt(eigenvalue) with whitening, ones without

    @classmethod
    def fit(cls, descriptors: np.ndarray, dim: int, whiten: bool) -> Pca:
        if dim > min(descriptors.shape):
            raise ValueError(
                f"PCA to {dim} dimensions needs at least {dim} images and {dim} features "
                f"(got {descriptors.shape[0]} images of {descriptors.shape[1]})"
            )
        data = descriptors.astype(np.float64)
        mean = data.mean(axis=0)
        _, singular, vt = np.linalg.svd(data - mean, full_matrices=False)
        # fix each component's sign so that a refit on the same data gives the same bytes
        signs = np.sign(vt[:dim, np.argmax(np.abs(vt[:dim]), axis=1)].diagonal())
        components = vt[:dim] * signs[:, None]
        eigenvalues = singular[:dim] ** 2 / max(1, data.shape[0] - 1)
        scale = 1 / np.sqrt(eigenvalues + 1e-9) if whiten else np.ones(dim)
        return cls(mean.astype(np.float32), components.astype(np.float32), scale.astype(np.float32))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        return ((vectors - self.mean) @ self.components.T) * self.scale

    def save(self, path: Path) -> None:
        with path.open("wb") as out:
            np.savez(out, mean=self.mean, components=self.components, scale=self.scale)

    @classmethod
    def load(cls, path: Path) -> Pca:
        with np.load(path) as arrays:
            return cls(arrays["mean"], arrays["components"], arrays["scale"])


@dataclass(frozen=True)
class Head:
    """A projection head trained by metric learning: affine layers with ReLU between them,
    applied to the L2-normalised descriptor (after PCA, if any)."""

    weights: tuple[np.ndarray, ...]  # (out, in) each
    biases: tuple[np.ndarray, ...]

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        out = vectors.astype(np.float32)
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            out = out @ weight.T + bias
            if index < len(self.weights) - 1:
                out = np.maximum(out, np.float32(0.0))
        return out

    @property
    def shape(self) -> str:
        """E.g. "linear 1024-256" or "mlp 1024-1024-256"."""
        kind = "linear" if len(self.weights) == 1 else "mlp"
        dims = [self.weights[0].shape[1], *(w.shape[0] for w in self.weights)]
        return f"{kind} {'-'.join(str(d) for d in dims)}"

    def save(self, path: Path) -> None:
        arrays = {f"w{i}": w.astype(np.float32) for i, w in enumerate(self.weights)}
        arrays |= {f"b{i}": b.astype(np.float32) for i, b in enumerate(self.biases)}
        with path.open("wb") as out:
            np.savez(out, **arrays)

    @classmethod
    def load(cls, path: Path) -> Head:
        with np.load(path) as arrays:
            layers = len([key for key in arrays.files if key.startswith("w")])
            return cls(
                tuple(arrays[f"w{i}"] for i in range(layers)),
                tuple(arrays[f"b{i}"] for i in range(layers)),
            )


def sift_features(
    image: Image.Image, spec: LocalSpec
) -> tuple[np.ndarray, np.ndarray, int, int, np.ndarray]:
    """SIFT keypoints of an image, strongest first: positions (n, 2) in the working image, RootSIFT
    descriptors (n, 128) as bytes, the working image's width and height, and the full-size
    grey image. RootSIFT: each descriptor L1-normalised, then square-rooted, so that
    Euclidean distance is the Hellinger kernel (Arandjelovic and Zisserman, 2012)."""
    import cv2

    cv2.setNumThreads(1)  # extractions run side by side; each on one thread
    grey = np.asarray(image.convert("L"), dtype=np.uint8)
    full = grey
    height, width = grey.shape
    scale = min(1.0, spec.max_side / max(width, height))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = np.asarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA), np.uint8)
        height, width = grey.shape
    sift = cv2.SIFT.create(nfeatures=spec.max_keypoints)
    keypoints, found = sift.detectAndCompute(grey, None)  # type: ignore[call-overload]
    if found is None or not keypoints:
        empty = np.zeros((0, SIFT_DIM), np.uint8)
        return np.zeros((0, 2), np.float32), empty, width, height, full
    # strongest first (OpenCV returns them by position): a prefix is the N strongest, which
    # is what the near-duplicate check reads (`LocalFeatures.strongest`)
    order = sorted(range(len(keypoints)), key=lambda i: -keypoints[i].response)
    kept = order[: spec.max_keypoints]
    points = np.array([keypoints[i].pt for i in kept], dtype=np.float32)
    raw = np.asarray(found, np.float32)[kept]
    root = np.sqrt(raw / np.maximum(np.abs(raw).sum(axis=1, keepdims=True), 1e-7))
    descriptors = np.clip(np.rint(root * DESCRIPTOR_SCALE), 0, 255).astype(np.uint8)
    return points, descriptors, width, height, full


def vlad_aggregate(descriptors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """VLAD (Jegou et al., 2010) of float RootSIFT descriptors (n, 128): residuals to the
    nearest codeword summed per codeword, power-normalised (signed square root), each
    codeword's block L2-normalised (intra-normalisation, Arandjelovic and Zisserman, 2013),
    then the whole: (words * 128,) float32; zeros for an image without keypoints."""
    words = len(codebook)
    vlad = np.zeros((words, SIFT_DIM), np.float32)
    if len(descriptors):
        distances = (
            (descriptors**2).sum(1)[:, None] - 2 * descriptors @ codebook.T + (codebook**2).sum(1)
        )
        nearest = distances.argmin(1)
        np.add.at(vlad, nearest, descriptors - codebook[nearest])
    vlad = np.sign(vlad) * np.sqrt(np.abs(vlad))
    vlad = vlad / np.maximum(np.linalg.norm(vlad, axis=1, keepdims=True), 1e-12)
    flat = vlad.reshape(-1)
    return (flat / max(float(np.linalg.norm(flat)), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class VladModel:
    """A trained codebook and the PCA whitening of its VLADs (whitening folded into the
    projection)."""

    codebook: np.ndarray  # (words, 128)
    mean: np.ndarray  # (words * 128,)
    projection: np.ndarray  # (words * 128, dim)

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    def describe(self, descriptors: np.ndarray) -> np.ndarray:
        """The whitened, L2-normalised VLAD of one image's float RootSIFT descriptors."""
        projected = (vlad_aggregate(descriptors, self.codebook) - self.mean) @ self.projection
        return (projected / max(float(np.linalg.norm(projected)), 1e-12)).astype(np.float32)

    def save(self, path: Path) -> None:
        with path.open("wb") as out:
            np.savez(out, codebook=self.codebook, mean=self.mean, projection=self.projection)

    @classmethod
    def load(cls, path: Path) -> VladModel:
        with np.load(path) as data:
            return cls(data["codebook"], data["mean"], data["projection"])


def _bytes_to_characters() -> dict[int, str]:
    """Byte-level BPE's alphabet: every byte value as one printable character. Printable
    Latin-1 bytes stand for themselves; the others are moved past 255, in order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    kept += range(ord("®"), ord("ÿ") + 1)
    characters = dict(zip(kept, kept, strict=True))
    moved = 0
    for byte in range(256):
        if byte not in characters:
            characters[byte] = 256 + moved
            moved += 1
    return {byte: chr(code) for byte, code in characters.items()}


class ClipTokenizer:
    """CLIP's text tokenizer (Radford et al. 2021, the byte-level BPE of GPT-2), over the
    merges file open_clip ships: text cleaned (ftfy, HTML entities, spaces) and lower-cased,
    split into words, numbers and punctuation, each word's UTF-8 bytes merged pair by pair in
    the merges' order, the last symbol of a word marked `</w>`."""

    START, END = "<start_of_text>", "<end_of_text>"
    MERGES = 49152 - 256 - 2  # the merges CLIP's vocabulary uses (of the file's lines)

    def __init__(self, vocab_path: Path) -> None:
        import gzip

        import regex

        with gzip.open(vocab_path, "rt", encoding="utf-8") as vocab:
            lines = vocab.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : self.MERGES + 1]]
        alphabet = list(_bytes_to_characters().values())
        tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
        tokens += [self.START, self.END]
        self.ids = {token: index for index, token in enumerate(tokens)}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.characters = _bytes_to_characters()
        self.split = regex.compile(
            r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
            r"|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE,
        )
        self._words: dict[str, list[int]] = {}

    @staticmethod
    def clean(text: str) -> str:
        import html

        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    def _word(self, word: str) -> list[int]:
        """A word's ids (cached: words repeat)."""
        if word in self._words:
            return self._words[word]
        symbols = [*word[:-1], word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = set(itertools.pairwise(symbols))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, len(self.ranks)))
            if best not in self.ranks:
                break
            merged, index = [], 0
            while index < len(symbols):
                if index < len(symbols) - 1 and (symbols[index], symbols[index + 1]) == best:
                    merged.append(symbols[index] + symbols[index + 1])
                    index += 2
                else:
                    merged.append(symbols[index])
                    index += 1
            symbols = merged
        ids = [self.ids[symbol] for symbol in symbols]
        if len(self._words) < 100_000:
            self._words[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """The ids of a text, without start and end markers."""
        ids: list[int] = []
        for word in self.split.findall(self.clean(text)):
            ids += self._word("".join(self.characters[b] for b in word.encode("utf-8")))
        return ids

    def __call__(self, texts: list[str], context_length: int = 77) -> np.ndarray:
        """(N, context_length) int64: start, the ids, end; cut to fit (the end kept), zeros
        after."""
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        start, end = self.ids[self.START], self.ids[self.END]
        for row, text in enumerate(texts):
            ids = [*[start, *self.encode(text)][: context_length - 1], end]
            out[row, : len(ids)] = ids
        return out


def execution_providers(available: list[str], wanted: str = "auto") -> list[str]:
    """ONNX Runtime's providers to run with, first choice first. `wanted`: "auto" takes the
    GPU (CUDA) where this ONNX Runtime has it (the onnxruntime-gpu package on a machine with
    a GPU) and the CPU otherwise; "cpu" the CPU only; "cuda" the GPU or an error."""
    if wanted not in PROVIDER_CHOICES:
        raise ValueError(f"provider {wanted!r}: say one of {', '.join(PROVIDER_CHOICES)}")
    if wanted == "cpu":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if wanted == "cuda":
        raise ValueError(
            f"provider cuda asked, but this ONNX Runtime offers {', '.join(available)}: "
            "install onnxruntime-gpu in its place on a machine with an NVIDIA GPU and CUDA, "
            "or export with --provider auto or cpu"
        )
    return [CPU_PROVIDER]


class OnnxEmbedder:
    """A model entry's version folder, run with ONNX Runtime (or, for VLAD, OpenCV's SIFT).
    `provider`: see `execution_providers`; `self.provider` is the one that runs."""

    def __init__(
        self,
        model_dir: Path,
        intra_op_threads: int = 1,
        limits: Limits = Limits(),
        provider: str = "auto",
    ) -> None:
        import onnxruntime as ort

        self.spec = ModelSpec.from_json((model_dir / SPEC_FILE).read_text())
        self.limits = limits
        self.vlad: VladModel | None = None
        self.tokenizer = ClipTokenizer(model_dir / VOCAB_FILE) if self.spec.text else None
        if self.spec.pooling.kind == "vlad":
            self.vlad = VladModel.load(model_dir / VLAD_FILE)
            self.provider = "OpenCV (CPU)"
            return
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(
            str(model_dir / ONNX_FILE),
            options,
            providers=execution_providers(ort.get_available_providers(), provider),
        )
        self.provider = self.session.get_providers()[0]
        pca_path = model_dir / PCA_FILE
        self.pca = Pca.load(pca_path) if self.spec.pca_whiten is not None else None
        self.head = Head.load(model_dir / HEAD_FILE) if self.spec.head is not None else None

    def describe(self, features: np.ndarray) -> np.ndarray:
        """The network's raw output as final embeddings: pool, L2-normalise, then PCA and the
        trained head where the entry has them, each followed by L2-normalisation."""
        vectors = l2_normalise(pool(features, self.spec.pooling))
        if self.pca is not None:
            vectors = l2_normalise(self.pca.apply(vectors))
        if self.head is not None:
            vectors = l2_normalise(self.head.apply(vectors))
        return vectors

    def embed_tensors(self, inputs: np.ndarray) -> np.ndarray:
        """Embeddings of already preprocessed inputs, (N, 3, S, S) float32."""
        if self.vlad is not None:
            raise ValueError("a VLAD entry embeds encoded images, not tensors")
        (features,) = self.session.run([self.spec.onnx_output], {self.spec.onnx_input: inputs})
        return self.describe(features)

    def embed_texts(self, texts: list[str]) -> tuple[np.ndarray, list[str]]:
        """A text tower's embeddings of texts, and per text '' or why it was rejected (an
        empty one: its row is zeros). Texts longer than the context are cut to it."""
        if self.tokenizer is None or self.spec.text is None:
            raise ValueError(f"{self.spec.name} embeds images, not text")
        vectors = np.zeros((len(texts), self.spec.dim), dtype=np.float32)
        errors = ["" if text.strip() else "empty text: say what to look for" for text in texts]
        good = [index for index, error in enumerate(errors) if not error]
        if good:
            tokens = self.tokenizer([texts[i] for i in good], self.spec.text.context_length)
            (features,) = self.session.run([self.spec.onnx_output], {self.spec.onnx_input: tokens})
            vectors[good] = self.describe(features)
        return vectors, errors

    def prepare(self, data: bytes) -> np.ndarray:
        """One encoded image as network input; raises ImageRejected."""
        prep = self.spec.preprocessing
        target = prep.resize_shorter if prep.resize == "shorter_side_crop" else prep.input_size
        return to_input(decode_image(data, target, self.limits), prep)

    def embed(self, images: list[bytes]) -> tuple[np.ndarray, list[str]]:
        """Embeddings of encoded images, and per image '' or the reason it was rejected.

        A rejected image gets a row of zeros; the others are unaffected.
        """
        vectors = np.zeros((len(images), self.spec.dim), dtype=np.float32)
        errors = [""] * len(images)
        if self.spec.text is not None:
            return vectors, [f"{self.spec.name} embeds text, not images"] * len(images)
        if self.vlad is not None:
            self._embed_vlad(images, vectors, errors)
            return vectors, errors
        inputs, good = [], []
        for index, data in enumerate(images):
            try:
                inputs.append(self.prepare(data))
                good.append(index)
            except ImageRejected as exc:
                errors[index] = str(exc)
            except Exception as exc:  # one hostile item never fails its batch's good images
                errors[index] = f"unreadable: {type(exc).__name__}: {exc}"
        if inputs:
            vectors[good] = self.embed_tensors(np.stack(inputs))
        return vectors, errors

    def _embed_vlad(self, images: list[bytes], vectors: np.ndarray, errors: list[str]) -> None:
        assert self.vlad is not None and self.spec.local is not None
        for index, data in enumerate(images):
            try:
                image = decode_image(data, self.spec.local.max_side, self.limits)
                _, descriptors, *_ = sift_features(image, self.spec.local)
                rootsift = descriptors.astype(np.float32) / DESCRIPTOR_SCALE
                vectors[index] = self.vlad.describe(rootsift)
            except ImageRejected as exc:
                errors[index] = str(exc)
            except Exception as exc:  # one hostile item never fails its batch's good images
                errors[index] = f"unreadable: {type(exc).__name__}: {exc}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
