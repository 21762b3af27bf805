"""The query API's pure logic: filters to Milvus expressions, cache keys, upload checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image

from cbir.domain.images import NO_CAPTURE_TIME, clock_ms
from query_api.cache_keys import content_hash, embedding_key, result_key
from query_api.filters import FilterError, SearchFilters
from query_api.uploads import UploadError, inspect_image
from tests.images import encode, png_claiming_size

MB = 1024 * 1024


def test_no_filter_is_an_empty_expression() -> None:
    assert SearchFilters.parse().expression() == ""


def test_filters_become_a_whitelisted_expression() -> None:
    after = datetime(2026, 1, 1, tzinfo=UTC)
    filters = SearchFilters.parse(
        tags=["b", "a", "a"], tag_mode="all", sources=["cli"], uploaded_after=after
    )
    assert filters.expression() == (
        'array_contains_all(tags, ["a", "b"]) and source in ["cli"] '
        "and uploaded_at >= 1767225600000"
    )


def test_a_hostile_value_stays_one_quoted_literal() -> None:
    hostile = 'x"] ) or image_id != "'
    expression = SearchFilters.parse(tags=[hostile]).expression()
    assert expression == 'array_contains_any(tags, ["x\\"] ) or image_id != \\""])'


def test_control_characters_are_dropped_as_an_upload_drops_them_and_empty_windows_admit_none() -> (
    None
):
    assert SearchFilters.parse(tags=["a\nb", "\u200b", "c"]).tags == ("ab", "c")
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    window = SearchFilters.parse(uploaded_after=moment, uploaded_before=moment)
    assert window.expression() == "uploaded_at >= 1767225600000 and uploaded_at < 1767225600000"


def test_bad_filters_are_refused_with_the_reason() -> None:
    with pytest.raises(FilterError, match="1 to 128 characters"):
        SearchFilters.parse(tags=["x" * 129])
    with pytest.raises(FilterError, match="'any' or 'all'"):
        SearchFilters.parse(tags=["a"], tag_mode="some")
    with pytest.raises(FilterError, match="at most 32"):
        SearchFilters.parse(sources=[str(i) for i in range(33)])


def test_a_time_without_zone_is_utc_and_zones_are_honoured() -> None:
    naive = SearchFilters.parse(uploaded_before=datetime(2026, 1, 1))
    paris = SearchFilters.parse(
        uploaded_before=datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    )
    assert naive.expression() == paris.expression() == "uploaded_at < 1767225600000"


def test_equal_filters_give_equal_cache_keys_and_any_difference_another() -> None:
    one = SearchFilters.parse(tags=["b", "a"])
    same = SearchFilters.parse(tags=["a", "b", "a"])
    assert one.canonical() == same.canonical()
    base = result_key("image:h", 10, one.canonical(), None, "c1", 7)
    assert base == result_key("image:h", 10, same.canonical(), None, "c1", 7)
    others = [
        result_key("image:g", 10, one.canonical(), None, "c1", 7),
        result_key("image:h", 11, one.canonical(), None, "c1", 7),
        result_key("image:h", 10, SearchFilters.parse().canonical(), None, "c1", 7),
        result_key("image:h", 10, one.canonical(), 50, "c1", 7),
        result_key("image:h", 10, one.canonical(), None, "c2", 7),
        result_key("image:h", 10, one.canonical(), None, "c1", 8),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_embedding_keys_name_the_model_and_the_bytes() -> None:
    digest = content_hash(b"abc")
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert embedding_key("m:1", digest) != embedding_key("m:2", digest)


def test_an_image_is_judged_by_its_bytes(shared_dir: Path) -> None:
    photo = next((shared_dir / "data" / "flowers17" / "0").iterdir())
    info = inspect_image(photo.read_bytes(), 10 * MB, 40_000_000)
    assert info.content_type == "image/jpeg" and info.width > 0 and info.height > 0
    assert inspect_image(encode(Image.new("RGB", (4, 3)), "PNG"), MB, 100).content_type == (
        "image/png"
    )


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "empty_upload"),
        (b"%PDF-1.4\n" * 20, 415, "not_an_image"),
        (b"hello, I am text" * 10, 415, "not_an_image"),
        (png_claiming_size(12_000, 12_000), 413, "too_many_pixels"),
        (b"\xff\xd8" + b"\x00" * (MB + 10), 413, "too_large"),
    ],
    ids=["empty", "pdf", "text", "bomb", "oversized"],
)
def test_bad_uploads_get_the_right_status(data: bytes, status: int, code: str) -> None:
    with pytest.raises(UploadError) as caught:
        inspect_image(data, MB, 40_000_000)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert "send" in str(caught.value)  # every refusal says what to do


def test_capture_windows_compare_camera_clocks_and_leave_undated_images_out() -> None:
    window = SearchFilters.parse(
        taken_after=datetime(2024, 7, 14), taken_before=datetime(2024, 7, 15, 12)
    )
    assert window.expression() == (
        f"taken_at >= 1720915200000 and taken_at > {NO_CAPTURE_TIME} and taken_at < 1721044800000"
    )
    # an image without a capture time is held below every date, so "before" must say so
    assert clock_ms(datetime(1900, 1, 1)) > NO_CAPTURE_TIME
    assert window.canonical()["taken_after"] == 1720915200000
    assert window.canonical() != SearchFilters.parse(taken_after=datetime(2024, 7, 14)).canonical()
    # a zone given is dropped: the wall-clock time is what the camera wrote
    paris = timezone(timedelta(hours=2))
    zoned = SearchFilters.parse(taken_after=datetime(2024, 7, 14, tzinfo=paris))
    assert zoned.taken_after == datetime(2024, 7, 14)
