"""Packed float vectors: the message pymilvus would build, without its per-float loop."""

from __future__ import annotations

import numpy as np
import pytest

from cbir.adapters.milvus_vectors import PackedVectors, field_data, install


def _original_encoding(name: str, vectors: np.ndarray) -> bytes:
    from pymilvus import DataType
    from pymilvus.client import entity_helper

    original = entity_helper.entity_to_field_data
    original = getattr(original, "__wrapped_original__", original)
    entity = {"name": name, "type": DataType.FLOAT_VECTOR, "values": vectors.tolist()}
    return bytes(original(entity, None).SerializeToString())


@pytest.mark.parametrize("shape", [(1, 3), (7, 1024), (500, 128)])
def test_the_packed_message_is_byte_identical_to_pymilvus_own(shape: tuple[int, int]) -> None:
    vectors = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    packed = field_data("embedding", PackedVectors(vectors))
    assert packed.SerializeToString() == _original_encoding("embedding", vectors)
    assert packed.vectors.dim == shape[1]
    assert np.array_equal(np.asarray(packed.vectors.float_vector.data, np.float32), vectors.ravel())


def test_installed_conversion_takes_packed_columns_and_leaves_the_rest_to_pymilvus() -> None:
    from pymilvus import DataType
    from pymilvus.client import entity_helper

    install()
    install()  # idempotent: wrapped once
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    column = {"name": "embedding", "type": DataType.FLOAT_VECTOR, "values": PackedVectors(vectors)}
    converted = entity_helper.entity_to_field_data(column, None)
    assert list(converted.vectors.float_vector.data) == list(range(12))
    ids = {"name": "image_id", "type": DataType.VARCHAR, "values": ["a", "b", "c"]}
    info = {"params": {"max_length": 64}}
    assert list(entity_helper.entity_to_field_data(ids, info).scalars.string_data.data) == [
        "a",
        "b",
        "c",
    ]


def test_a_column_must_be_a_non_empty_matrix() -> None:
    with pytest.raises(ValueError, match="rows, dim"):
        PackedVectors(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="rows, dim"):
        PackedVectors(np.zeros((0, 4), np.float32))
    column = PackedVectors(np.ones((2, 3), np.float64))
    assert column.array.dtype == np.dtype("<f4") and len(column) == 2 and column[1].shape == (3,)
