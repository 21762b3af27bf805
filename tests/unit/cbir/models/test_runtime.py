"""The embedding runtime's pure parts, and the shared MobileNet run in-process."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbir.domain.models import ModelId
from cbir.models.runtime import (
    ImageRejected,
    ModelSpec,
    OnnxEmbedder,
    Pca,
    Pooling,
    Preprocessing,
    decode_image,
    execution_providers,
    l2_normalise,
    pool,
    to_input,
)
from tests.images import bad_inputs, encode, png_claiming_size

MOBILENET = Preprocessing(resize="squash", scale=1 / 128, mean=(1.0, 1.0, 1.0), std=(1.0, 1.0, 1.0))


def test_every_kind_of_bad_input_is_rejected_with_a_reason(flower_photos: list[Path]) -> None:
    expected = {
        "empty": "zero bytes",
        "text": "not an image",
        "pdf": "not an image",
        "truncated jpeg": "corrupt JPEG",
        "bomb": "decompression-bomb guard",
        "absurd": "absurd dimensions",
    }
    for kind, data in bad_inputs(flower_photos[0]).items():
        with pytest.raises(ImageRejected, match=expected[kind]):
            decode_image(data, 256)


def test_a_bomb_is_rejected_from_its_header_alone() -> None:
    with pytest.raises(ImageRejected, match="144000000 pixels"):
        decode_image(png_claiming_size(12_000, 12_000), 256)


def test_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data, 16).getpixel((8, 8)) == (255, 0, 0)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), "green")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    assert decode_image(encode(image, "JPEG", exif=exif), 64).size == (20, 40)


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF"])
def test_exif_orientation_is_applied_to_phone_formats(fmt: str) -> None:
    left_red = Image.new("RGB", (40, 20), "blue")
    left_red.paste((255, 0, 0), (0, 0, 10, 20))  # upright: red on the left
    sideways = left_red.transpose(Image.Transpose.ROTATE_90)  # red at the bottom, 20 x 40
    exif = Image.Exif()
    exif[0x0112] = 6  # turn it 90 degrees clockwise to display
    upright = decode_image(encode(sideways, fmt, quality=95, exif=exif.tobytes()), 20)
    assert upright.size == (40, 20)
    red, _green, blue = upright.getpixel((3, 10))  # type: ignore[misc]
    assert red > 200 and blue < 60, (fmt, upright.getpixel((3, 10)))


def test_a_heic_is_read_from_its_embedded_thumbnail_when_that_is_big_enough() -> None:
    photo = Image.new("RGB", (1280, 960), "orange")
    data = encode(photo, "HEIF", thumbnails=[320])
    assert decode_image(data, 224).size == (320, 240)  # the thumbnail covers 224 px
    assert decode_image(data, 320, longer=True).size == (320, 240)
    assert decode_image(data, 256).size == (1280, 960)  # it does not cover 256: the image
    many = encode(photo, "HEIF", save_all=True, append_images=[Image.new("RGB", (64, 64))])
    assert decode_image(many, 64).size == (1280, 960)  # the primary image, not the second


def test_transparency_becomes_white_and_formats_decode() -> None:
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert decode_image(encode(transparent, "PNG"), 8).getpixel((4, 4)) == (255, 255, 255)
    for fmt in ("WEBP", "BMP", "PNG", "JPEG", "HEIF", "AVIF"):
        assert decode_image(encode(Image.new("RGB", (8, 8), "red"), fmt), 8).mode == "RGB"


def test_unsupported_formats_are_named() -> None:
    with pytest.raises(ImageRejected, match="unsupported format TIFF"):
        decode_image(encode(Image.new("RGB", (8, 8)), "TIFF"), 8)


def test_to_input_scales_and_lays_out() -> None:
    grey = Image.new("RGB", (300, 150), (128, 128, 128))
    squashed = to_input(grey, MOBILENET)
    assert squashed.shape == (3, 224, 224)
    np.testing.assert_allclose(squashed, 0.0, atol=1e-6)  # (128 / 128) - 1
    cropped = to_input(grey, Preprocessing(layout="NHWC"))
    assert cropped.shape == (224, 224, 3)
    expected = (128 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(cropped[0, 0], expected, rtol=1e-5)


def test_pooling_against_hand_computed_values() -> None:
    feature_map = np.array([[[[1.0, 3.0], [5.0, 7.0]]]], dtype=np.float32)  # (1, 1, 2, 2)
    assert pool(feature_map, Pooling("gap"))[0, 0] == pytest.approx(4.0)
    gem3 = ((1 + 27 + 125 + 343) / 4) ** (1 / 3)
    assert pool(feature_map, Pooling("gem", gem_p=3))[0, 0] == pytest.approx(gem3, rel=1e-5)
    assert pool(feature_map, Pooling("gem", gem_p=1))[0, 0] == pytest.approx(4.0)
    tokens = np.array([[[9.0, 9.0], [1.0, 2.0], [3.0, 4.0]]], dtype=np.float32)  # (1, 3, 2)
    np.testing.assert_allclose(pool(tokens, Pooling("cls")), [[9.0, 9.0]])
    np.testing.assert_allclose(pool(tokens, Pooling("gap", prefix_tokens=1)), [[2.0, 3.0]])
    with pytest.raises(ValueError):
        pool(np.ones((2, 4), np.float32), Pooling("cls"))


def test_pca_reduces_whitens_and_refits_identically() -> None:
    rng = np.random.default_rng(0)
    data = l2_normalise(rng.normal(size=(200, 64)).astype(np.float32) * np.arange(1, 65))
    pca = Pca.fit(data, 16, whiten=True)
    projected = pca.apply(data)
    assert projected.shape == (200, 16)
    np.testing.assert_allclose(projected.std(axis=0, ddof=1), 1.0, rtol=1e-3)
    again = Pca.fit(data, 16, whiten=True)
    assert again.components.tobytes() == pca.components.tobytes()
    with pytest.raises(ValueError, match="needs at least 100 images"):
        Pca.fit(data[:50], 100, whiten=False)


def test_spec_round_trips_and_its_fingerprint_follows_the_meaning() -> None:
    spec = ModelSpec(
        name="m",
        version=1,
        source="s",
        onnx_input="i",
        onnx_output="o",
        feature_dim=8,
        dim=8,
        preprocessing=MOBILENET,
    )
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert spec.model_id.startswith("m:1:8d:gap:")
    # the pipeline reads the id the runtime writes (the runtime, inside Triton, cannot import
    # the domain package that parses it)
    parsed = ModelId.parse(spec.model_id)
    assert (str(parsed), parsed.dim, parsed.triton_model) == (spec.model_id, 8, "m")
    renamed = replace(spec, name="other", source="elsewhere")
    assert renamed.fingerprint() == spec.fingerprint()
    resized = replace(spec, preprocessing=replace(MOBILENET, input_size=192))
    assert resized.fingerprint() != spec.fingerprint()


def test_embedder_rejects_bad_items_and_embeds_the_rest(
    mobilenet_entry: Path, flower_photos: list[Path]
) -> None:
    embedder = OnnxEmbedder(mobilenet_entry)
    bad = bad_inputs(flower_photos[0])
    batch = [flower_photos[0].read_bytes(), *bad.values(), flower_photos[2].read_bytes()]
    vectors, errors = embedder.embed(batch)
    assert errors[0] == "" and errors[-1] == ""
    assert all(errors[1:-1])
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, -1]], axis=1), 1.0, rtol=1e-5)
    assert not vectors[1:-1].any()
    alone, _ = embedder.embed([flower_photos[0].read_bytes()])
    np.testing.assert_allclose(alone[0], vectors[0], atol=1e-6)


def test_the_provider_is_the_gpu_where_there_is_one_and_the_cpu_otherwise() -> None:
    cpu, cuda = "CPUExecutionProvider", "CUDAExecutionProvider"
    with_gpu, without = [cuda, cpu], ["AzureExecutionProvider", cpu]
    assert execution_providers(with_gpu) == [cuda, cpu]
    assert execution_providers(without) == [cpu]
    assert execution_providers(with_gpu, "cpu") == [cpu]
    assert execution_providers(with_gpu, "cuda") == [cuda, cpu]
    with pytest.raises(ValueError, match="install onnxruntime-gpu"):
        execution_providers(without, "cuda")
    with pytest.raises(ValueError, match="say one of auto, cpu, cuda"):
        execution_providers(without, "tpu")


def test_the_embedder_says_which_provider_runs(mobilenet_entry: Path) -> None:
    import onnxruntime as ort

    embedder = OnnxEmbedder(mobilenet_entry)
    expected = execution_providers(ort.get_available_providers())[0]
    assert embedder.provider == expected
    assert OnnxEmbedder(mobilenet_entry, provider="cpu").provider == "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ValueError, match="provider cuda asked"):
            OnnxEmbedder(mobilenet_entry, provider="cuda")
