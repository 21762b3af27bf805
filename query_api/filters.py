"""Search filters: validated values, and a Milvus boolean expression built from a whitelist of
fields and operators (pure: no I/O).

User text never becomes expression syntax: every value is checked (length, no control
characters) and then written as a quoted literal by a JSON encoder, so a value such as
`x" or image_id != "` stays one plain string that matches no tag.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from cbir.domain.images import MAX_SOURCE_LENGTH, MAX_TAG_LENGTH, NO_CAPTURE_TIME, clock_ms
from cbir.domain.rows import TakenWindow
from query_api.errors import ApiError

MAX_VALUES = 32
TAKEN = (
    "only photographs taken (EXIF DateTimeOriginal) from this time on (taken_after) or before "
    "it (taken_before), on the camera's clock, which has no time zone: e.g. 2024-07-14 or "
    "2024-07-14T18:00 (a zone given is dropped, the wall-clock time kept). Images whose EXIF "
    "gives no capture time are left out"
)
TagMode = Literal["any", "all"]


class FilterError(ApiError):
    """A filter a search cannot take; the message says which and why."""

    def __init__(self, message: str) -> None:
        super().__init__(422, "invalid_filter", message)


def _text(field: str, value: str, limit: int) -> str:
    """A tag or source as stored and matched: control and format characters (Unicode
    category C) removed, so that what an upload stores and what a filter asks agree."""
    if not value or len(value) > limit:
        raise FilterError(f"{field}: each value must be 1 to {limit} characters, got {value!r}")
    return "".join(ch for ch in value if not unicodedata.category(ch).startswith("C"))


def _literal(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a time without zone is UTC, as stored
    return int(moment.timestamp() * 1000)


def _camera_clock(moment: datetime | None) -> datetime | None:
    """A capture-time bound as the camera's clock reads (it has no zone): a zone given with
    it is dropped, its wall-clock time kept (T00:00+02:00 is midnight, as the person meant)."""
    return moment.replace(tzinfo=None) if moment is not None else None


def taken_window(after: datetime | None, before: datetime | None) -> TakenWindow:
    """The capture-time window of a search or a browse, on the camera's clock."""
    return TakenWindow(_camera_clock(after), _camera_clock(before))


@dataclass(frozen=True)
class SearchFilters:
    """What results may be: images with any (or all) of `tags`, from one of `sources`,
    uploaded in [uploaded_after, uploaded_before), taken (EXIF) in [taken_after,
    taken_before): an image whose EXIF gives no capture time is outside every such window."""

    tags: tuple[str, ...] = ()
    tag_mode: TagMode = "any"
    sources: tuple[str, ...] = ()
    uploaded_after: datetime | None = None
    uploaded_before: datetime | None = None
    taken_after: datetime | None = None
    taken_before: datetime | None = None

    @classmethod
    def parse(
        cls,
        tags: list[str] | None = None,
        tag_mode: str = "any",
        sources: list[str] | None = None,
        uploaded_after: datetime | None = None,
        uploaded_before: datetime | None = None,
        taken_after: datetime | None = None,
        taken_before: datetime | None = None,
    ) -> SearchFilters:
        tags, sources = list(tags or []), list(sources or [])
        if tag_mode not in ("any", "all"):
            raise FilterError(f"tag_mode must be 'any' or 'all', got {tag_mode!r}")
        for field, values in (("tag", tags), ("source", sources)):
            if len(values) > MAX_VALUES:
                raise FilterError(f"{field}: at most {MAX_VALUES} values, got {len(values)}")
        window = taken_window(taken_after, taken_before)
        # an empty time window (after >= before) is no error: it admits no image
        cleaned_tags = {_text("tag", t, MAX_TAG_LENGTH) for t in tags} - {""}
        cleaned_sources = {_text("source", s, MAX_SOURCE_LENGTH) for s in sources} - {""}
        return cls(
            tags=tuple(sorted(cleaned_tags)),
            tag_mode="all" if tag_mode == "all" else "any",
            sources=tuple(sorted(cleaned_sources)),
            uploaded_after=uploaded_after,
            uploaded_before=uploaded_before,
            taken_after=window.after,
            taken_before=window.before,
        )

    def expression(self) -> str:
        """The Milvus boolean expression ('' when nothing is filtered)."""
        parts = []
        if self.tags:
            operator = "array_contains_all" if self.tag_mode == "all" else "array_contains_any"
            parts.append(f"{operator}(tags, [{', '.join(_literal(t) for t in self.tags)}])")
        if self.sources:
            parts.append(f"source in [{', '.join(_literal(s) for s in self.sources)}]")
        if self.uploaded_after is not None:
            parts.append(f"uploaded_at >= {_epoch_ms(self.uploaded_after)}")
        if self.uploaded_before is not None:
            parts.append(f"uploaded_at < {_epoch_ms(self.uploaded_before)}")
        if self.taken_after is not None:
            parts.append(f"taken_at >= {clock_ms(self.taken_after)}")
        if self.taken_before is not None:
            parts.append(
                f"taken_at > {NO_CAPTURE_TIME} and taken_at < {clock_ms(self.taken_before)}"
            )
        return " and ".join(parts)

    def canonical(self) -> dict[str, Any]:
        """A JSON-able form for cache keys: equal filters give equal forms."""
        return {
            "tags": list(self.tags),
            "tag_mode": self.tag_mode if self.tags else "any",
            "sources": list(self.sources),
            "after": _epoch_ms(self.uploaded_after) if self.uploaded_after else None,
            "before": _epoch_ms(self.uploaded_before) if self.uploaded_before else None,
            "taken_after": clock_ms(self.taken_after) if self.taken_after else None,
            "taken_before": clock_ms(self.taken_before) if self.taken_before else None,
        }
